package bridge

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

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

// collector keeps the payloads a peer receives until the test ends.
type collector struct {
	mu  sync.Mutex
	got []string
}

func collect(t *testing.T, p *peer) *collector {
	t.Helper()
	c := &collector{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, _, err := p.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			var pkt rtp.Packet
			if pkt.Unmarshal(buf[:n]) == nil {
				c.mu.Lock()
				c.got = append(c.got, string(pkt.Payload))
				c.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		_ = p.conn.Close()
		<-done
	})
	return c
}

// count is how many received payloads start with prefix.
func (c *collector) count(prefix string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, p := range c.got {
		if strings.HasPrefix(p, prefix) {
			n++
		}
	}
	return n
}

// latchedCaller is an active bridge whose caller leg is latched to old, a
// port of the caller's signalled address; dest is the destination (it
// collects what the bridge sends it, and may send).
func latchedCaller(t *testing.T) (b *Bridge, old, dest *peer, got *collector) {
	t.Helper()
	b, err := New(&Ports{Host: loopback})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	old, dest = newPeer(t), newPeer(t)
	require.NoError(t, b.Leg(Caller).SetRemote(netip.AddrPortFrom(loopback, 9), 8000, Keys{}))
	require.NoError(t, b.Leg(Destination).SetRemote(dest.addr(), 8000, Keys{}))
	b.Activate()
	got = collect(t, dest)
	for i := range 5 {
		old.send(t, b.Leg(Caller).Port(), 0xA, uint16(i), uint32(160*i), []byte("old"))
	}
	require.Eventually(t, func() bool { return got.count("old") == 5 }, 2*time.Second, time.Millisecond)
	remote, _ := b.Leg(Caller).Remote()
	require.Equal(t, old.addr(), remote)
	return b, old, dest, got
}

// A NAT rebinding moves the caller's stream to another port of its
// address: once the old port has been silent for RelatchQuiet and the new
// one has sent RelatchPackets, the leg re-latches (counted), the new
// port's audio crosses and the destination's goes back to it. Before, the
// leg stayed on the dead port: one-way audio until the call timed out.
func TestNATRebindingRelatchesAfterSustainedTraffic(t *testing.T) {
	t.Parallel()
	b, old, dest, got := latchedCaller(t)
	leg := b.Leg(Caller)
	// The caller's last packet from the old port (its NAT binding then
	// changes): the quiet period starts after it was sent.
	lastOld := time.Now()
	old.send(t, leg.Port(), 0xA, 50, 50*160, []byte("old-last"))
	require.Eventually(t, func() bool { return got.count("old-last") == 1 }, 2*time.Second, time.Millisecond)
	rebound := newPeer(t)
	sent := 0
	var relatchedAt time.Time
	for i := range 150 { // 3 s at 20 ms
		rebound.send(t, leg.Port(), 0xA, uint16(100+i), uint32(160*(100+i)), []byte("rebound"))
		sent++
		time.Sleep(20 * time.Millisecond)
		if leg.Relatches() == 1 {
			relatchedAt = time.Now()
			break
		}
	}
	require.Equal(t, uint64(1), leg.Relatches(), "the leg re-latched to the new port")
	require.GreaterOrEqual(t, relatchedAt.Sub(lastOld), RelatchQuiet, "not before the old port was quiet for RelatchQuiet")
	require.GreaterOrEqual(t, sent, RelatchPackets)
	remote, _ := leg.Remote()
	require.Equal(t, rebound.addr(), remote)
	require.Eventually(t, func() bool { return got.count("rebound") == 1 }, 2*time.Second, time.Millisecond,
		"the packet that re-latched crossed")
	require.Equal(t, uint64(sent-1), leg.Drops().Foreign, "the new port's packets before the re-latch were dropped and counted")

	// From now on the new port's audio crosses, and the destination's
	// goes to it.
	rebound.send(t, leg.Port(), 0xA, 999, 999*160, []byte("after"))
	require.Eventually(t, func() bool { return got.count("after") == 1 }, 2*time.Second, time.Millisecond)
	dest.send(t, b.Leg(Destination).Port(), 7, 1, 160, []byte("back"))
	p, _ := rebound.recv(t)
	require.Equal(t, []byte("back"), p.Payload)

	// The old port is now a stranger: dropped and counted.
	old.send(t, leg.Port(), 0xA, 5, 800, []byte("old-late"))
	require.Eventually(t, func() bool { return leg.Drops().Foreign == uint64(sent) }, 2*time.Second, time.Millisecond)
	require.Zero(t, got.count("old-late"))
	require.Equal(t, uint64(1), leg.Relatches())
}

// Neither condition alone re-latches: a new port that sends far more than
// RelatchPackets while the latched source still talks, then a burst of a
// few packets once it has been quiet for RelatchQuiet, are both dropped;
// another address never latches, however long it sends. The caller's
// audio keeps crossing and only it.
func TestBurstFromANewPortDoesNotRelatch(t *testing.T) {
	t.Parallel()
	b, old, _, got := latchedCaller(t)
	leg := b.Leg(Caller)
	intruder := newPeer(t)
	const talking = 50 // over 1 s, while the caller talks
	for i := range talking {
		intruder.send(t, leg.Port(), 0xE, uint16(i), uint32(160*i), []byte("intruder"))
		old.send(t, leg.Port(), 0xA, uint16(10+i), uint32(160*(10+i)), []byte("old"))
		time.Sleep(20 * time.Millisecond)
	}
	require.Eventually(t, func() bool { return got.count("old") == 5+talking }, 2*time.Second, time.Millisecond)

	// The caller pauses (on hold, say) past RelatchQuiet: a burst of
	// fewer than RelatchPackets from the new port still does not take the
	// leg (what it sent while the caller talked does not count).
	time.Sleep(RelatchQuiet + 100*time.Millisecond)
	const burst = RelatchPackets - 1
	for i := range burst {
		intruder.send(t, leg.Port(), 0xE, uint16(100+i), uint32(160*(100+i)), []byte("intruder"))
	}
	// Another address, sustained, never latches.
	strangerConn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.2:0")))
	require.NoError(t, err)
	defer strangerConn.Close()
	stranger := &peer{conn: strangerConn}
	const foreign = 3 * RelatchPackets
	for i := range foreign {
		stranger.send(t, leg.Port(), 0xF, uint16(i), uint32(160*i), []byte("stranger"))
	}
	require.Eventually(t, func() bool { return leg.Drops().Foreign == uint64(talking+burst+foreign) }, 2*time.Second, time.Millisecond)
	require.Zero(t, leg.Relatches())
	remote, _ := leg.Remote()
	require.Equal(t, old.addr(), remote, "the leg stays with the caller")

	// The caller comes back and is heard; nothing of the others crossed.
	old.send(t, leg.Port(), 0xA, 500, 500*160, []byte("old-back"))
	require.Eventually(t, func() bool { return got.count("old-back") == 1 }, 2*time.Second, time.Millisecond)
	require.Zero(t, got.count("intruder"))
	require.Zero(t, got.count("stranger"))
	require.Equal(t, uint64(5+talking+1), b.Stats().GetCallerToDestination().GetPackets())
}
