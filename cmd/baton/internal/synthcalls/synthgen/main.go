// Command synthgen records a period of synthetic traffic into ClickHouse
// for bench/replay: calls from synthcalls, decided by `router replay`
// with the configuration they are "recorded with", written as analytics
// writes them. The database must exist and be migrated.
//
//	go run ./internal/synthcalls/synthgen -clickhouse 127.0.0.1:19000 -router bin/router -rules bench/replay/old.yaml -calls 100000 -days 30
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/baton-voice/baton/cmd/baton/internal/chreplay"
	"github.com/baton-voice/baton/cmd/baton/internal/synthcalls"
)

func main() {
	os.Exit(run())
}

func run() int {
	addr := flag.String("clickhouse", "127.0.0.1:19000", "ClickHouse native TCP address")
	db := flag.String("database", "baton", "database (migrated)")
	router := flag.String("router", "router", "router binary that records the decisions (router replay)")
	rules := flag.String("rules", "bench/replay/old.yaml", "router configuration the traffic is recorded with")
	calls := flag.Int("calls", 100_000, "calls to generate")
	days := flag.Int("days", 30, "the period: this many days up to -end")
	end := flag.String("end", "", "end of the period, RFC 3339 (default: now, to the second)")
	batch := flag.Int("batch", 2000, "calls per router process and per insert")
	seed := flag.Uint64("seed", 21, "random seed")
	flag.Parse()

	to := time.Now().UTC().Truncate(time.Second)
	if *end != "" {
		t, err := time.Parse(time.RFC3339, *end)
		if err != nil {
			fmt.Fprintf(os.Stderr, "synthgen: -end: %v\n", err)
			return 2
		}
		to = t
	}
	if *days < 1 || *calls < 1 || *batch < 1 {
		fmt.Fprintln(os.Stderr, "synthgen: -days, -calls and -batch must be at least 1")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	conn, err := chreplay.Open(ctx, chreplay.Options{Addr: *addr, Database: *db, Username: "default"})
	if err != nil {
		fmt.Fprintf(os.Stderr, "synthgen: %v\n", err)
		return 1
	}
	defer func() { _ = conn.Close() }()
	rec := &synthcalls.Recorder{RouterBin: *router, Rules: *rules}
	cfg := synthcalls.Config{Calls: *calls, From: to.AddDate(0, 0, -*days), To: to, Seed: *seed, Partitions: 3}
	began := time.Now()
	done, events := 0, 0
	err = synthcalls.Generate(ctx, cfg, *batch, func(ctx context.Context, cs []synthcalls.Call) error {
		if err := rec.Record(ctx, cs); err != nil {
			return err
		}
		if err := synthcalls.Load(ctx, conn, cs); err != nil {
			return err
		}
		done += len(cs)
		for _, c := range cs {
			events += len(c.Records)
		}
		fmt.Fprintf(os.Stderr, "\rrecorded %d of %d calls (%d events)", done, *calls, events)
		return nil
	})
	fmt.Fprintln(os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "synthgen: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stdout, "recorded %d calls, %d events, from %s to %s, in %s\n", done, events,
		cfg.From.Format(time.RFC3339), cfg.To.Format(time.RFC3339), time.Since(began).Round(time.Millisecond))
	return 0
}
