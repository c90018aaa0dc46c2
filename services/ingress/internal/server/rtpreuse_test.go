package server

import (
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
)

// freeEvenPort is an even UDP port on 127.0.0.1 free right now.
func freeEvenPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		require.NoError(t, err)
		p := c.LocalAddr().(*net.UDPAddr).Port
		require.NoError(t, c.Close())
		if p%2 == 0 && p < 65535 {
			return p
		}
	}
	t.Fatal("no even port")
	return 0
}

// With one RTP port, the second call reuses the first call's socket
// (rtp.reuse) before its quarantine is over: the first caller's stream,
// still arriving, is dropped and counted as foreign; the second caller
// (the same SSRC, another port) is heard; each CallEnded counts only its
// own call's packets.
func TestReusedRTPPortHearsOnlyItsCall(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	port := freeEvenPort(t)
	in := startIngress(t, brokers, func(c *config.Config) {
		c.RTP.PortMin, c.RTP.PortMax, c.Limits.MaxCalls = port, port+1, 1
	})
	consumer := newCalls(t, brokers, topics.Calls)
	send := func(c *sbcCall, dst *net.UDPAddr, n int, seq0 uint16) {
		for i := range n {
			_, err := c.rtp.WriteToUDP(rtpPacket(0, seq0+uint16(i), uint32(i)*160, make([]byte, 160)), dst)
			require.NoError(t, err)
		}
	}

	first := dial(t, in, "reuse-first", "0")
	dst := first.ingressRTP()
	require.Equal(t, port, dst.Port)
	send(first, dst, 5, 1)
	require.Eventually(t, func() bool {
		c := in.srv.callByID("reuse-first")
		return c != nil && c.media.Stats().Packets == 5
	}, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, sip.StatusOK, first.inDialog(sip.BYE, "", "").StatusCode)
	require.EqualValues(t, 1, in.srv.Counters()["rtp_sockets_idle"], "kept for reuse")

	second := dial(t, in, "reuse-second", "0")
	require.Equal(t, port, second.ingressRTP().Port, "the same socket, inside its quarantine")
	require.Zero(t, in.srv.Counters()["rtp_sockets_idle"])
	call := in.srv.callByID("reuse-second")
	require.NotNil(t, call)
	send(first, dst, 5, 6) // the first caller's stream goes on
	require.Eventually(t, func() bool { return call.media.Stats().Foreign == 5 }, 10*time.Second, 5*time.Millisecond)
	send(second, dst, 3, 1)
	require.Eventually(t, func() bool { return call.media.Stats().Packets == 3 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, sip.StatusOK, second.inDialog(sip.BYE, "", "").StatusCode)

	packets := map[string]uint64{}
	for range 4 {
		ev := consumer.next(t)
		if ev.Type == events.TypeCallEnded {
			packets[ev.Subject] = ev.Data.(*batonv1.CallEnded).GetMedia().GetPackets()
		}
	}
	require.Equal(t, map[string]uint64{"reuse-first": 5, "reuse-second": 3}, packets)
}
