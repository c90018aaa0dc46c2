package rtp

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// freeRange finds n consecutive even ports that can be bound right now.
func freeRange(t *testing.T) int {
	t.Helper()
	for base := 40000; base < 60000; base += 100 {
		ok := true
		for p := base; p < base+6 && ok; p += 2 {
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
			if err != nil {
				ok = false
				continue
			}
			require.NoError(t, c.Close())
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

func TestAllocatorCountsAndExhausts(t *testing.T) {
	base := freeRange(t)
	a := NewAllocator("127.0.0.1", base+1, base+4) // even ports base+2, base+4
	s1, err := a.Open(nil, nil)
	require.NoError(t, err)
	s2, err := a.Open(nil, nil)
	require.NoError(t, err)
	require.Equal(t, []int{base + 2, base + 4}, []int{s1.Port(), s2.Port()})
	_, err = a.Open(nil, nil)
	require.True(t, errors.Is(err, ErrNoPorts), "%v", err)

	out, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: s1.Port()})
	require.NoError(t, err)
	defer func() { require.NoError(t, out.Close()) }()
	for range 3 {
		_, err := out.Write(make([]byte, 172))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return s1.Stats().Packets == 3 }, 5*time.Second, 5*time.Millisecond)

	st, err := s1.Close()
	require.NoError(t, err)
	require.Equal(t, Stats{Packets: 3, Bytes: 3 * 172}, st, "zeros are not RTP: counted, no sequence")
	_, err = s1.Close() // twice is fine
	require.NoError(t, err)

	s3, err := a.Open(nil, nil) // the freed port is reused
	require.NoError(t, err)
	require.Equal(t, base+2, s3.Port())
	for _, s := range []*Session{s2, s3} {
		_, err := s.Close()
		require.NoError(t, err)
	}
}
