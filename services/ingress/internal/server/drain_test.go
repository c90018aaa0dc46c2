package server

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
)

// TestDrain stops the server with a call up: new INVITEs get 503 while the
// call is still served (INFO, re-INVITE, BYE); its CallEnded is published
// and Serve returns because no call is left, long before drain_timeout.
func TestDrain(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, func(c *config.Config) { c.DrainTimeout = time.Hour })
	consumer := newCalls(t, brokers, topics.Calls)
	c := dial(t, in, "drain-live", "0 101")
	require.Equal(t, events.TypeCallStarted, consumer.next(t).Type)

	in.cancel() // SIGTERM
	require.Eventually(t, in.srv.draining.Load, 5*time.Second, 5*time.Millisecond)

	late := newRawSBC(t)
	late.send(t, in.srv.Addr(), rawRequest(sip.INVITE, in.port, late.port, "drain-late", "z9hG4bK-late", "", offer, 1))
	res := late.read(t, 5*time.Second)
	require.NotNil(t, res)
	require.Equal(t, sip.StatusServiceUnavailable, res.StatusCode)
	require.Equal(t, "5", res.GetHeader("Retry-After").Value())
	require.EqualValues(t, 1, in.srv.Stats().Draining.Load())

	require.Equal(t, sip.StatusOK, c.inDialog(sip.INFO, "application/dtmf", "3").StatusCode)
	require.Equal(t, sip.StatusOK, c.inDialog(sip.INVITE, "application/sdp", sbcOffer(c.rtpPort(), "0", "sendonly")).StatusCode)
	c.ack("")
	select {
	case <-in.done:
		t.Fatal("Serve returned with a call up")
	default:
	}
	require.Equal(t, sip.StatusOK, c.inDialog(sip.BYE, "", "").StatusCode)

	select {
	case <-in.done:
	case <-t.Context().Done():
		t.Fatal("Serve did not return once the last call ended")
	}
	in.stop()
	var types []string
	for range 3 {
		types = append(types, consumer.next(t).Type)
	}
	require.Equal(t, []string{events.TypeDtmfReceived, events.TypeCallUpdated, events.TypeCallEnded}, types)
}

// TestDrainTimeout: a call that does not end is dropped at drain_timeout.
func TestDrainTimeout(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, func(c *config.Config) { c.DrainTimeout = 200 * time.Millisecond })
	dial(t, in, "drain-stuck", "0")
	in.stop() // returns only after the deadline dropped the call
	in.srv.mu.Lock()
	require.Empty(t, in.srv.calls)
	in.srv.mu.Unlock()
}
