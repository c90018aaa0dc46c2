package writer

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/schemas"
	"github.com/baton-voice/baton/services/analytics/internal/chconn"
	"github.com/baton-voice/baton/services/analytics/internal/config"
	"github.com/baton-voice/baton/services/analytics/internal/migrate"
)

// envInt reads a positive integer from the environment, or def.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// benchDatabase is a fresh database with the migrations applied.
func benchDatabase(b *testing.B) (config.ClickHouse, driver.Conn) {
	b.Helper()
	ch := server.Config(b)
	migrations, err := fs.Sub(schemas.ClickHouse, "clickhouse")
	require.NoError(b, err)
	_, err = migrate.Run(b.Context(), chconn.Options(ch, ch.Database), migrations, "", slog.New(slog.DiscardHandler))
	require.NoError(b, err)
	return ch, server.Conn(b, ch)
}

// benchKafka points cfg at the benchmark's broker and names the phase's
// topics, and creates them. With BENCH_BROKERS (host:port,...; run.sh
// starts `baton broker` in its own process) the broker is outside this
// process, so what the benchmark's CPU profile and rows/s measure is the
// writer alone; each phase then gets topics of its own on that broker.
// Without it, kfake runs here over TCP, sharing this process.
func benchKafka(b *testing.B, cfg *config.Config, phase string) {
	b.Helper()
	cfg.Kafka.Partitions = 6
	if brokers := os.Getenv("BENCH_BROKERS"); brokers != "" {
		cfg.Kafka.Brokers = strings.Split(brokers, ",")
		prefix := fmt.Sprintf("bench-%d-%s.", time.Now().UnixNano(), phase)
		cfg.Kafka.Topics = kafka.Topics{Calls: prefix + "calls", Handoffs: prefix + "handoffs", Transfers: prefix + "transfers"}
		cfg.DeadLetterTopic = prefix + "dlq"
	} else {
		cfg.Kafka.Brokers = kafkatest.NewCluster(b, cfg.Kafka.Partitions, cfg.Kafka.Topics.All()...)
	}
	cl, err := kgo.NewClient(kafka.ClientOpts(cfg.Kafka, slog.New(slog.DiscardHandler))...)
	require.NoError(b, err)
	defer cl.Close()
	require.NoError(b, kafka.EnsureTopics(b.Context(), cl, cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor,
		append(cfg.Kafka.Topics.All(), cfg.DeadLetterTopic)...))
}

// benchRecords are calls*4 records (CallStarted, HandoffCommand,
// TransferOutcome, CallEnded per call) over the three topics.
func benchRecords(b *testing.B, topics kafka.Topics, calls int, prefix string) []*kgo.Record {
	b.Helper()
	recs := make([]*kgo.Record, 0, 4*calls)
	for i := range calls {
		recs = append(recs, callEvents(b, topics, fmt.Sprintf("%s-%07d", prefix, i))...)
	}
	return recs
}

// BenchmarkAnalytics measures, in one run against the same ClickHouse:
//
//   - writer rows/s: records pre-loaded into Kafka (kfake over TCP, in this
//     process) until the writer committed them all, from its start
//     (connect and group join included);
//   - floor rows/s: clickhouse-client inserting the same rows from
//     TabSeparated files, one file per table;
//   - event-to-visible lag: records produced at BENCH_RATE events/s for
//     BENCH_SECONDS; each event's lag is the time its insert returned
//     (rows are visible then) minus the event's time.
//
// Rows are events: each also makes one row in its typed table, which both
// sides insert. bench/analytics/run.sh runs it and prints the ratio.
func BenchmarkAnalytics(b *testing.B) {
	calls := envInt("BENCH_CALLS", 25000)
	rate := envInt("BENCH_RATE", 4000)
	seconds := envInt("BENCH_SECONDS", 10)
	client, err := exec.LookPath("clickhouse-client")
	require.NoError(b, err, "the floor needs clickhouse-client (apt-get install clickhouse-client)")
	rounds := envInt("BENCH_ROUNDS", 3)
	for range b.N {
		// The machine is shared: alternate writer and floor over a few
		// rounds and compare medians, so a busy moment does not land on
		// one side only.
		var writers, steadies, floors []float64
		for i := range rounds {
			w, st := benchWriter(b, calls, i)
			f := benchFloor(b, client, calls, i)
			b.Logf("round %d: writer %.0f rows/s, steady %.0f rows/s, floor %.0f rows/s, ratio %.2f", i+1, w, st, f, w/f)
			writers, steadies, floors = append(writers, w), append(steadies, st), append(floors, f)
		}
		writerRate, steadyRate, floorRate := median(writers), median(steadies), median(floors)
		p50, p99, maxLag, n := benchLag(b, rate, seconds)
		b.ReportMetric(writerRate, "writer-rows/s")
		b.ReportMetric(floorRate, "floor-rows/s")
		b.ReportMetric(steadyRate, "writer-steady-rows/s")
		b.ReportMetric(writerRate/floorRate, "ratio")
		b.ReportMetric(steadyRate/floorRate, "steady-ratio")
		b.ReportMetric(float64(p50.Milliseconds()), "lag-p50-ms")
		b.ReportMetric(float64(p99.Milliseconds()), "lag-p99-ms")
		b.ReportMetric(float64(maxLag.Milliseconds()), "lag-max-ms")
		b.ReportMetric(float64(n), "lag-events")
	}
}

// median of xs (the upper one of an even count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// benchWriter returns the writer's rows/s from its start (connect, client,
// group join and all) and in steady state: the rows after the first batch
// over the time from the first batch's insert to the last commit.
func benchWriter(b *testing.B, calls, round int) (total, steady float64) {
	b.Helper()
	cfg := config.Default()
	benchKafka(b, &cfg, fmt.Sprintf("throughput%d", round))
	cfg.Batch.MaxRows = envInt("BENCH_MAX_ROWS", cfg.Batch.MaxRows)
	cfg.Group = "bench-throughput"
	cfg.HTTP.Listen = ""
	ch, conn := benchDatabase(b)
	cfg.ClickHouse = ch
	// Pre-load every record before the clock starts; the producer is gone
	// before the writer starts.
	recs := benchRecords(b, cfg.Kafka.Topics, calls, fmt.Sprintf("tp%d", round))
	prod, err := kgo.NewClient(kafka.ClientOpts(cfg.Kafka, slog.New(slog.DiscardHandler))...)
	require.NoError(b, err)
	for chunk := range slices.Chunk(recs, 10000) {
		require.NoError(b, prod.ProduceSync(b.Context(), chunk...).FirstErr())
	}
	prod.Close()

	var (
		inserts    int
		firstAt    time.Time
		firstBatch int64
	)
	metrics := NewMetrics(prometheus.NewRegistry())
	committed := func() int64 { return int64(testutil.ToFloat64(metrics.records)) }
	start := time.Now()
	// Connect and make the client as the service's main does.
	wconn, err := chconn.Open(b.Context(), chconn.Options(ch, ch.Database), slog.New(slog.DiscardHandler))
	require.NoError(b, err)
	defer func() { _ = wconn.Close() }()
	cl, err := kgo.NewClient(ClientOpts(cfg.Kafka, cfg.Group, slog.New(slog.DiscardHandler))...)
	require.NoError(b, err)
	defer cl.Close()
	// The inserts run on the Run goroutine, one batch at a time.
	ins := func(ctx context.Context, r *rows) error {
		if err := insert(ctx, wconn, r); err != nil {
			return err
		}
		inserts++
		switch inserts {
		case 1:
			firstAt = time.Now()
		case 2:
			firstBatch = committed()
		}
		return nil
	}
	w := newWriter(cl, ins, Options{Config: cfg, Metrics: metrics}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	require.Eventually(b, func() bool { return committed() == int64(len(recs)) }, 10*time.Minute, 10*time.Millisecond)
	end := time.Now()
	cancel()
	require.NoError(b, <-done)
	var n uint64
	require.NoError(b, conn.QueryRow(b.Context(), "SELECT count() FROM events").Scan(&n))
	require.Equal(b, uint64(len(recs)), n)
	total = float64(len(recs)) / end.Sub(start).Seconds()
	steady = total
	if inserts > 1 {
		steady = float64(int64(len(recs))-firstBatch) / end.Sub(firstAt).Seconds()
	}
	return total, steady
}

// tsv writes one TabSeparated value.
func tsv(v any) string {
	switch x := v.(type) {
	case string:
		return tsvEscape.Replace(x)
	case []byte:
		return tsvEscape.Replace(string(x))
	case time.Time:
		return x.UTC().Format(time.DateTime)
	case []string:
		q := make([]string, len(x))
		for i, s := range x {
			q[i] = "'" + tsvEscape.Replace(strings.NewReplacer(`'`, `\'`).Replace(s)) + "'"
		}
		return "[" + strings.Join(q, ",") + "]"
	}
	return fmt.Sprint(v)
}

var tsvEscape = strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`, "\r", `\r`, "\x00", `\0`)

// writeTSV writes t's rows to a file, the same columns the writer sends.
// It returns the path, or "" when there are no rows.
func writeTSV[T any](b *testing.B, dir string, t table[T], rows []T) string {
	b.Helper()
	if len(rows) == 0 {
		return ""
	}
	cols := make([]reflect.Value, len(t.columns))
	for i, c := range t.columns {
		cols[i] = reflect.ValueOf(c.values(rows))
	}
	path := filepath.Join(dir, t.name+".tsv")
	f, err := os.Create(path)
	require.NoError(b, err)
	bw := bufio.NewWriterSize(f, 1<<20)
	for i := range rows {
		for j, c := range cols {
			if j > 0 {
				_ = bw.WriteByte('\t')
			}
			_, _ = bw.WriteString(tsv(c.Index(i).Interface()))
		}
		_ = bw.WriteByte('\n')
	}
	require.NoError(b, bw.Flush())
	require.NoError(b, f.Close())
	return path
}

func benchFloor(b *testing.B, client string, calls, round int) float64 {
	b.Helper()
	ch, conn := benchDatabase(b)
	r, dead := build(benchRecords(b, kafka.DefaultConfig().Topics, calls, fmt.Sprintf("fl%d", round)))
	require.Empty(b, dead)
	dir := b.TempDir()
	files := []struct{ table, columns, path string }{
		{eventsTable.name, eventsTable.columnList(), writeTSV(b, dir, eventsTable, r.events)},
		{callsTable.name, callsTable.columnList(), writeTSV(b, dir, callsTable, r.calls)},
		{callEndsTable.name, callEndsTable.columnList(), writeTSV(b, dir, callEndsTable, r.callEnds)},
		{handoffsTable.name, handoffsTable.columnList(), writeTSV(b, dir, handoffsTable, r.handoffs)},
		{outcomesTable.name, outcomesTable.columnList(), writeTSV(b, dir, outcomesTable, r.outcomes)},
		{agentMetricsTable.name, agentMetricsTable.columnList(), writeTSV(b, dir, agentMetricsTable, r.metrics)},
	}
	host, port, _ := strings.Cut(ch.Addr, ":")
	start := time.Now()
	for _, f := range files {
		if f.path == "" {
			continue
		}
		in, err := os.Open(f.path)
		require.NoError(b, err)
		cmd := exec.CommandContext(b.Context(), client, "--host", host, "--port", port, "--database", ch.Database,
			"--query", "INSERT INTO "+f.table+" ("+f.columns+") FORMAT TabSeparated")
		cmd.Stdin = in
		out, err := cmd.CombinedOutput()
		_ = in.Close()
		require.NoError(b, err, "clickhouse-client %s: %s", f.table, out)
	}
	elapsed := time.Since(start)
	var n uint64
	require.NoError(b, conn.QueryRow(b.Context(), "SELECT count() FROM events").Scan(&n))
	require.Equal(b, uint64(r.len()), n)
	return float64(r.len()) / elapsed.Seconds()
}

func benchLag(b *testing.B, rate, seconds int) (p50, p99, maxLag time.Duration, n int) {
	b.Helper()
	cfg := config.Default()
	benchKafka(b, &cfg, "lag")
	cfg.Batch.MaxRows = envInt("BENCH_MAX_ROWS", cfg.Batch.MaxRows)
	cfg.Group = "bench-lag"
	ch, conn := benchDatabase(b)
	cfg.ClickHouse = ch
	cl, err := kgo.NewClient(ClientOpts(cfg.Kafka, cfg.Group, slog.New(slog.DiscardHandler))...)
	require.NoError(b, err)
	defer cl.Close()

	var (
		mu   sync.Mutex
		lags []time.Duration
	)
	ins := func(ctx context.Context, r *rows) error {
		if err := insert(ctx, conn, r); err != nil {
			return err
		}
		now := time.Now()
		mu.Lock()
		for _, ev := range r.events {
			lags = append(lags, now.Sub(time.UnixMilli(int64(ev.TimeMS))))
		}
		mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan error, 1)
	go func() { done <- newWriter(cl, ins, Options{Config: cfg}, slog.New(slog.DiscardHandler)).Run(ctx) }()

	// Produce rate events/s in 20 ticks a second, each event stamped with
	// the time it is produced.
	prod, err := kgo.NewClient(kafka.ClientOpts(cfg.Kafka, slog.New(slog.DiscardHandler))...)
	require.NoError(b, err)
	defer prod.Close()
	const ticks = 20
	perTick := max(rate/ticks/4, 1) // calls per tick, 4 events each
	tick := time.NewTicker(time.Second / ticks)
	defer tick.Stop()
	total := 0
	for i := range seconds * ticks {
		<-tick.C
		recs := make([]*kgo.Record, 0, 4*perTick)
		for j := range perTick {
			recs = append(recs, callEventsAt(b, cfg.Kafka.Topics, fmt.Sprintf("lag-%05d-%04d", i, j), time.Now(), 0)...)
		}
		for _, r := range recs {
			prod.Produce(ctx, r, func(_ *kgo.Record, err error) {
				if err != nil {
					b.Errorf("produce: %v", err)
				}
			})
		}
		total += len(recs)
	}
	require.NoError(b, prod.Flush(ctx))
	require.Eventually(b, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(lags) >= total
	}, time.Minute, 10*time.Millisecond)
	cancel()
	require.NoError(b, <-done)

	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lags)
	q := func(p float64) time.Duration { return lags[min(int(float64(len(lags))*p), len(lags)-1)] }
	return q(0.5), q(0.99), lags[len(lags)-1], len(lags)
}
