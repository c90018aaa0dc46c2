package bridge

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A stranger who reaches a leg's port before its peer does no longer takes
// the leg: only the address the leg's SDP signalled may latch it (any port
// of it, for NAT). Before, the first packet that parsed as RTP, from
// anywhere, latched the caller leg: the stranger heard the destination and
// the caller's packets were dropped (issue 14, item 2).
func TestOnlyTheSignalledAddressLatches(t *testing.T) {
	b, err := New(&Ports{Host: loopback})
	require.NoError(t, err)
	defer b.Close()
	caller, dest := newPeer(t), newPeer(t)
	callerPort, destPort := b.Leg(Caller).Port(), b.Leg(Destination).Port()
	// The caller's SDP names its address, another port (NAT).
	require.NoError(t, b.Leg(Caller).SetRemote(netip.AddrPortFrom(loopback, 9), 8000, Keys{}))
	require.NoError(t, b.Leg(Destination).SetRemote(dest.addr(), 8000, Keys{}))
	b.Activate()

	strangerConn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.2:0")))
	require.NoError(t, err)
	defer strangerConn.Close()
	stranger := &peer{conn: strangerConn}
	for i := range 3 {
		stranger.send(t, callerPort, 0xE, uint16(i), uint32(160*i), []byte("evil"))
	}
	require.Eventually(t, func() bool { return b.Leg(Caller).Drops().Foreign == 3 }, 2*time.Second, time.Millisecond)
	remote, _ := b.Leg(Caller).Remote()
	require.NotEqual(t, "127.0.0.2", remote.Addr().String(), "the stranger did not latch the caller leg")

	// The real caller latches from another port of its signalled address,
	// and its audio crosses; the destination's comes back to it.
	caller.send(t, callerPort, 0xA, 1, 160, []byte("hello"))
	p, _ := dest.recv(t)
	require.Equal(t, []byte("hello"), p.Payload)
	dest.send(t, destPort, 7, 1, 160, []byte("hi"))
	p, _ = caller.recv(t)
	require.Equal(t, []byte("hi"), p.Payload)

	// After the latch, the stranger is still dropped and counted.
	stranger.send(t, callerPort, 0xE, 9, 9000, []byte("evil"))
	require.Eventually(t, func() bool { return b.Leg(Caller).Drops().Foreign == 4 }, 2*time.Second, time.Millisecond)
	require.Equal(t, uint64(1), b.Stats().GetCallerToDestination().GetPackets(), "only the caller's packet was taken")
}
