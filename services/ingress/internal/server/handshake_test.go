package server

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHandshakesCapUnverifiedThenVerifiedSources(t *testing.T) {
	h := newHandshakes(4, 2)
	src := netip.MustParseAddr("192.0.2.7")
	now := time.Now()
	var dones []func()
	for range 2 {
		done, r := h.begin(src, false, now)
		require.Equal(t, notRefused, r)
		dones = append(dones, done)
	}
	_, r := h.begin(src, false, now)
	require.Equal(t, overUnackedUnverified, r, "a third call in flight from a source that never ACKed")

	// Another address is counted on its own.
	_, r = h.begin(netip.MustParseAddr("192.0.2.8"), false, now)
	require.Equal(t, notRefused, r)

	// A call ends: done frees its slot once, however often it is called.
	dones[0]()
	dones[0]()
	done, r := h.begin(src, false, now)
	require.Equal(t, notRefused, r)
	_, r = h.begin(src, false, now)
	require.Equal(t, overUnackedUnverified, r, "a repeated done freed a second slot")
	done()

	// One ACK verifies the source: the higher cap applies.
	h.acked(src, now)
	for range 3 {
		_, r := h.begin(src, false, now)
		require.Equal(t, notRefused, r)
	}
	_, r = h.begin(src, false, now)
	require.Equal(t, overUnackedVerified, r)

	// An hour later the ACK no longer vouches for it.
	h2 := newHandshakes(4, 1)
	h2.acked(src, now)
	_, r = h2.begin(src, false, now.Add(2*time.Hour))
	require.Equal(t, notRefused, r)
	_, r = h2.begin(src, false, now.Add(2*time.Hour))
	require.Equal(t, overUnackedUnverified, r)

	// A stream source is proven by its connection.
	h3 := newHandshakes(3, 1)
	for range 3 {
		_, r := h3.begin(src, true, now)
		require.Equal(t, notRefused, r)
	}
}

func TestHandshakesVerifiedSetIsBounded(t *testing.T) {
	h := newHandshakes(4, 1)
	h.maxKnown = 3
	now := time.Now()
	for i := range 10 {
		h.acked(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), now)
	}
	require.Len(t, h.verified, 3, "the set grew past its cap")
	// Expired entries make room.
	h.acked(netip.MustParseAddr("198.51.100.1"), now.Add(2*time.Hour))
	require.Len(t, h.verified, 1)
}
