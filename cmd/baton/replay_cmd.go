package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/cmd/baton/internal/chreplay"
	"github.com/baton-voice/baton/cmd/baton/internal/replay"
	"github.com/baton-voice/baton/cmd/baton/internal/report"
	"github.com/baton-voice/baton/cmd/baton/internal/termsafe"
	"github.com/baton-voice/baton/cmd/baton/internal/whatif"
	"github.com/baton-voice/baton/pkg/events"
)

// Sources replay and export read from.
const (
	sourceAuto       = "auto"
	sourceKafka      = "kafka"
	sourceClickHouse = "clickhouse"
)

// span is a duration flag that also takes days: 30d, 12h, 1d12h.
type span time.Duration

func (d *span) UnmarshalText(b []byte) error {
	s := string(b)
	var days int
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n < 0 {
			return fmt.Errorf("duration %q: want days as 30d, or a Go duration as 36h", s)
		}
		days, s = n, s[i+1:]
	}
	var rest time.Duration
	if s != "" {
		var err error
		if rest, err = time.ParseDuration(s); err != nil {
			return fmt.Errorf("duration %q: want days as 30d, or a Go duration as 36h", string(b))
		}
	}
	if days > 100*365 || rest < 0 {
		return fmt.Errorf("duration %q: out of range", string(b))
	}
	*d = span(time.Duration(days)*24*time.Hour + rest)
	return nil
}

// callSource is where replay and export read a call from.
type callSource struct {
	Call       string        `placeholder:"CALL-ID" help:"The call id (SIP Call-ID): the record key on every topic."`
	Source     string        `default:"auto" enum:"auto,kafka,clickhouse" help:"Where to read the call: kafka, clickhouse, or auto (Kafka, then ClickHouse when Kafka no longer has the call or its start). The source read is named on stderr. Default: ${default}."`
	Brokers    []string      `default:"127.0.0.1:9092" sep:"," placeholder:"HOST:PORT" help:"Kafka seed brokers."`
	Topics     []string      `default:"baton.calls,baton.handoffs,baton.transfers" sep:"," placeholder:"NAME" help:"Topics to read."`
	KafkaWait  time.Duration `name:"kafka-timeout" default:"30s" help:"--source auto: how long to wait for Kafka before reading ClickHouse (an unreachable broker would otherwise hold the replay). Default: ${default}."`
	Since      span          `default:"24h" help:"Kafka: read records from this long ago on (the broker finds the offset by timestamp); ClickHouse finds a call at any age. A period re-decided with --rules and no --call: its length back from now. Days allowed: 30d."`
	FromFile   string        `placeholder:"FILE" type:"existingfile" help:"Read an NDJSON export instead of a broker."`
	ClickHouse string        `name:"clickhouse" default:"127.0.0.1:19000" placeholder:"HOST:PORT" help:"ClickHouse native TCP address, for --source clickhouse or auto. The password comes from BATON_CLICKHOUSE_PASSWORD. Default: ${default}."`
	Database   string        `default:"baton" help:"ClickHouse database analytics writes. Default: ${default}."`
	User       string        `default:"default" help:"ClickHouse user. Default: ${default}."`
}

func (c *callSource) validate() error {
	if c.FromFile != "" && c.Source != sourceAuto {
		return errors.New("--from-file reads a file: leave --source out")
	}
	if c.KafkaWait <= 0 {
		return fmt.Errorf("--kafka-timeout %s: want a positive duration", c.KafkaWait)
	}
	return nil
}

func (c *callSource) chOptions() chreplay.Options {
	return chreplay.Options{Addr: c.ClickHouse, Database: c.Database, Username: c.User, Password: os.Getenv(report.PasswordEnv)}
}

func (c *callSource) records(ctx context.Context, s *streams) ([]replay.Record, error) {
	if c.FromFile != "" {
		f, err := os.Open(c.FromFile)
		if err != nil {
			return nil, err
		}
		defer func() { _ = f.Close() }()
		return replay.ReadNDJSON(f, c.Call)
	}
	switch c.Source {
	case sourceKafka:
		return c.kafkaRecords(ctx, s)
	case sourceClickHouse:
		return c.clickHouseRecords(ctx, s)
	}
	kctx, cancel := context.WithTimeout(ctx, c.KafkaWait)
	recs, err := c.kafkaRecords(kctx, s)
	cancel()
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil:
		fmt.Fprint(s.err, termsafe.Sprintf("kafka: %s; reading clickhouse\n", err))
	case len(recs) == 0:
		fmt.Fprint(s.err, termsafe.Sprintf("kafka has no record of call %s since %s; reading clickhouse\n", c.Call,
			time.Duration(c.Since)))
	case !hasStart(recs):
		fmt.Fprint(s.err, termsafe.Sprintf("kafka has %d records of call %s but not its start; reading clickhouse\n", len(recs), c.Call))
		chRecs, cherr := c.clickHouseRecords(ctx, s)
		if cherr != nil || len(chRecs) <= len(recs) {
			if cherr != nil {
				fmt.Fprint(s.err, termsafe.Sprintf("clickhouse: %s\n", cherr))
			}
			fmt.Fprint(s.err, termsafe.Sprintf("source: kafka (%d records; clickhouse has no more)\n", len(recs)))
			return recs, nil
		}
		return chRecs, nil
	default:
		return recs, nil
	}
	return c.clickHouseRecords(ctx, s)
}

func hasStart(recs []replay.Record) bool {
	for _, r := range recs {
		for _, h := range r.Headers {
			if h.Key == events.HeaderType && string(h.Value) == events.TypeCallStarted {
				return true
			}
		}
	}
	return false
}

func (c *callSource) kafkaRecords(ctx context.Context, s *streams) ([]replay.Record, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	q := replay.Query{CallID: c.Call, Topics: c.Topics, Since: time.Now().Add(-time.Duration(c.Since))}
	recs, err := replay.Fetch(ctx, cl, q, func(topic string, partition int32, scanned, total int64) {
		fmt.Fprint(s.err, termsafe.Sprintf("\rscanning %s/%d: %d of %d records", topic, partition, scanned, total))
		if scanned >= total {
			fmt.Fprintln(s.err)
		}
	})
	if err == nil && len(recs) > 0 {
		fmt.Fprint(s.err, termsafe.Sprintf("source: kafka %s (%d records)\n", strings.Join(c.Brokers, ","), len(recs)))
	}
	return recs, err
}

func (c *callSource) clickHouseRecords(ctx context.Context, s *streams) ([]replay.Record, error) {
	conn, err := chreplay.Open(ctx, c.chOptions())
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	began := time.Now()
	recs, info, err := chreplay.Fetch(ctx, conn, c.Call, c.Topics)
	if err != nil {
		return nil, err
	}
	fmt.Fprint(s.err, termsafe.Sprintf("source: clickhouse %s/%s (%d records, %d rows, in %s)\n", c.ClickHouse, c.Database,
		info.Records, info.Rows, time.Since(began).Round(time.Millisecond)))
	if info.Inexact > 0 {
		fmt.Fprint(s.err, termsafe.Sprintf("clickhouse: %d records were written before migration 0006: their times are rebuilt "+
			"to the millisecond\n", info.Inexact))
	}
	return recs, nil
}

type replayCmd struct {
	callSource
	HTML        string `name:"html" placeholder:"FILE" help:"Also write the ladder (SVG) and timeline as a standalone HTML page to FILE."`
	Rules       string `placeholder:"FILE" type:"existingfile" help:"Re-run the router's decisions over the recorded events with this router config (destinations, rules) and print how they differ from the recorded commands, instead of the timeline. Recorded transfer outcomes are replayed as they happened. Without --call: every call of the period, from ClickHouse."`
	RouterBin   string `name:"router-bin" placeholder:"FILE" help:"Router binary that re-decides for --rules (router replay). Default: router next to baton, else on PATH."`
	From        string `placeholder:"TIME" help:"Period start (RFC 3339, or a date as 2026-11-01, UTC), instead of --since."`
	To          string `placeholder:"TIME" help:"Period end (exclusive; RFC 3339 or a date). Default: now."`
	Trunk       string `help:"Period: only the calls that came in on this trunk."`
	Destination string `help:"Period: only the calls with a recorded handoff command to this destination."`
	Report      string `placeholder:"FILE" help:"Period: also write the what-if report as Markdown to FILE, to attach to a change request."`
	Batch       int    `default:"1000" help:"Period: calls re-decided per router process. Default: ${default}."`
	Workers     int    `default:"1" help:"Period: router processes re-deciding batches at once; more helps only with idle cores (bench/replay/month.sh measures it). Default: ${default}."`
}

// period reports whether c re-decides a period rather than one call.
func (c *replayCmd) period() bool { return c.Rules != "" && c.Call == "" }

func (c *replayCmd) Validate() error {
	if err := c.validate(); err != nil {
		return err
	}
	if c.Rules != "" && c.HTML != "" {
		return errors.New("--html draws the recording; run it without --rules")
	}
	periodOnly := c.From != "" || c.To != "" || c.Trunk != "" || c.Destination != "" || c.Report != ""
	switch {
	case c.Call == "" && c.Rules == "":
		return errors.New("--call is required (or --rules without --call, to re-decide a period)")
	case !c.period() && periodOnly:
		return errors.New("--from, --to, --trunk, --destination and --report select and report a period: use them with --rules and without --call")
	case c.period() && (c.Source == sourceKafka || c.FromFile != ""):
		return errors.New("a period is read from ClickHouse: leave --source and --from-file out")
	case c.Batch < 1:
		return fmt.Errorf("--batch %d: want at least 1", c.Batch)
	case c.Workers < 1:
		return fmt.Errorf("--workers %d: want at least 1", c.Workers)
	}
	if c.period() {
		_, err := c.window(time.Now())
		return err
	}
	return nil
}

func (c *replayCmd) Run(ctx context.Context, s *streams) error {
	if c.period() {
		return c.whatIf(ctx, s)
	}
	recs, err := c.records(ctx, s)
	if err != nil {
		return err
	}
	if c.Rules != "" {
		return c.diff(ctx, s, recs)
	}
	steps := replay.Steps(recs)
	if err := replay.WriteTimeline(s.out, c.Call, steps); err != nil {
		return err
	}
	if len(steps) == 0 {
		return nil
	}
	arrows := replay.Ladder(steps)
	fmt.Fprintln(s.out)
	if err := replay.WriteLadder(s.out, arrows); err != nil {
		return err
	}
	if c.HTML == "" {
		return nil
	}
	f, err := os.Create(c.HTML)
	if err != nil {
		return err
	}
	if err := replay.WriteHTML(f, c.Call, steps, arrows); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprint(s.out, termsafe.Sprintf("\nwrote %s\n", c.HTML))
	return nil
}

// diff re-decides the call with --rules and prints the difference.
func (c *replayCmd) diff(ctx context.Context, s *streams, recs []replay.Record) error {
	if len(recs) == 0 {
		return fmt.Errorf("no records for call %s", c.Call)
	}
	bin, err := replay.RouterBinary(c.RouterBin)
	if err != nil {
		return err
	}
	decided, err := replay.Redecide(ctx, bin, c.Rules, recs)
	if err != nil {
		return err
	}
	return replay.WriteDiff(s.out, replay.Diff(c.Call, recs, decided), c.Rules)
}

// window is the period --since or --from/--to select.
func (c *replayCmd) window(now time.Time) (chreplay.Window, error) {
	w := chreplay.Window{From: now.Add(-time.Duration(c.Since)), To: now, Trunk: c.Trunk, Destination: c.Destination, Topics: c.Topics}
	if c.From != "" {
		t, err := parseTime(c.From)
		if err != nil {
			return w, fmt.Errorf("--from: %w", err)
		}
		w.From = t
	}
	if c.To != "" {
		t, err := parseTime(c.To)
		if err != nil {
			return w, fmt.Errorf("--to: %w", err)
		}
		w.To = t
	}
	return w, w.Validate()
}

func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2026-11-01T00:00:00Z) or a date (2026-11-01)", s)
}

// whatIf re-decides every call of the period and reports the aggregate.
func (c *replayCmd) whatIf(ctx context.Context, s *streams) error {
	w, err := c.window(time.Now())
	if err != nil {
		return err
	}
	bin, err := replay.RouterBinary(c.RouterBin)
	if err != nil {
		return err
	}
	conn, err := chreplay.Open(ctx, c.chOptions())
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	total, err := chreplay.Count(ctx, conn, w)
	if err != nil {
		return err
	}
	fmt.Fprint(s.err, termsafe.Sprintf("source: clickhouse %s/%s: %d calls from %s to %s\n", c.ClickHouse, c.Database, total,
		w.From.UTC().Format(time.RFC3339), w.To.UTC().Format(time.RFC3339)))
	tmp, err := os.MkdirTemp("", "baton-whatif-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	decide, err := whatif.RouterDecider(bin, c.Rules, tmp)
	if err != nil {
		return err
	}
	res, err := whatif.Run(ctx, streamFrom(conn, w), decide, whatif.Options{
		Rules: c.Rules, Window: w, Batch: c.Batch, Workers: c.Workers, Total: total,
		Progress: func(done int, total uint64, elapsed time.Duration) {
			fmt.Fprintf(s.err, "\rre-decided %d of %d calls, %.0f calls/s", done, total, float64(done)/elapsed.Seconds())
		},
	})
	if res != nil && res.Calls > 0 {
		fmt.Fprintln(s.err)
	}
	if err != nil {
		return err
	}
	if err := res.WriteText(s.out); err != nil {
		return err
	}
	if c.Report == "" {
		return nil
	}
	f, err := os.Create(c.Report)
	if err != nil {
		return err
	}
	if err := res.WriteMarkdown(f, "baton "+strings.Join(os.Args[1:], " ")); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprint(s.out, termsafe.Sprintf("\nwrote %s\n", c.Report))
	return nil
}

func streamFrom(conn driver.Conn, w chreplay.Window) whatif.Source {
	return func(ctx context.Context, batch int, fn func(context.Context, []chreplay.Call) error) error {
		return chreplay.Stream(ctx, conn, w, batch, fn)
	}
}
