package router

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// TestTraceAndMetrics: a call's CallStarted carries a traceparent; the
// command the router produces carries a child span of it (same trace, its
// own span id, the span the router exported). The metrics count the
// command, a refusal and an outcome once their transactions committed.
func TestTraceAndMetrics(t *testing.T) {
	h := newHarness(t)
	exp := tracetest.NewInMemoryExporter()
	tp, shutdown, err := tracing.Setup(t.Context(), tracing.DefaultConfig(), "test", sdktrace.WithSyncer(exp))
	require.NoError(t, err)
	defer func() { require.NoError(t, shutdown(context.WithoutCancel(t.Context()))) }()
	reg := prometheus.NewRegistry()
	metrics := NewMetrics(reg)
	rt, err := New(Options{Kafka: h.kcfg, Group: "baton-router-trace", TransactionalID: "router-trace",
		Metrics: metrics, Tracer: tracing.Tracer(tp, "ingress")}, handoff.New(h.table, h.logger), h.logger)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
		rt.Close()
	}()
	out := h.consumer(kgo.ReadCommitted())

	// The ingress span that started the call.
	ictx, ingress := tp.Tracer("ingress").Start(t.Context(), "invite")
	started := h.callStarted("traced-1")
	started.TraceParent = tracing.Inject(ictx)
	ingress.End()
	h.publish(started)

	rec := next(t, out, 1)[0]
	cmdEv, err := events.Decode(rec)
	require.NoError(t, err)
	require.Equal(t, events.TypeHandoffCommand, cmdEv.Type)
	parent := trace.SpanContextFromContext(tracing.Extract(t.Context(), started.TraceParent))
	child := trace.SpanContextFromContext(tracing.Extract(t.Context(), cmdEv.TraceParent))
	require.True(t, child.IsValid(), "command traceparent %q", cmdEv.TraceParent)
	require.Equal(t, parent.TraceID(), child.TraceID())
	require.NotEqual(t, parent.SpanID(), child.SpanID())
	var decide *tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == "router decide" {
			decide = &s
		}
	}
	require.NotNil(t, decide)
	require.Equal(t, child.SpanID(), decide.SpanContext.SpanID())
	require.Equal(t, parent.SpanID(), decide.Parent.SpanID())
	require.Eventually(t, func() bool { return testutil.ToFloat64(metrics.Commands.WithLabelValues("refer")) == 1 },
		waitTimeout, 10*time.Millisecond)
	// The rule that chose the destination is on the command and counted.
	require.Equal(t, "handoff-everyone", cmdEv.Data.(*batonv1.HandoffCommand).GetRule())
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.RuleHits.WithLabelValues("handoff-everyone", "command")))

	// A request for a route outside the allowlist is refused.
	req, err := events.New("baton/test", "traced-1", &batonv1.HandoffRequested{RequestId: "r1",
		Destination: "sip:+19005550100@premium.example"}, started.Time.Add(time.Second))
	require.NoError(t, err)
	h.publish(req)
	refused, err := events.Decode(next(t, out, 1)[0])
	require.NoError(t, err)
	require.Equal(t, events.TypeHandoffRefused, refused.Type)
	reason := refused.Data.(*batonv1.HandoffRefused).GetReasonCode()
	require.NotEmpty(t, reason)
	require.Eventually(t, func() bool { return testutil.ToFloat64(metrics.Refusals.WithLabelValues(reason)) == 1 },
		waitTimeout, 10*time.Millisecond)
	// The agent named the route: no rule made that decision.
	require.Empty(t, refused.Data.(*batonv1.HandoffRefused).GetRule())
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.RuleHits.WithLabelValues(NoRule, "refused")))
	require.Equal(t, 0.0, testutil.ToFloat64(metrics.Transactions.WithLabelValues("aborted")))
}

// TestRuleHitsCountHandoffsOnce: a handoff is a hit of its rule at its
// first command; its fallbacks and the end policy's BYE are not hits, and
// a decision without a rule counts under NoRule.
func TestRuleHitsCountHandoffsOnce(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	m.count(4, &tally{decisions: []proto.Message{
		&batonv1.HandoffCommand{Method: batonv1.Method_METHOD_REFER, Attempt: 1, Rule: "vip"},
		&batonv1.HandoffCommand{Method: batonv1.Method_METHOD_REFER, Attempt: 2, Rule: "vip"},
		&batonv1.HandoffCommand{Method: batonv1.Method_METHOD_BYE, Attempt: 3},
		&batonv1.HandoffCommand{Method: batonv1.Method_METHOD_INVITE, Attempt: 1},
		&batonv1.HandoffRefused{ReasonCode: "missing_variable", Rule: "vip"},
	}})
	require.Equal(t, 1.0, testutil.ToFloat64(m.RuleHits.WithLabelValues("vip", "command")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.RuleHits.WithLabelValues("vip", "refused")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.RuleHits.WithLabelValues(NoRule, "command")))
	require.Equal(t, 3, testutil.CollectAndCount(m.RuleHits), "one series per rule and decision seen")
}
