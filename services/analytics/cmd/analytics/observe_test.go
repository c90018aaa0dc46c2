package writer

import (
	"context"
	"io"
	"io/fs"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/opshttp"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/schemas"
)

// TestMetricsAndTrace runs a writer with its HTTP server over a call's
// records (one carrying a traceparent) and a record that cannot be
// decoded. /metrics shows the batch, the rows by table and the dead
// letter; /readyz is 200; the batch span links to the record's span.
func TestMetricsAndTrace(t *testing.T) {
	e := newEnv(t, true)
	e.cfg.HTTP.Listen = "127.0.0.1:0"
	topics := e.cfg.Kafka.Topics
	exp := tracetest.NewInMemoryExporter()
	tp, shutdown, err := tracing.Setup(t.Context(), tracing.DefaultConfig(), "test", sdktrace.WithSyncer(exp))
	require.NoError(t, err)
	defer func() { require.NoError(t, shutdown(context.WithoutCancel(t.Context()))) }()

	// The router's span that wrote the call's record.
	rctx, routerSpan := tp.Tracer("router").Start(t.Context(), "router decide")
	routerSpan.End()
	good := callEvents(t, topics, "call-m")
	good[0].Headers = append(good[0].Headers, kgo.RecordHeader{Key: events.HeaderTraceParent, Value: []byte(tracing.Inject(rctx))})
	garbage := &kgo.Record{Topic: topics.Calls, Key: []byte("call-m"), Value: []byte("not protobuf")}
	e.produce(good[0], good[3], garbage)

	migrations, err := fs.Sub(schemas.ClickHouse, "clickhouse")
	require.NoError(t, err)
	w := New(e.cfg, migrations, e.logger(), WithRegistry(opshttp.NewRegistry()), WithTracer(tracing.Tracer(tp, "analytics")))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	conn := server.Conn(t, e.cfg.ClickHouse)
	waitCount(t, conn, 2, "events", "call_id = ?", "call-m")
	e.waitCommitted(e.cfg.Group)

	var base string
	require.Eventually(t, func() bool {
		m := regexp.MustCompile(`"msg":"dashboard listening".*?"metrics":"(http://[^"]+)/metrics"`).FindStringSubmatch(e.logs.String())
		if m != nil {
			base = m[1]
		}
		return m != nil
	}, waitTimeout, pollEvery)
	var body string
	require.Eventually(t, func() bool {
		var code int
		code, body = get(t, base+"/metrics")
		return code == http.StatusOK && strings.Contains(body, "baton_analytics_dead_lettered_total 1")
	}, waitTimeout, pollEvery)
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
	}, waitTimeout, pollEvery)

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
