package server

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/pkg/tracing"
)

// TestInviteTraceRidesInCallStarted: each INVITE is a span, and CallStarted
// carries its traceparent so the next stages continue the same trace.
func TestInviteTraceRidesInCallStarted(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.WithoutCancel(t.Context()))) })

	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, nil, Options{Tracer: tracing.Tracer(tp, "ingress")})
	consumer := newCalls(t, brokers, topics.Calls)

	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, conn.Close()) })
	me := conn.LocalAddr().(*net.UDPAddr).Port
	_, err = conn.WriteToUDP(rawRequest(sip.INVITE, in.port, me, "traced", "z9hG4bK-trace-1", "", offer, 1), in.srv.Addr())
	require.NoError(t, err)

	// Answer the 200 with an ACK: the INVITE's handling (and its span)
	// ends with the ACK.
	buf := make([]byte, 65535)
	for {
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
		n, _, err := conn.ReadFromUDP(buf)
		require.NoError(t, err)
		m, err := sip.NewParser().ParseSIP(buf[:n])
		require.NoError(t, err)
		if res := m.(*sip.Response); res.StatusCode == sip.StatusOK {
			tag, _ := res.To().Params.Get("tag")
			_, err = conn.WriteToUDP(rawRequest(sip.ACK, in.port, me, "traced", "z9hG4bK-trace-ack", ";tag="+tag, "", 1), in.srv.Addr())
			require.NoError(t, err)
			break
		}
	}

	ev := consumer.next(t)
	require.Equal(t, events.TypeCallStarted, ev.Type)
	require.NotEmpty(t, ev.TraceParent)
	sc := trace.SpanContextFromContext(tracing.Extract(t.Context(), ev.TraceParent))
	require.True(t, sc.IsValid())

	require.Eventually(t, func() bool { return len(exp.GetSpans()) > 0 }, 5*time.Second, 10*time.Millisecond, "the INVITE span ends")
	var found bool
	for _, s := range exp.GetSpans() {
		if s.Name == "ingress invite" {
			found = true
			require.Equal(t, sc.TraceID(), s.SpanContext.TraceID())
			require.Equal(t, sc.SpanID(), s.SpanContext.SpanID(), "CallStarted names the INVITE span")
		}
	}
	require.True(t, found, "an ingress invite span was exported")
}
