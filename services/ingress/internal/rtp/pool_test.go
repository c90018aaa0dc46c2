package rtp

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is the allocator's clock in tests: it moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func closeSession(t *testing.T, s *Session) {
	t.Helper()
	_, err := s.Close()
	require.NoError(t, err)
}

func closeAllocator(t *testing.T, a *Allocator) {
	t.Helper()
	require.NoError(t, a.Close())
}

// bindable reports whether port on 127.0.0.1 can be bound now (nothing
// holds it).
func bindable(t *testing.T, port int) bool {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return false
	}
	require.NoError(t, c.Close())
	return true
}

// A socket reused by the next call does not deliver the previous call's
// late packets: its audio and its RFC 4733 digits, from the source and
// SSRC it last sent with, are dropped and counted as foreign, and cannot
// take the new call's latch; the new caller is heard from its first
// packet. The one-port range forces reuse inside the quarantine.
func TestReusedSocketDoesNotLeakThePreviousCall(t *testing.T) {
	base := freeRange(t)
	a := NewAllocator("127.0.0.1", base, base+1, WithReuse(1, time.Hour))
	t.Cleanup(func() { closeAllocator(t, a) })

	first, err := a.Open(nil, nil)
	require.NoError(t, err)
	oldCaller := udpFrom(t, "127.0.0.1", first.Port())
	first.SetMedia(pcmu, oldCaller.LocalAddr().(*net.UDPAddr).AddrPort(), true)
	for i := range 5 {
		_, err := oldCaller.Write(packet(0, uint16(i), uint32(160*i), 66, false, make([]byte, 160)))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return first.Stats().Packets == 5 }, 5*time.Second, 5*time.Millisecond)
	closeSession(t, first)
	require.Equal(t, 1, a.Idle(), "kept for reuse")

	var mu sync.Mutex
	var digits []string
	var audio [][]byte
	next, err := a.Open(func(d DTMF) {
		mu.Lock()
		digits = append(digits, d.Digit)
		mu.Unlock()
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { closeSession(t, next) })
	require.Equal(t, first.Port(), next.Port(), "the same socket")
	next.SetAudioSink(func(p []byte, _ string) {
		mu.Lock()
		audio = append(audio, append([]byte(nil), p...))
		mu.Unlock()
	})
	newCaller := udpFrom(t, "127.0.0.1", next.Port()) // the same host (an SBC), another port
	next.SetMedia(pcmu, newCaller.LocalAddr().(*net.UDPAddr).AddrPort(), true)

	// The old call's stream goes on: audio, then a digit "9" (its end
	// packet three times). The new caller has not sent yet, so before
	// the quarantine any of it would have latched and been heard.
	for i := range 5 {
		_, err := oldCaller.Write(packet(0, uint16(5+i), uint32(160*(5+i)), 66, false, []byte{0xaa, 0xaa}))
		require.NoError(t, err)
	}
	for range 3 {
		_, err := oldCaller.Write(packet(101, 10, 1600, 66, false, event(9, true, 800)))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return next.Stats().Foreign == 8 }, 5*time.Second, 5*time.Millisecond)
	require.True(t, next.LastPacket().IsZero(), "the old call's packets do not feed the media timeout's clock")

	// The new caller: audio and a "5", all heard.
	for i := range 3 {
		_, err := newCaller.Write(packet(0, uint16(100+i), uint32(160*i), 77, false, []byte{0x11, 0x11}))
		require.NoError(t, err)
	}
	for range 3 {
		_, err := newCaller.Write(packet(101, 103, 800, 77, false, event(5, true, 400)))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return next.Stats().Packets == 6 }, 5*time.Second, 5*time.Millisecond)
	to, _, _, ok := next.target()
	require.True(t, ok)
	require.Equal(t, newCaller.LocalAddr().(*net.UDPAddr).AddrPort(), to, "latched to the new caller")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"5"}, digits, "no digit of the previous call")
	require.Equal(t, [][]byte{{0x11, 0x11}, {0x11, 0x11}, {0x11, 0x11}}, audio, "no audio of the previous call")
	require.EqualValues(t, 8, next.Stats().Foreign)
}

// Between calls a kept socket's reader drops what arrives, so nothing
// queued while it was idle reaches the next call.
func TestIdleSocketDropsWhatArrives(t *testing.T) {
	base := freeRange(t)
	clock := &fakeClock{now: time.Unix(1000, 0)}
	a := NewAllocator("127.0.0.1", base, base+1, WithReuse(1, time.Second), withClock(clock.Now))
	t.Cleanup(func() { closeAllocator(t, a) })

	s, err := a.Open(nil, nil)
	require.NoError(t, err)
	port := s.Port()
	closeSession(t, s)

	stray := udpFrom(t, "127.0.0.1", port)
	for i := range 4 {
		_, err := stray.Write(packet(0, uint16(i), 0, uint32(i), false, make([]byte, 160)))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return a.DroppedIdle() == 4 }, 5*time.Second, 5*time.Millisecond)

	clock.Add(time.Second)
	next, err := a.Open(nil, nil) // no SDP, no trunk filter: it would count anything
	require.NoError(t, err)
	t.Cleanup(func() { closeSession(t, next) })
	require.Equal(t, port, next.Port())
	_, err = stray.Write(packet(0, 9, 0, 99, false, make([]byte, 160)))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return next.Stats().Packets == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, Stats{Packets: 1, Bytes: 172}, next.Stats(), "only what came after the call began")
}

// Released sockets are reused oldest first, and only after the
// quarantine; within it a free port of the range is bound instead, and
// only a full range reuses a socket early.
func TestReuseIsFirstInFirstOutAfterTheQuarantine(t *testing.T) {
	base := freeRange(t)
	clock := &fakeClock{now: time.Unix(1000, 0)}
	a := NewAllocator("127.0.0.1", base, base+5, WithReuse(3, 2*time.Second), withClock(clock.Now)) // base, +2, +4
	t.Cleanup(func() { closeAllocator(t, a) })

	s1, err := a.Open(nil, nil)
	require.NoError(t, err)
	s2, err := a.Open(nil, nil)
	require.NoError(t, err)
	require.Equal(t, []int{base, base + 2}, []int{s1.Port(), s2.Port()})
	closeSession(t, s1)
	closeSession(t, s2)

	clock.Add(time.Second) // within the quarantine
	s3, err := a.Open(nil, nil)
	require.NoError(t, err)
	require.Equal(t, base+4, s3.Port(), "a fresh port rather than one just released")
	s4, err := a.Open(nil, nil)
	require.NoError(t, err)
	require.Equal(t, base, s4.Port(), "the range is full: the oldest released, early")

	closeSession(t, s3) // idle now: base+2, base+4
	closeSession(t, s4) // and base
	clock.Add(2 * time.Second)
	var got []int
	for range 3 {
		s, err := a.Open(nil, nil)
		require.NoError(t, err)
		got = append(got, s.Port())
		defer closeSession(t, s)
	}
	require.Equal(t, []int{base + 2, base + 4, base}, got, "in the order they were released")
	_, err = a.Open(nil, nil)
	require.ErrorIs(t, err, ErrNoPorts)
}

// The pool never holds more sockets than the range has ports, keeps at
// most keep of them idle (the rest release their ports), and Close
// releases the idle ones.
func TestPoolIsBounded(t *testing.T) {
	base := freeRange(t)
	a := NewAllocator("127.0.0.1", base, base+3, WithReuse(1, 0)) // base, base+2
	s1, err := a.Open(nil, nil)
	require.NoError(t, err)
	s2, err := a.Open(nil, nil)
	require.NoError(t, err)
	_, err = a.Open(nil, nil)
	require.True(t, errors.Is(err, ErrNoPorts), "%v", err)

	closeSession(t, s1)
	closeSession(t, s2)
	require.Equal(t, 1, a.Idle(), "keep is 1")
	require.False(t, bindable(t, s1.Port()), "the kept socket holds its port")
	require.True(t, bindable(t, s2.Port()), "the one beyond keep released its port")

	require.NoError(t, a.Close())
	require.Zero(t, a.Idle())
	require.True(t, bindable(t, s1.Port()), "Close released the idle socket")
	_, err = a.Open(nil, nil)
	require.ErrorIs(t, err, ErrNoPorts, "closed")
	require.NoError(t, a.Close(), "twice is fine")
}

// Without reuse (keep 0) Close releases the port at once, as before.
func TestNoReuseReleasesThePort(t *testing.T) {
	base := freeRange(t)
	a := NewAllocator("127.0.0.1", base, base+1)
	s, err := a.Open(nil, nil)
	require.NoError(t, err)
	closeSession(t, s)
	require.Zero(t, a.Idle())
	require.True(t, bindable(t, s.Port()))
	require.NoError(t, a.Close())
}

// A session closed before it plays (the call ended right after its ACK)
// sends nothing: its socket may already be the next call's.
func TestPlayAfterCloseSendsNothing(t *testing.T) {
	base := freeRange(t)
	a := NewAllocator("127.0.0.1", base, base+1, WithReuse(1, time.Second))
	t.Cleanup(func() { closeAllocator(t, a) })
	s, err := a.Open(nil, nil)
	require.NoError(t, err)
	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, peer.Close()) })
	s.SetMedia(pcmu, peer.LocalAddr().(*net.UDPAddr).AddrPort(), true)
	closeSession(t, s)

	s.Play(Silence(time.Second))
	require.NoError(t, peer.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	_, _, err = peer.ReadFromUDPAddrPort(make([]byte, 1500))
	require.Error(t, err, "a closed session played")
}
