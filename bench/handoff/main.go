// Command handoff measures a handoff's latency budget hop by hop (issue 18,
// item 3): from the agent's POST /v1/calls/{id}/handoff to the REFER on
// the SBC's socket, and from the SBC's NOTIFY sipfrag to the outcome row
// written to ClickHouse, through the real binaries (`baton broker`,
// ingress, router, transfer, analytics) and Debian's clickhouse-server on
// loopback. The services write their hop times to files (pkg/hops,
// BATON_HOPS_FILE); the API's, ingress's and transfer's own times come
// from the events' ce_time. The baseline, measured in the same run at the
// same rates, is a bare franz-go produce → group consume round trip on
// the same broker. bench/handoff/run.sh builds the binaries and runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	// sipgo logs through the default logger (a retransmitted 200 under
	// load is an INFO line each): the bench prints only its figures.
	slog.SetDefault(slog.New(slog.DiscardHandler))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the command's flags.
type options struct {
	binDir, repoDir, workDir string
	rates                    []int
	duration                 time.Duration
	setupRate                int
	drain                    time.Duration
	analyticsMaxWait         time.Duration
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("handoff", flag.ContinueOnError)
	flags.SetOutput(stderr)
	var o options
	flags.StringVar(&o.binDir, "bin-dir", "bin", "`dir`ectory with baton, ingress, router, transfer and analytics")
	flags.StringVar(&o.repoDir, "repo-dir", ".", "repository root (deploy/local/clickhouse.sh)")
	flags.StringVar(&o.workDir, "work-dir", "", "`dir`ectory for data, configs, logs and hop files (default: a temporary one, removed)")
	rates := flags.String("rates", "20,200,1000", "comma-separated handoffs per second")
	flags.DurationVar(&o.duration, "duration", 5*time.Second, "handoffs asked for per rate: rate × duration")
	flags.IntVar(&o.setupRate, "setup-rate", 250, "calls per second placed before each rate's handoffs")
	flags.DurationVar(&o.drain, "drain", 20*time.Second, "wait after the last handoff for the outcome rows")
	flags.DurationVar(&o.analyticsMaxWait, "analytics-max-wait", 0, "analytics batch.max_wait (0: the shipped default)")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	for _, s := range strings.Split(*rates, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || r <= 0 {
			fmt.Fprintf(stderr, "handoff: --rates: %q is not a positive rate\n", s)
			return 2
		}
		o.rates = append(o.rates, r)
	}
	if o.duration <= 0 || o.setupRate <= 0 {
		fmt.Fprintln(stderr, "handoff: --duration and --setup-rate must be positive")
		return 2
	}
	var err error
	if o.binDir, err = filepath.Abs(o.binDir); err == nil {
		o.repoDir, err = filepath.Abs(o.repoDir)
	}
	if err != nil {
		fmt.Fprintf(stderr, "handoff: %v\n", err)
		return 2
	}
	if err := bench(ctx, o, stdout); err != nil {
		fmt.Fprintf(stderr, "handoff: %v\n", err)
		return 1
	}
	return 0
}
