package tracing

import (
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestInjectExtractParentChild(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp, shutdown, err := Setup(t.Context(), DefaultConfig(), "test", sdktrace.WithSyncer(exp))
	require.NoError(t, err)
	tr := Tracer(tp, "test")

	ctx, parent := tr.Start(t.Context(), "parent")
	tp1 := Inject(ctx)
	parent.End()
	require.Regexp(t, `^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`, tp1)

	cctx, child := tr.Start(Extract(t.Context(), tp1), "child")
	tp2 := Inject(cctx)
	child.End()
	require.NotEqual(t, tp1, tp2, "the child has its own span id")

	spans := exp.GetSpans()
	require.Len(t, spans, 2)
	require.Equal(t, spans[0].SpanContext.TraceID(), spans[1].SpanContext.TraceID())
	require.Equal(t, spans[0].SpanContext.SpanID(), spans[1].Parent.SpanID())

	link, ok := Link(tp2)
	require.True(t, ok)
	require.Equal(t, spans[1].SpanContext.SpanID(), link.SpanContext.SpanID())
	require.NoError(t, shutdown(t.Context()))
}

func TestExtractNothing(t *testing.T) {
	for _, tp := range []string{"", "garbage", "00-00000000000000000000000000000000-0000000000000000-01"} {
		require.False(t, trace.SpanContextFromContext(Extract(t.Context(), tp)).IsValid(), tp)
		_, ok := Link(tp)
		require.False(t, ok, tp)
	}
	require.Empty(t, Inject(t.Context()))
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{DefaultConfig(), ""},
		{Config{OTLPEndpoint: "http://otel:4318/v1/traces", SampleRatio: 0.1}, ""},
		{Config{SampleRatio: 1.5}, "tracing.sample_ratio"},
		{Config{OTLPEndpoint: "otel:4318", SampleRatio: 1}, "tracing.otlp_endpoint"},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" {
			require.NoError(t, err)
			continue
		}
		require.ErrorContains(t, err, tc.want)
	}
}
