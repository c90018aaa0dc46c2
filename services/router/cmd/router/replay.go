package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/services/router/internal/config"
	"github.com/baton-voice/baton/services/router/internal/handoff"
	"github.com/baton-voice/baton/services/router/internal/router"
)

// replayCommand is the first argument that selects replay mode.
const replayCommand = "replay"

// replayLine is one record in the NDJSON of `baton export`
// (cmd/baton/internal/replay/export.go): the exact bytes, value as base64,
// plus the decoded event for people reading it. Both sides must agree.
type replayLine struct {
	Topic     string          `json:"topic"`
	Partition int32           `json:"partition"`
	Offset    int64           `json:"offset"`
	Timestamp time.Time       `json:"timestamp"`
	Key       string          `json:"key"`
	Headers   []replayHeader  `json:"headers"`
	Value     []byte          `json:"value"`
	Event     json.RawMessage `json:"event,omitempty"`
}

type replayHeader struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// maxReplayLine bounds one NDJSON line, as baton's reader does.
const maxReplayLine = 16 << 20

// replay is `router replay --config FILE`: it reads recorded records as
// NDJSON on stdin, folds the router's inputs (every record but the
// router's own commands and refusals) in event-time order through the
// same decision code as the service, with no Kafka, no webhook and no
// API, and writes the commands and refusals it decides as NDJSON on
// stdout. Records of equal event time keep the input's order. Pre-call
// data is taken from the recorded PreCallData facts.
func replay(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("router replay", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprintf(stderr, "Usage: router replay --config FILE < records.ndjson > decisions.ndjson\n\n"+
			"Re-decides recorded calls (baton export NDJSON) with the configuration's destinations and rules,\n"+
			"without Kafka, and writes the commands and refusals as NDJSON in the same format.\n\n")
		flags.PrintDefaults()
	}
	configPath := flags.String("config", "", "YAML configuration `file` (without it, the defaults)")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitConfig
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "router replay: unexpected argument %q\n", flags.Arg(0))
		return exitConfig
	}
	hostname, err := os.Hostname()
	if err != nil {
		hostname = "localhost"
	}
	cfg, err := config.Load(*configPath, hostname)
	if err != nil {
		return configError(stderr, err)
	}
	table, err := cfg.Table()
	if err != nil {
		return configError(stderr, err)
	}
	logger, err := observability.NewLogger(stderr, cfg.Log, "router")
	if err != nil {
		return configError(stderr, err)
	}
	for _, w := range cfg.Warnings() {
		logger.WarnContext(ctx, "config warning", "warning", w)
	}

	in, err := readReplayInput(stdin)
	if err != nil {
		fmt.Fprintf(stderr, "router replay: %v\n", err)
		return exitFailed
	}
	out := router.Decide(ctx, handoff.New(table, logger), cfg.Kafka.Topics.Handoffs, in, logger)
	if err := writeReplayOutput(stdout, out); err != nil {
		fmt.Fprintf(stderr, "router replay: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// readReplayInput reads the NDJSON records and returns the router's inputs
// sorted by event time (stable). The router's own decisions are left out:
// they are what the replay recomputes. Records that do not decode are
// kept; the fold skips them with a warning, as the service does.
func readReplayInput(r io.Reader) ([]*kgo.Record, error) {
	type input struct {
		rec *kgo.Record
		at  time.Time
	}
	var ins []input
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxReplayLine)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var line replayLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if line.Topic == "" {
			return nil, fmt.Errorf("line %d: no topic: not a baton export", n)
		}
		rec := &kgo.Record{Topic: line.Topic, Partition: line.Partition, Offset: line.Offset,
			Timestamp: line.Timestamp, Key: []byte(line.Key), Value: line.Value}
		for _, h := range line.Headers {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.Key, Value: []byte(h.Value)})
		}
		at := rec.Timestamp
		if ev, err := events.Decode(rec); err == nil {
			if ev.Type == events.TypeHandoffCommand || ev.Type == events.TypeHandoffRefused {
				continue
			}
			at = ev.Time
		}
		ins = append(ins, input{rec: rec, at: at})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read records: %w", err)
	}
	sort.SliceStable(ins, func(i, j int) bool { return ins[i].at.Before(ins[j].at) })
	out := make([]*kgo.Record, len(ins))
	for i, in := range ins {
		out[i] = in.rec
	}
	return out, nil
}

// writeReplayOutput writes the decided records as NDJSON. They were never
// in a log: partition and offset are -1.
func writeReplayOutput(w io.Writer, recs []*kgo.Record) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for _, r := range recs {
		line := replayLine{Topic: r.Topic, Partition: -1, Offset: -1, Timestamp: r.Timestamp.UTC(),
			Key: string(r.Key), Value: r.Value}
		for _, h := range r.Headers {
			line.Headers = append(line.Headers, replayHeader{Key: h.Key, Value: string(h.Value)})
		}
		if ev, err := events.Decode(r); err == nil {
			if data, err := protojson.Marshal(ev.Data); err == nil {
				line.Event = data
			}
		}
		if err := enc.Encode(line); err != nil {
			return fmt.Errorf("write decision of call %s: %w", r.Key, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write decisions: %w", err)
	}
	return nil
}
