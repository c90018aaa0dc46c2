// Command baton is the operator's tool for a Baton installation. It only
// wires flags to the packages under internal/ that do the work.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/cmd/baton/internal/broker"
	"github.com/baton-voice/baton/cmd/baton/internal/checker"
	"github.com/baton-voice/baton/cmd/baton/internal/probe"
	"github.com/baton-voice/baton/cmd/baton/internal/replay"
	"github.com/baton-voice/baton/cmd/baton/internal/report"
	"github.com/baton-voice/baton/cmd/baton/internal/stack"
	"github.com/baton-voice/baton/cmd/baton/internal/termsafe"
	"github.com/baton-voice/baton/cmd/baton/internal/version"
	"github.com/baton-voice/baton/pkg/observability"
)

type cli struct {
	Dev     devCmd     `cmd:"" help:"Run the whole pipeline locally: the embedded broker, a private ClickHouse, the four services and SIPp demo calls; print what happened and how to look further. Ctrl-C stops everything it started."`
	Report  reportCmd  `cmd:"" help:"Print the dashboard's figures from ClickHouse: handoffs by reason per hour, success rate by destination and method, time to transfer, calls per dialed number, recent handoffs. The password comes from BATON_CLICKHOUSE_PASSWORD."`
	Broker  brokerCmd  `cmd:"" help:"Run the embedded Kafka-protocol broker (franz-go kfake) for the local stack and tests. Events and committed offsets persist in --data-dir across restarts. Production uses a real Kafka cluster."`
	Replay  replayCmd  `cmd:"" help:"Show one call as recorded in Kafka or ClickHouse: an ordered timeline of facts, commands and outcomes with the time between steps, and a SIP ladder (text, or HTML/SVG with --html). From Kafka it reads only the partition the call id hashes to, from --since on; when Kafka no longer has the call it reads ClickHouse (--source). With --rules and no --call, re-decides every call of a period (--since 30d, --from/--to) from ClickHouse and reports what would change."`
	Export  exportCmd  `cmd:"" help:"Write every record of one call as NDJSON (exact bytes plus the decoded event), for 'baton replay --from-file' without a broker. Reads Kafka or ClickHouse like replay (--source)."`
	Check   checkCmd   `cmd:"" help:"Read every record of the Baton topics (read_committed, up to the last stable offsets) and report lost, duplicated and out-of-order events, records of aborted transactions given to consumers, undecodable records and dead letters. Exits 1 when there is any finding."`
	Version versionCmd `cmd:"" help:"Print baton's version, commit and Go version."`
	Probe   probeCmd   `cmd:"" help:"Send SIP OPTIONS to every destination and trunk of the router's config (tel: routes through transfer's trunk_host) over the transport transfer uses (UDP, TCP, TLS) and report reachability, round-trip time, the TLS certificate's validity and expiry, and what the far end advertises (Allow, Supported, REFER). --call places a short test call with the headers the router renders. Exits 1 when a target is down."`
}

type brokerCmd struct {
	Listen           string   `default:"${listen}" placeholder:"HOST:PORT" help:"Address to bind, host and port; the broker listens on that host only. Port 0 picks a free port. Default: ${default}."`
	Advertise        string   `placeholder:"HOST:PORT" help:"Address clients are told to connect to (Kafka's advertised.listeners). Default: the bound address. Required when --listen binds all interfaces (0.0.0.0 or [::])."`
	DataDir          string   `default:"${data_dir}" placeholder:"DIR" help:"Directory for log segments, topics and group offsets; created if missing, reloaded at start, locked while the broker runs. Default: ${default}."`
	SyncWrites       bool     `help:"fsync every produced batch before acknowledging it. On: an acknowledged record survives power loss or a kernel crash, at a large cost in produce throughput. Off (default, as in Kafka): records go to the OS page cache at once and are fsynced on segment roll and at shutdown, so they survive the broker process dying but the last acknowledged batches can be lost if the machine itself goes down."`
	Partitions       int32    `default:"${partitions}" help:"Partition count of the --topics created at start and of topics created with the default count. Existing topics keep theirs."`
	Topics           []string `default:"${topics}" sep:"," placeholder:"NAME" help:"Topics created at start if missing, comma-separated. Default: ${default}."`
	AutoCreateTopics bool     `help:"Let clients create a topic by asking for its metadata (Kafka's auto.create.topics.enable). Off by default so a misspelt topic fails instead of appearing empty."`
	LogLevel         string   `default:"info" enum:"debug,info,warn,error" help:"Log level: debug, info, warn or error. debug includes every request the broker serves."`
	LogFormat        string   `default:"json" enum:"json,text" help:"Log format: json or text. Logs go to stderr."`
}

func (c *brokerCmd) config() broker.Config {
	return broker.Config{
		Listen:           c.Listen,
		Advertise:        c.Advertise,
		DataDir:          c.DataDir,
		SyncWrites:       c.SyncWrites,
		Partitions:       c.Partitions,
		Topics:           c.Topics,
		AutoCreateTopics: c.AutoCreateTopics,
	}
}

// Validate runs while flags are parsed, so bad flags exit 2 before anything starts.
func (c *brokerCmd) Validate() error { return c.config().Validate() }

func (c *brokerCmd) Run(ctx context.Context, s *streams) error {
	logger, err := observability.NewLogger(s.err, observability.LogConfig{Level: c.LogLevel, Format: c.LogFormat}, "broker")
	if err != nil {
		return err
	}
	return broker.Run(ctx, c.config(), logger, s.out)
}

type devCmd struct {
	BinDir  string `default:"bin" placeholder:"DIR" help:"Directory with the built binaries: ingress, router, transfer, analytics and baton (make build)."`
	RunDir  string `default:".run" placeholder:"DIR" help:"Directory for the broker's and ClickHouse's data, the generated service configs and every log."`
	RepoDir string `default:"." placeholder:"DIR" help:"Repository root: deploy/local/clickhouse.sh and deploy/sipp/ are read from it."`
	Calls   int    `default:"5" help:"Demo calls SIPp places, each with the X- headers of one line of deploy/sipp/calls.csv."`
	Rate    int    `default:"1" help:"New demo calls per second."`
	Exit    bool   `help:"Stop the stack after the demo summary instead of running until Ctrl-C."`
	NoAgent bool   `help:"Leave the demo agent out: a router rule hands every call off at once, as before agents."`
}

func (c *devCmd) Validate() error {
	if c.Calls < 0 || c.Rate < 1 {
		return fmt.Errorf("--calls must be at least 0 and --rate at least 1 (got %d, %d)", c.Calls, c.Rate)
	}
	return nil
}

func (c *devCmd) Run(ctx context.Context, s *streams) error {
	logger, err := observability.NewLogger(s.err, observability.LogConfig{Level: "info", Format: "text"}, "dev")
	if err != nil {
		return err
	}
	opts := stack.DefaultOptions()
	opts.BinDir, opts.RunDir, opts.RepoDir = c.BinDir, c.RunDir, c.RepoDir
	opts.Progress, opts.Logger = s.out, logger
	return stack.Demo(ctx, opts, stack.DemoOptions{Calls: c.Calls, Rate: c.Rate, Exit: c.Exit, Agent: !c.NoAgent}, s.out)
}

type exportCmd struct {
	callSource
	Out string `short:"o" placeholder:"FILE" help:"Write to FILE instead of standard output."`
}

func (c *exportCmd) Validate() error {
	if c.Call == "" {
		return errors.New("--call is required")
	}
	return c.validate()
}

func (c *exportCmd) Run(ctx context.Context, s *streams) error {
	recs, err := c.records(ctx, s)
	if err != nil {
		return err
	}
	if c.Out == "" {
		return replay.WriteNDJSON(s.out, recs)
	}
	f, err := os.Create(c.Out)
	if err != nil {
		return err
	}
	if err := replay.WriteNDJSON(f, recs); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprint(s.err, termsafe.Sprintf("wrote %d records of call %s to %s\n", len(recs), c.Call, c.Out))
	return nil
}

type checkCmd struct {
	Brokers        []string      `default:"127.0.0.1:9092" sep:"," placeholder:"HOST:PORT" help:"Kafka seed brokers. Default: ${default}."`
	Topics         []string      `sep:"," placeholder:"NAME" help:"Topics to read, comma-separated. Default: every topic named baton.*."`
	Calls          string        `placeholder:"FILE" type:"existingfile" help:"File of acknowledged Call-IDs, one per line (blank lines and lines starting with # are skipped), e.g. the calls the SBC got a 200 OK for: each must have a CallStarted."`
	RequireEnded   bool          `help:"Every CallStarted must have a CallEnded (use after the calls are over)."`
	RequireHandoff bool          `help:"Every CallStarted must have a first handoff decision (a command with attempt 1 or a refusal)."`
	Partial        bool          `help:"The topics do not hold the whole history (retention deleted the start, or not every topic is read): skip the rules that match records across topics."`
	Timeout        time.Duration `default:"5m" help:"Give up reading after this long. Default: ${default}."`
}

func (c *checkCmd) Run(ctx context.Context, s *streams) error {
	opts := checker.Options{RequireEnded: c.RequireEnded, RequireHandoff: c.RequireHandoff, Partial: c.Partial}
	if c.Calls != "" {
		f, err := os.Open(c.Calls)
		if err != nil {
			return err
		}
		opts.Calls, err = checker.ReadCallIDs(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("--calls %s: %w", c.Calls, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	recs, err := checker.Read(ctx, strings.Join(c.Brokers, ","), c.Topics...)
	if err != nil {
		return err
	}
	rep := checker.Check(recs, opts)
	if err := rep.Write(s.out); err != nil {
		return err
	}
	if !rep.OK() {
		return fmt.Errorf("%d findings", len(rep.Findings))
	}
	return nil
}

type reportCmd struct {
	ClickHouse string        `name:"clickhouse" default:"127.0.0.1:19000" placeholder:"HOST:PORT" help:"ClickHouse native TCP address. Default: ${default}."`
	Database   string        `default:"baton" help:"Database analytics writes. Default: ${default}."`
	User       string        `default:"default" help:"ClickHouse user. Default: ${default}."`
	Since      time.Duration `default:"24h" help:"Window: this long back from now. Default: ${default}."`
	Limit      int           `default:"20" help:"Rows of the list panels. Default: ${default}."`
}

func (c *reportCmd) Run(ctx context.Context, s *streams) error {
	now := time.Now()
	return report.Run(ctx, report.Options{
		Addr: c.ClickHouse, Database: c.Database, Username: c.User, Password: os.Getenv(report.PasswordEnv),
		From: now.Add(-c.Since), To: now, Limit: c.Limit,
	}, s.out)
}

type probeCmd struct {
	Router       string            `required:"" placeholder:"FILE" type:"existingfile" help:"The router's config: its destinations and trunks are probed."`
	Transfer     string            `placeholder:"FILE" type:"existingfile" help:"Transfer's config: invite.trunk_host (where tel: routes and extensions go) and tls.ca_file/cert_file/key_file (how TLS destinations are verified). Without it tel: routes are skipped and TLS verifies against the system roots."`
	Only         []string          `name:"only" sep:"," placeholder:"NAME" help:"Probe only these destinations or trunks, comma-separated."`
	Timeout      time.Duration     `default:"5s" help:"Bound on one probe, and on a test call's wait for its answer. Default: ${default}."`
	WarnDays     int               `default:"14" placeholder:"N" help:"Warn when a TLS certificate expires within N days. Default: ${default}."`
	JSON         bool              `name:"json" help:"Write the report as JSON instead of a table."`
	Call         bool              `help:"Also place a short test call (INVITE with the headers the router renders for the destination, ACK, --hold, BYE) to every destination that answered OPTIONS, and report the answer. Needs the router binary (router replay renders the headers)."`
	RouterBin    string            `name:"router-bin" placeholder:"FILE" help:"Router binary that renders the test call's headers (router replay). Default: router next to baton, else on PATH."`
	Var          map[string]string `name:"var" placeholder:"NAME=VALUE" help:"An X- variable of the test call (as X-NAME on a real call), for the destinations' header templates; repeatable."`
	CallerNumber string            `name:"caller" default:"+15550100000" help:"The test call's caller number. Default: ${default}."`
	CalleeNumber string            `name:"callee" default:"+15550199999" help:"The test call's dialed number. Default: ${default}."`
	Hold         time.Duration     `default:"1s" help:"How long an answered test call stays up before its BYE. Default: ${default}."`
}

func (c *probeCmd) Validate() error {
	if c.Timeout <= 0 || c.Timeout > time.Minute {
		return fmt.Errorf("--timeout %s: want more than 0 and at most 1m", c.Timeout)
	}
	if c.WarnDays < 0 || c.WarnDays > 3650 {
		return fmt.Errorf("--warn-days %d: want 0 to 3650", c.WarnDays)
	}
	if c.Hold < 0 || c.Hold > time.Minute {
		return fmt.Errorf("--hold %s: want 0 to 1m", c.Hold)
	}
	return nil
}

func (c *probeCmd) Run(ctx context.Context, s *streams) error {
	logger, err := observability.NewLogger(s.err, observability.LogConfig{Level: "error", Format: "text"}, "probe")
	if err != nil {
		return err
	}
	// sipgo logs a few transport events (a connection's reference count
	// at close) through its package logger, not the one passed to the
	// user agent; in this one-command process it gets the probe's.
	sip.SetDefaultLogger(logger)
	sum, err := probe.Run(ctx, probe.Options{
		RouterConfig: c.Router, TransferConfig: c.Transfer, Only: c.Only, Timeout: c.Timeout, WarnDays: c.WarnDays,
		JSON: c.JSON, Call: c.Call, RouterBin: c.RouterBin, Hold: c.Hold, Logger: logger,
		Test: probe.TestCall{CallerNumber: c.CallerNumber, CalleeNumber: c.CalleeNumber, Variables: c.Var},
	}, s.out)
	if err != nil {
		return err
	}
	if sum.Down > 0 {
		return fmt.Errorf("%d of %d targets down", sum.Down, sum.Up+sum.Down+sum.Skipped)
	}
	return nil
}

type versionCmd struct{}

func (versionCmd) Run(s *streams) error {
	_, err := fmt.Fprintln(s.out, version.Read())
	return err
}

// streams are where commands write: out for results, err for logs.
type streams struct{ out, err io.Writer }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	// The first SIGINT/SIGTERM cancels ctx and the command shuts down
	// gracefully; stop then restores the default handlers so a second
	// signal ends the process at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)

	var c cli
	parser, err := newParser(&c, os.Stdout, os.Stderr, os.Exit)
	if err != nil {
		fmt.Fprintf(os.Stderr, "baton: %v\n", err)
		return 1
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		parser.Errorf("%v", err)
		return 2
	}
	kctx.BindTo(ctx, (*context.Context)(nil))
	if err := kctx.Run(&streams{out: os.Stdout, err: os.Stderr}); err != nil {
		// An error may quote a record or a call id: escaped like every
		// other text output.
		fmt.Fprint(os.Stderr, termsafe.Sprintf("baton %s: %s\n", kctx.Command(), err))
		return 1
	}
	return 0
}

// newParser builds the command line of c; defaults come from the packages
// that own them.
func newParser(c *cli, stdout, stderr io.Writer, exit func(int)) (*kong.Kong, error) {
	def := broker.DefaultConfig()
	return kong.New(c,
		kong.Name("baton"),
		kong.Description("Baton operator tool: hands phone calls from voice-AI agents to people over SIP, with every step an event in Kafka."),
		kong.Writers(stdout, stderr),
		kong.Exit(exit),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Vars{
			"listen":     def.Listen,
			"data_dir":   def.DataDir,
			"partitions": fmt.Sprint(def.Partitions),
			"topics":     strings.Join(def.Topics, ","),
		},
	)
}
