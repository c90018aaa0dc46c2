package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/pkg/startup"
	"github.com/baton-voice/baton/services/router/internal/config"
	"github.com/baton-voice/baton/services/router/internal/handoff"
	"github.com/baton-voice/baton/services/router/internal/router"
)

// replayCommand is the first argument that selects replay mode.
const replayCommand = "replay"

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
			return startup.ExitOK
		}
		return startup.ExitConfig
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "router replay: unexpected argument %q\n", flags.Arg(0))
		return startup.ExitConfig
	}
	hostname, err := os.Hostname()
	if err != nil {
		hostname = "localhost"
	}
	cfg, err := config.Load(*configPath, hostname)
	if err != nil {
		return startup.ConfigError(stderr, "router", err)
	}
	table, err := cfg.Table()
	if err != nil {
		return startup.ConfigError(stderr, "router", err)
	}
	logger, err := observability.NewLogger(stderr, cfg.Log, "router")
	if err != nil {
		return startup.ConfigError(stderr, "router", err)
	}
	for _, w := range cfg.Warnings() {
		logger.WarnContext(ctx, "config warning", "warning", w)
	}

	in, err := readReplayInput(stdin)
	if err != nil {
		fmt.Fprintf(stderr, "router replay: %v\n", err)
		return startup.ExitFailed
	}
	out := router.Decide(ctx, handoff.New(table, logger), cfg.Kafka.Topics.Handoffs, in, logger)
	if err := writeReplayOutput(stdout, out); err != nil {
		fmt.Fprintf(stderr, "router replay: %v\n", err)
		return startup.ExitFailed
	}
	return startup.ExitOK
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
	nr := events.NewNDJSONReader(r)
	for {
		rec, err := nr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read records: %w", err)
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
	nw := events.NewNDJSONWriter(bw)
	for _, r := range recs {
		out := *r
		out.Partition, out.Offset = -1, -1
		if err := nw.Write(&out); err != nil {
			return fmt.Errorf("write decision of call %s: %w", r.Key, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write decisions: %w", err)
	}
	return nil
}
