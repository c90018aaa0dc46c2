package rtp

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// udpFrom is a socket on ip sending to port on 127.0.0.1.
func udpFrom(t *testing.T, ip string, port int) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Only the SDP's address (and the trunk's) may latch; once latched, other
// sources are dropped for audio, digits and the media timeout's clock, and
// a new source takes over only after the latched one fell silent and the
// new one sent for a while (issue 14, item 2). Before, the first packet
// that parsed as RTP, from anywhere, took the call's audio.
func TestLatchOnlyToSignalledOrTrunkSources(t *testing.T) {
	base := freeRange(t)
	a := NewAllocator("127.0.0.1", base, base+2)
	var mu sync.Mutex
	var digits []string
	trunkAddr := netip.MustParseAddr("127.0.0.3")
	s, err := a.Open(func(d DTMF) {
		mu.Lock()
		digits = append(digits, d.Digit)
		mu.Unlock()
	}, func(ip netip.Addr) bool { return ip == trunkAddr })
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = s.Close() })

	caller := udpFrom(t, "127.0.0.1", s.Port())
	attacker := udpFrom(t, "127.0.0.2", s.Port())
	sameHost := udpFrom(t, "127.0.0.1", s.Port()) // the caller's address, another port
	s.SetMedia(Media{Codec: "PCMU", PayloadType: 0, ClockRate: 8000, EventPayloadType: 101},
		caller.LocalAddr().(*net.UDPAddr).AddrPort(), true)

	// The attacker sends first: a forged "9" and audio. All dropped.
	for i := range 3 {
		_, err := attacker.Write(packet(101, uint16(i), 8000, 66, false, event(9, true, 800)))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return s.Stats().Foreign == 3 }, 5*time.Second, 5*time.Millisecond)
	require.True(t, s.LastPacket().IsZero(), "foreign packets keep the media timeout's clock still")

	// The caller latches; the same host's other port is dropped even while
	// sending steadily, since the caller never falls silent.
	for i := range 20 {
		_, err := caller.Write(packet(0, uint16(100+i), uint32(160*i), 1, false, make([]byte, 160)))
		require.NoError(t, err)
		_, err = sameHost.Write(packet(101, uint16(i), 9000, 77, false, event(9, true, 800)))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { st := s.Stats(); return st.Packets == 20 && st.Foreign == 23 }, 5*time.Second, 5*time.Millisecond)
	to, _, _, ok := s.target()
	require.True(t, ok)
	require.Equal(t, caller.LocalAddr().(*net.UDPAddr).AddrPort(), to, "audio goes to the caller")
	mu.Lock()
	require.Empty(t, digits, "no forged digit was delivered")
	mu.Unlock()

	// The caller falls silent (NAT rebinding, an SBC moving the stream):
	// the trunk's other address sends for a while and takes over.
	time.Sleep(relatchQuiet + 100*time.Millisecond)
	moved := udpFrom(t, trunkAddr.String(), s.Port())
	for i := range relatchPackets + 5 {
		_, err := moved.Write(packet(0, uint16(200+i), uint32(160*i), 2, false, make([]byte, 160)))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return s.Stats().Packets == 20+6 }, 5*time.Second, 5*time.Millisecond,
		"the 10th packet of the new source re-latches; it and the 5 after are taken")
	to, _, _, _ = s.target()
	require.Equal(t, moved.LocalAddr().(*net.UDPAddr).AddrPort(), to)
	require.Equal(t, uint64(23+relatchPackets-1), s.Stats().Foreign)
}
