package main

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/pkg/logtest"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/schemas"
	"github.com/baton-voice/baton/services/analytics/internal/chconn"
	"github.com/baton-voice/baton/services/analytics/internal/config"
)

// observeWait bounds every wait for rows, offsets, log lines and metrics.
const observeWait = 30 * time.Second

// pollEvery is how often the waits look again.
const pollEvery = 50 * time.Millisecond

// TestMetricsAndTrace runs the service's wiring (serve) with its HTTP
// server over a call's records (one carrying a traceparent) and a record
// that cannot be decoded. /metrics shows the batch, the rows by table, the
// dead letter and the lag; /readyz is 200; the batch span links to the
// record's span.
func TestMetricsAndTrace(t *testing.T) {
	cfg := config.Default()
	cfg.Kafka.Partitions = 1
	cfg.Kafka.Brokers = kafkatest.NewCluster(t, cfg.Kafka.Partitions, cfg.Kafka.Topics.All()...)
	cfg.RetryPause = 20 * time.Millisecond
	cfg.ClickHouse = server.Config(t)
	cfg.HTTP.Listen = "127.0.0.1:0"
	topics := cfg.Kafka.Topics
	var logs logtest.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	exp := tracetest.NewInMemoryExporter()
	tp, shutdown, err := tracing.Setup(t.Context(), tracing.DefaultConfig(), "test", sdktrace.WithSyncer(exp))
	require.NoError(t, err)
	defer func() { require.NoError(t, shutdown(context.WithoutCancel(t.Context()))) }()

	// The router's span that wrote the call's record.
	rctx, routerSpan := tp.Tracer("router").Start(t.Context(), "router decide")
	routerSpan.End()
	good := crashCall(t, topics, "call-m", 0)
	good[0].Headers = append(good[0].Headers, kgo.RecordHeader{Key: events.HeaderTraceParent, Value: []byte(tracing.Inject(rctx))})
	garbage := &kgo.Record{Topic: topics.Calls, Key: []byte("call-m"), Value: []byte("not protobuf")}
	prod, err := kgo.NewClient(kafka.ClientOpts(cfg.Kafka, slog.New(slog.DiscardHandler))...)
	require.NoError(t, err)
	defer prod.Close()
	require.NoError(t, prod.ProduceSync(t.Context(), good[0], good[3], garbage).FirstErr())

	migrations, err := fs.Sub(schemas.ClickHouse, "clickhouse")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, migrations, tracing.Tracer(tp, "analytics"), logger) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	conn, err := clickhouse.Open(chconn.Options(cfg.ClickHouse, cfg.ClickHouse.Database))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	require.Eventually(t, func() bool {
		var n uint64
		err := conn.QueryRow(t.Context(), "SELECT count() FROM events FINAL WHERE call_id = ?", "call-m").Scan(&n)
		return err == nil && n == 2
	}, observeWait, pollEvery, "events: want 2 rows")
	adm := kadm.NewClient(prod)
	require.Eventually(t, func() bool {
		offs, err := adm.FetchOffsets(t.Context(), cfg.Group)
		if err != nil {
			return false
		}
		var n int64
		offs.Each(func(o kadm.OffsetResponse) { n += max(o.At, 0) })
		return n == 3
	}, observeWait, pollEvery, "group %s did not commit every record", cfg.Group)

	var base string
	require.Eventually(t, func() bool {
		m := regexp.MustCompile(`"msg":"dashboard listening".*?"metrics":"(http://[^"]+)/metrics"`).FindStringSubmatch(logs.String())
		if m != nil {
			base = m[1]
		}
		return m != nil
	}, observeWait, pollEvery)
	var body string
	require.Eventually(t, func() bool {
		var code int
		code, body = get(t, base+"/metrics")
		return code == http.StatusOK && strings.Contains(body, "baton_analytics_dead_lettered_total 1")
	}, observeWait, pollEvery)
	for _, want := range []string{
		"baton_analytics_batches_total 1",
		"baton_analytics_records_total 3",
		"baton_analytics_events_inserted_total 2",
		`baton_analytics_rows_inserted_total{table="events"} 2`,
		`baton_analytics_rows_inserted_total{table="calls"} 1`,
		`baton_analytics_rows_inserted_total{table="call_ends"} 1`,
		`baton_analytics_rows_inserted_total{table="handoffs"} 0`,
		"baton_analytics_batch_records_count 1",
		"baton_analytics_batch_records_sum 3",
		"baton_analytics_insert_duration_seconds_count 1",
		"go_goroutines",
	} {
		require.Contains(t, body, want)
	}
	code, ready := get(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code, ready)
	require.Eventually(t, func() bool {
		_, body := get(t, base+"/metrics")
		return strings.Contains(body, `baton_analytics_consumer_lag{partition="0",topic="baton.calls"} 0`)
	}, observeWait, pollEvery)

	var batch *tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == "analytics batch" {
			batch = &s
		}
	}
	require.NotNil(t, batch)
	require.Len(t, batch.Links, 1)
	router := trace.SpanContextFromContext(rctx)
	require.Equal(t, router.TraceID(), batch.Links[0].SpanContext.TraceID())
	require.Equal(t, router.SpanID(), batch.Links[0].SpanContext.SpanID())
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(body)
}
