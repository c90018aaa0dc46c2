package transfer

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/tracing"
)

// TestTraceAndMetrics: a REFER command carrying the router's traceparent
// is executed in a child span, and every outcome record carries that span
// in its traceparent header. The metrics count the command and outcomes.
func TestTraceAndMetrics(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp, shutdown, err := tracing.Setup(t.Context(), tracing.DefaultConfig(), "test", sdktrace.WithSyncer(exp))
	require.NoError(t, err)
	defer func() { require.NoError(t, shutdown(context.WithoutCancel(t.Context()))) }()
	reg := prometheus.NewRegistry()
	metrics := NewMetrics(reg)
	h := start(t, 202, func(o *Options) {
		o.Metrics = metrics
		o.Tracer = tracing.Tracer(tp, "transfer")
	})
	h.in.svc.RegisterInFlight(reg)

	// The router's span that produced the command.
	rctx, routerSpan := tp.Tracer("router").Start(t.Context(), "router decide")
	routerSpan.End()
	cmd := referCommand(h, "traced")
	ev, err := events.New("baton/router", cmd.GetCallId(), cmd, time.Now())
	require.NoError(t, err)
	ev.TraceParent = tracing.Inject(rctx)
	rec, err := events.Encode(h.topics.Handoffs, ev)
	require.NoError(t, err)
	require.NoError(t, h.pub.ProduceSync(t.Context(), rec).FirstErr())

	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.Commands.WithLabelValues("refer")))
	require.Eventually(t, func() bool { return testutil.ToFloat64(metrics.Outcomes.WithLabelValues("refer", "accepted")) == 1 },
		5*time.Second, 10*time.Millisecond)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`# HELP baton_transfer_in_flight Transfers executing now.
# TYPE baton_transfer_in_flight gauge
baton_transfer_in_flight 1
`), "baton_transfer_in_flight"), "the REFER waits for its NOTIFY")

	h.fact(t, cmd.CallId, &batonv1.NotifyReceived{CallId: cmd.CallId, Event: "refer",
		SubscriptionState: "terminated;reason=noresource", SipfragStatus: 200, SipfragReason: "OK"})
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)
	require.Eventually(t, func() bool { return testutil.ToFloat64(metrics.Outcomes.WithLabelValues("refer", "succeeded")) == 1 },
		5*time.Second, 10*time.Millisecond)

	// Both outcome records carry the execution span, a child of the
	// router's.
	out, err := kgo.NewClient(kgo.SeedBrokers(h.cfg.Brokers...), kgo.ConsumeTopics(h.topics.Transfers),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(kafka.FetchMaxWait))
	require.NoError(t, err)
	defer out.Close()
	var parents []string
	for len(parents) < 2 {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		fs := out.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "outcome records")
		cancel()
		for _, r := range fs.Records() {
			oe, err := events.Decode(r)
			require.NoError(t, err)
			parents = append(parents, oe.TraceParent)
		}
	}
	require.Equal(t, parents[0], parents[1])
	child := trace.SpanContextFromContext(tracing.Extract(t.Context(), parents[0]))
	router := trace.SpanContextFromContext(rctx)
	require.Equal(t, router.TraceID(), child.TraceID())
	require.Eventually(t, func() bool { return len(exp.GetSpans()) == 2 }, 10*time.Second, 10*time.Millisecond,
		"the execution span ends with the transfer")
	exec := exp.GetSpans()[1]
	require.Equal(t, "transfer refer", exec.Name)
	require.Equal(t, child.SpanID(), exec.SpanContext.SpanID())
	require.Equal(t, router.SpanID(), exec.Parent.SpanID())
}
