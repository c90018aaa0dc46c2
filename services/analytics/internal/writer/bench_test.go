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
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
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
	_, err = migrate.Run(b.Context(), chconn.Options(ch, ch.Database), migrations, slog.New(slog.DiscardHandler))
	require.NoError(b, err)
	return ch, server.Conn(b, ch)
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
//     process) until the writer committed them all, from Run's start
//     (group join included);
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
	for range b.N {
		writerRate, steadyRate := benchWriter(b, calls)
		floorRate := benchFloor(b, client, calls)
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

// benchWriter returns the writer's rows/s from Run's start (connect,
// group join and all) and in steady state: the rows after the first batch
// over the time from the first batch's insert to the last commit.
func benchWriter(b *testing.B, calls int) (total, steady float64) {
	b.Helper()
	cfg := config.Default()
	cfg.Kafka.Partitions = 6
	cfg.Kafka.Brokers = kafkatest.NewCluster(b, cfg.Kafka.Partitions, cfg.Kafka.Topics.All()...)
	cfg.Group = "bench-throughput"
	cfg.HTTP.Listen = ""
	ch, conn := benchDatabase(b)
	cfg.ClickHouse = ch
	recs := benchRecords(b, cfg.Kafka.Topics, calls, "tp")
	prod, err := kgo.NewClient(kafka.ClientOpts(cfg.Kafka, slog.New(slog.DiscardHandler))...)
	require.NoError(b, err)
	defer prod.Close()
	for chunk := range slices.Chunk(recs, 10000) {
		require.NoError(b, prod.ProduceSync(b.Context(), chunk...).FirstErr())
	}

	migrations, err := fs.Sub(schemas.ClickHouse, "clickhouse")
	require.NoError(b, err)
	var (
		inserts    int
		firstAt    time.Time
		firstBatch int64
	)
	var w *Writer
	// The hook runs on the consume goroutine, one batch at a time.
	w = New(cfg, migrations, slog.New(slog.DiscardHandler), WithAfterInsert(func() {
		inserts++
		switch inserts {
		case 1:
			firstAt = time.Now()
		case 2:
			firstBatch = w.stats.records.Load()
		}
	}))
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- w.Run(ctx) }()
	require.Eventually(b, func() bool { return w.stats.records.Load() == int64(len(recs)) }, 10*time.Minute, 10*time.Millisecond)
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

// tsv writes TabSeparated values.
func tsv(v any) string {
	switch x := v.(type) {
	case string:
		return tsvEscape.Replace(x)
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

var tsvEscape = strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`)

// writeTSV writes one file of rows for table.
func writeTSV[T any](b *testing.B, dir, table string, rows []T, values func(T) []any) string {
	b.Helper()
	path := filepath.Join(dir, table+".tsv")
	f, err := os.Create(path)
	require.NoError(b, err)
	bw := bufio.NewWriterSize(f, 1<<20)
	for _, r := range rows {
		vals := values(r)
		for i, v := range vals {
			if i > 0 {
				_ = bw.WriteByte('\t')
			}
			_, _ = bw.WriteString(tsv(v))
		}
		_ = bw.WriteByte('\n')
	}
	require.NoError(b, bw.Flush())
	require.NoError(b, f.Close())
	return path
}

func benchFloor(b *testing.B, client string, calls int) float64 {
	b.Helper()
	ch, conn := benchDatabase(b)
	r, dead := build(benchRecords(b, kafka.DefaultConfig().Topics, calls, "fl"))
	require.Empty(b, dead)
	dir := b.TempDir()
	files := []struct{ table, columns, path string }{
		{"events", eventColumns, writeTSV(b, dir, "events", r.events, eventRow.values)},
		{"calls", callColumns, writeTSV(b, dir, "calls", r.calls, callRow.values)},
		{"call_ends", callEndColumns, writeTSV(b, dir, "call_ends", r.callEnds, callEndRow.values)},
		{"handoffs", handoffColumns, writeTSV(b, dir, "handoffs", r.handoffs, handoffRow.values)},
		{"transfer_outcomes", outcomeColumns, writeTSV(b, dir, "transfer_outcomes", r.outcomes, outcomeRow.values)},
	}
	host, port, _ := strings.Cut(ch.Addr, ":")
	start := time.Now()
	for _, f := range files {
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
	cfg.Kafka.Partitions = 6
	cfg.Kafka.Brokers = kafkatest.NewCluster(b, cfg.Kafka.Partitions, cfg.Kafka.Topics.All()...)
	cfg.Group = "bench-lag"
	ch, conn := benchDatabase(b)
	cfg.ClickHouse = ch
	w := New(cfg, nil, slog.New(slog.DiscardHandler))
	cl, err := kgo.NewClient(w.clientOpts()...)
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
	go func() { done <- w.consume(ctx, cl, ins) }()

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
