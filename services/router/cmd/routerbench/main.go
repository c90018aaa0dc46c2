// Command routerbench measures the router's latency under steady load: the
// time from a HandoffRequested being produced to its HandoffCommand being
// visible to a read_committed consumer, on the embedded broker (`baton
// broker`), with the real router binary and a 100-rule CEL config. In the
// same run it measures two baselines over the same broker: a plain
// produce → read_committed consume of one topic, and a transactional
// pass-through (the router's consume-transform-produce loop without the
// router). bench/router/run.sh builds the binaries and runs it.
//
//	routerbench --bin-dir DIR [--rates 200,1000] [--duration 20s] ...
//	routerbench passthrough --brokers HOST:PORT --in T --out T   (started by the former)
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
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/services/router/internal/loadbench"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// Topics and groups of the run.
const (
	directTopic      = "bench.direct"
	passInTopic      = "bench.pass.in"
	passOutTopic     = "bench.pass.out"
	routerGroup      = "bench-router"
	passthroughGroup = "bench-passthrough"
)

// startTimeout bounds the broker's start and the consumers' catching up
// with the seeded records.
const startTimeout = 2 * time.Minute

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "passthrough" {
		return runPassthrough(ctx, args[1:], stderr)
	}
	flags := flag.NewFlagSet("routerbench", flag.ContinueOnError)
	flags.SetOutput(stderr)
	binDir := flags.String("bin-dir", "bin", "`dir`ectory with the baton and router binaries (make build)")
	rates := flags.String("rates", "200,1000", "comma-separated load `levels`, requests per second")
	duration := flags.Duration("duration", 20*time.Second, "measured time per level and path")
	warmup := flags.Duration("warmup", 2*time.Second, "load sent before each measurement and left out of it")
	drain := flags.Duration("drain", 10*time.Second, "wait after the last request for missing answers")
	rules := flags.Int("rules", 100, "CEL rules in the router config; only the last matches")
	partitions := flags.Int("partitions", 6, "partitions of every topic")
	routerLog := flags.String("router-log-level", "info", "router log level (info logs every decision, as deployed)")
	workDir := flags.String("work-dir", "", "`dir`ectory for the broker data, configs and logs (default: a temporary one, removed)")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	var levels []loadbench.Level
	for _, s := range strings.Split(*rates, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || r <= 0 {
			fmt.Fprintf(stderr, "routerbench: --rates: %q is not a positive rate\n", s)
			return exitUsage
		}
		levels = append(levels, loadbench.Level{Rate: r, Warmup: *warmup, Duration: *duration})
	}
	if *rules < 1 || *partitions < 1 || *duration <= 0 || *warmup < 0 {
		fmt.Fprintln(stderr, "routerbench: --rules, --partitions and --duration must be positive")
		return exitUsage
	}
	b := &bench{binDir: *binDir, levels: levels, drain: *drain, rules: *rules, partitions: int32(*partitions),
		routerLog: *routerLog, workDir: *workDir, out: stdout}
	if err := b.run(ctx); err != nil {
		fmt.Fprintf(stderr, "routerbench: %v\n", err)
		return exitFailed
	}
	return exitOK
}

type bench struct {
	binDir     string
	levels     []loadbench.Level
	drain      time.Duration
	rules      int
	partitions int32
	routerLog  string
	workDir    string
	out        io.Writer
}

func (b *bench) run(ctx context.Context) (err error) {
	dir := b.workDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "routerbench-"); err != nil {
			return fmt.Errorf("work dir: %w", err)
		}
		defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	kcfg := kafka.DefaultConfig()
	kcfg.Partitions = b.partitions

	// The embedded broker, started as `baton broker` is by `baton dev`.
	topics := append(kcfg.Topics.All(), directTopic, passInTopic, passOutTopic)
	broker, addr, err := startBroker(ctx, filepath.Join(b.binDir, "baton"), dir,
		"--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "broker"),
		"--partitions", strconv.Itoa(int(b.partitions)), "--topics", strings.Join(topics, ","), "--log-level", "warn")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, broker.stop()) }()
	kcfg.Brokers = []string{addr}

	// The real router, with the benchmark's rules.
	routerConfig := filepath.Join(dir, "router.yaml")
	yaml := loadbench.RouterConfig(kcfg, routerGroup, "bench-router-1", b.routerLog, b.rules)
	if err := os.WriteFile(routerConfig, []byte(yaml), 0o600); err != nil {
		return fmt.Errorf("write router config: %w", err)
	}
	router, err := startProcess(filepath.Join(b.binDir, "router"), filepath.Join(dir, "router.log"), nil, "--config", routerConfig)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, router.stop()) }()

	// The pass-through baseline: this program again, as a process of its own.
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	pass, err := startProcess(self, filepath.Join(dir, "passthrough.log"), nil, "passthrough",
		"--brokers", addr, "--partitions", strconv.Itoa(int(b.partitions)), "--in", passInTopic, "--out", passOutTopic,
		"--group", passthroughGroup, "--transactional-id", "bench-passthrough-1")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pass.stop()) }()

	// The load's producer is configured as ingress's (pkg/kafka).
	prod, err := kgo.NewClient(kafka.ClientOpts(kcfg, slog.New(slog.DiscardHandler))...)
	if err != nil {
		return fmt.Errorf("new producer: %w", err)
	}
	defer prod.Close()
	adm := kadm.NewClient(prod)

	fmt.Fprintf(b.out, "routerbench: embedded broker (%s broker, kfake, %d partitions, data dir on disk) on %s\n",
		filepath.Join(b.binDir, "baton"), b.partitions, addr)
	fmt.Fprintf(b.out, "router: %s, %d CEL rules (the last matches), 1 instance, log level %s; %d CPUs, GOMAXPROCS %d, %s\n",
		filepath.Join(b.binDir, "router"), b.rules, b.routerLog, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())

	// Seed every call the router will be asked to hand off.
	total := 0
	ids := make([][]string, len(b.levels))
	for i, l := range b.levels {
		ids[i] = loadbench.CallIDs(fmt.Sprintf("l%d-%d", i, l.Rate), l.Requests())
		total += len(ids[i])
	}
	var starts []*kgo.Record
	for _, level := range ids {
		recs, err := loadbench.StartRecords(kcfg.Topics.Calls, level, time.Now())
		if err != nil {
			return err
		}
		starts = append(starts, recs...)
	}
	probe, err := loadbench.StartRecords(passInTopic, loadbench.CallIDs("probe", 10), time.Now())
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := loadbench.Seed(ctx, prod, append(starts, probe...)); err != nil {
		return err
	}
	produced := time.Since(t0)
	for _, w := range []struct {
		p            *process
		group, topic string
	}{{router, routerGroup, kcfg.Topics.Calls}, {pass, passthroughGroup, passInTopic}} {
		wctx, cancel := w.p.watch(ctx, startTimeout)
		err := loadbench.WaitCaughtUp(wctx, adm, w.group, w.topic)
		cancel()
		if err != nil {
			return errors.Join(err, w.p.exited())
		}
	}
	folded := time.Since(t0)
	fmt.Fprintf(b.out, "seeded %d calls (CallStarted): produced in %v, folded by the router (100%% committed) after %v, %.0f calls/s\n\n",
		total, produced.Round(time.Millisecond), folded.Round(time.Millisecond), float64(total)/folded.Seconds())

	paths := []loadbench.Path{
		{Name: "direct", In: directTopic, Out: directTopic, Want: events.TypeHandoffRequested},
		{Name: "passthrough", In: passInTopic, Out: passOutTopic, Want: events.TypeHandoffRequested},
		{Name: "router", In: kcfg.Topics.Calls, Out: kcfg.Topics.Handoffs, Want: events.TypeHandoffCommand},
	}
	fmt.Fprintln(b.out, "direct: produce → read_committed consume, no processing; passthrough: the router's transactional")
	fmt.Fprintln(b.out, "consume→produce loop copying records; router: HandoffRequested → HandoffCommand committed.")
	var failed []string
	for i, l := range b.levels {
		fmt.Fprintf(b.out, "\n== %d requests/s: %v measured after %v warm-up\n", l.Rate, l.Duration, l.Warmup)
		fmt.Fprintf(b.out, "%-12s %10s %8s %8s %9s %9s %9s %9s\n", "path", "achieved/s", "sent", "answered", "p50", "p90", "p99", "max")
		byPath := map[string]loadbench.Summary{}
		for _, p := range paths {
			reqs, err := loadbench.RequestRecords(p.In, ids[i], time.Now())
			if err != nil {
				return err
			}
			res, err := loadbench.Measure(ctx, prod, kcfg.Brokers, p, l, reqs, b.drain)
			if err != nil {
				return err
			}
			byPath[p.Name] = res.Latency
			s := res.Latency
			fmt.Fprintf(b.out, "%-12s %10.1f %8d %8d %9s %9s %9s %9s\n", p.Name, res.Achieved, res.Measured, res.Received,
				ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max))
			if res.Received != res.Measured || res.Wrong > 0 || res.ProduceErrors > 0 {
				failed = append(failed, fmt.Sprintf("%s at %d/s: %d of %d answered, %d wrong answers, %d produce errors",
					p.Name, l.Rate, res.Received, res.Measured, res.Wrong, res.ProduceErrors))
			}
		}
		r, pt, d := byPath["router"], byPath["passthrough"], byPath["direct"]
		fmt.Fprintf(b.out, "router/passthrough: p50 %s, p99 %s; router/direct: p50 %s, p99 %s\n",
			ratio(r.P50, pt.P50), ratio(r.P99, pt.P99), ratio(r.P50, d.P50), ratio(r.P99, d.P99))
	}
	if err := router.exited(); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("incomplete measurement (logs in %s): %s", dir, strings.Join(failed, "; "))
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

func ratio(a, b time.Duration) string {
	if b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", float64(a)/float64(b))
}

// runPassthrough is the pass-through baseline process.
func runPassthrough(ctx context.Context, args []string, stderr io.Writer) int {
	flags := flag.NewFlagSet("routerbench passthrough", flag.ContinueOnError)
	flags.SetOutput(stderr)
	brokers := flags.String("brokers", "127.0.0.1:9092", "comma-separated seed `brokers`")
	partitions := flags.Int("partitions", 6, "partitions (unused by the loop; kept for the config's validation)")
	in := flags.String("in", passInTopic, "topic to consume")
	out := flags.String("out", passOutTopic, "topic to copy to")
	group := flags.String("group", passthroughGroup, "consumer group")
	txnID := flags.String("transactional-id", "bench-passthrough-1", "transactional id")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	kcfg := kafka.DefaultConfig()
	kcfg.Brokers = strings.Split(*brokers, ",")
	kcfg.Partitions = int32(*partitions)
	if err := kcfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "routerbench passthrough: %v\n", err)
		return exitUsage
	}
	logger, err := observability.NewLogger(stderr, observability.LogConfig{Level: "warn", Format: "json"}, "routerbench")
	if err != nil {
		fmt.Fprintf(stderr, "routerbench passthrough: %v\n", err)
		return exitUsage
	}
	opts := loadbench.PassthroughOptions{Kafka: kcfg, Group: *group, TransactionalID: *txnID, In: *in, Out: *out}
	if err := loadbench.Passthrough(ctx, opts, logger); err != nil {
		logger.ErrorContext(ctx, "passthrough stopped", "err", err)
		return exitFailed
	}
	return exitOK
}
