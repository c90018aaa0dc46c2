//go:build linux

package pump

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type got struct {
	payload string
	src     netip.AddrPort
}

// TestPumpReadsAndWrites: datagrams sent to pumped sockets reach their
// handlers with their source; WriteTo reaches a peer; after Remove the
// handler is never called again; Close stops the workers.
func TestPumpReadsAndWrites(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			addr := netip.MustParseAddr(host)
			peer, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
			if err != nil && addr.Is6() {
				t.Skipf("no IPv6 loopback here: %v", err)
			}
			require.NoError(t, err)
			defer func() { require.NoError(t, peer.Close()) }()
			peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()

			p, err := New(2, DefaultLinger)
			require.NoError(t, err)
			var mu sync.Mutex
			received := map[int][]got{}
			var socks []*Socket
			for i := range 3 {
				s, err := Listen(netip.AddrPortFrom(addr, 0))
				require.NoError(t, err)
				require.Positive(t, s.Port())
				require.NoError(t, p.Add(s, func(pkt []byte, src netip.AddrPort, _ time.Time) {
					mu.Lock()
					received[i] = append(received[i], got{string(pkt), src})
					mu.Unlock()
				}))
				socks = append(socks, s)
			}
			for i, s := range socks {
				for range 5 {
					_, err := peer.WriteToUDPAddrPort([]byte{byte('a' + i)}, netip.AddrPortFrom(addr, uint16(s.Port())))
					require.NoError(t, err)
				}
			}
			require.Eventually(t, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(received[0]) == 5 && len(received[1]) == 5 && len(received[2]) == 5
			}, 5*time.Second, time.Millisecond)
			mu.Lock()
			for i := range socks {
				for _, g := range received[i] {
					require.Equal(t, string(rune('a'+i)), g.payload, "each socket's own datagrams")
					require.Equal(t, peerAddr, g.src)
				}
			}
			mu.Unlock()

			require.NoError(t, socks[0].WriteTo([]byte("out"), peerAddr))
			require.NoError(t, peer.SetReadDeadline(time.Now().Add(5*time.Second)))
			buf := make([]byte, 16)
			n, from, err := peer.ReadFromUDPAddrPort(buf)
			require.NoError(t, err)
			require.Equal(t, "out", string(buf[:n]))
			require.Equal(t, socks[0].Port(), int(from.Port()))

			p.Remove(socks[1])
			_, err = peer.WriteToUDPAddrPort([]byte("late"), netip.AddrPortFrom(addr, uint16(socks[1].Port())))
			require.NoError(t, err)
			_, err = peer.WriteToUDPAddrPort([]byte("c"), netip.AddrPortFrom(addr, uint16(socks[2].Port())))
			require.NoError(t, err)
			require.Eventually(t, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(received[2]) == 6
			}, 5*time.Second, time.Millisecond)
			mu.Lock()
			require.Len(t, received[1], 5, "nothing after Remove")
			mu.Unlock()

			require.NoError(t, p.Close())
			for _, s := range socks {
				require.NoError(t, s.Close())
				require.NoError(t, s.Close(), "a second close is harmless")
			}
			require.ErrorIs(t, p.Add(socks[0], nil), ErrClosed)
		})
	}
}

func TestWriteToOtherFamilyFails(t *testing.T) {
	s, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	require.ErrorContains(t, s.WriteTo([]byte("x"), netip.MustParseAddrPort("[2001:db8::1]:4000")), "family")
}

func TestListenOnATakenPortFails(t *testing.T) {
	s, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	_, err = Listen(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.Port())))
	require.ErrorContains(t, err, "address already in use")
}

// BenchmarkRead: reading a datagram allocates nothing.
func BenchmarkRead(b *testing.B) {
	s, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.Port()))
	pkt := make([]byte, 172)
	buf := make([]byte, maxDatagram)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.WriteTo(pkt, to); err != nil {
			b.Fatal(err)
		}
		if _, _, err := s.read(buf); err != nil {
			b.Fatal(err)
		}
	}
}
