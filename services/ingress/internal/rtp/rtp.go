// Package rtp is the thin media anchor of the agent leg: it allocates a UDP
// port from the configured range for each call, reads what arrives on it
// until the call ends (statistics per RFC 3550, DTMF digits per RFC 4733)
// and plays the greeting or silence to the caller from the same port.
package rtp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoPorts means every port of the range is in use.
var ErrNoPorts = errors.New("no free RTP port")

// Allocator hands out even ports of [min, max] (RTCP would take the odd
// port above), starting after the last one given out.
type Allocator struct {
	host     string
	min, max int

	mu   sync.Mutex
	next int
}

// NewAllocator returns an allocator binding on host.
func NewAllocator(host string, portMin, portMax int) *Allocator {
	first := portMin + portMin%2
	return &Allocator{host: host, min: first, max: portMax, next: first}
}

// Open binds the next free port and starts reading what arrives on it;
// onDTMF (may be nil) gets each RFC 4733 digit, on the reading goroutine.
// allow (may be nil) says which sources besides the SDP's address may
// send the call's media: the call's trunk, so an SBC whose media comes
// from another address of its range (NAT) is heard. With allow nil and
// no SDP address yet, the session takes anything (tests, raw counting).
func (a *Allocator) Open(onDTMF func(DTMF), allow func(netip.Addr) bool) (*Session, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.max < a.min {
		return nil, ErrNoPorts
	}
	n := (a.max-a.min)/2 + 1
	for range n {
		port := a.next
		a.next += 2
		if a.next > a.max {
			a.next = a.min
		}
		addr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(a.host, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("rtp address %s:%d: %w", a.host, port, err)
		}
		conn, err := net.ListenUDP("udp", addr)
		if err != nil {
			continue // in use by another call or process; try the next one
		}
		s := &Session{conn: conn, port: port, onDTMF: onDTMF, allow: allow, done: make(chan struct{}),
			recv: receiver{start: time.Now(), media: Media{PayloadType: -1, EventPayloadType: -1, ClockRate: 8000}}}
		go s.read()
		return s, nil
	}
	return nil, fmt.Errorf("%w in %d-%d", ErrNoPorts, a.min, a.max)
}

// Session is one call's RTP socket: it receives the far end's RTP
// (statistics, RFC 4733 digits) and plays audio to it from the same port
// (symmetric RTP).
type Session struct {
	conn   *net.UDPConn
	port   int
	onDTMF func(DTMF)
	allow  func(netip.Addr) bool
	done   chan struct{}
	once   sync.Once

	mu     sync.Mutex
	recv   receiver
	remote netip.AddrPort // where to send; zero until known
	latch  netip.AddrPort // the far end's source, once it sends
	// latchAt is when the latched source last sent; cand and candN are
	// another allowed source and its packets since, for a re-latch.
	latchAt time.Time
	cand    netip.AddrPort
	candN   int
	foreign uint64 // datagrams dropped: not from the latched source
	send    bool   // the direction allows sending
	player  *player
	lastAt  time.Time // when the last datagram arrived; zero before the first

	sink atomic.Pointer[func(payload []byte, codec string)]
}

// SetAudioSink has every audio payload the far end sends (from the
// latched source, in the negotiated codec) passed to sink, on the
// reading goroutine, which it must not hold up; the payload is only
// valid during the call. Nil stops it.
func (s *Session) SetAudioSink(sink func(payload []byte, codec string)) {
	if sink == nil {
		s.sink.Store(nil)
		return
	}
	s.sink.Store(&sink)
}

// Port is the local port RTP is received on.
func (s *Session) Port() int { return s.port }

// Stats returns the counts so far.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.recv.stats()
	st.Foreign = s.foreign
	return st
}

// LastPacket is when the last datagram arrived on the port; zero before
// the first.
func (s *Session) LastPacket() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastAt
}

// SetMedia applies an offer/answer: the codec, where the far end receives
// RTP, and whether Baton may send (direction sendrecv or sendonly).
func (s *Session) SetMedia(m Media, remote netip.AddrPort, send bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recv.media = m
	if remote != s.remote {
		s.remote, s.latch = remote, netip.AddrPort{}
	}
	s.send = send
}

// target is where audio goes: the address RTP comes from once the far end
// sends (symmetric RTP through NAT), else the SDP address. ok is false on
// hold or when no address is known.
func (s *Session) target() (netip.AddrPort, uint8, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	to := s.remote
	if s.latch.IsValid() {
		to = s.latch
	}
	if !s.send || !to.IsValid() || to.Addr().IsUnspecified() || to.Port() == 0 {
		return netip.AddrPort{}, 0, "", false
	}
	return to, uint8(s.recv.media.PayloadType), s.recv.media.Codec, true
}

// Re-latching: the latched source must have been silent this long, and
// the new one must have sent this many packets meanwhile (a NAT rebinding
// or an SBC moving the stream), so that a stray or forged packet never
// takes the call's audio.
const (
	relatchQuiet   = time.Second
	relatchPackets = 10
)

func (s *Session) read() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return // closed
		}
		now := time.Now()
		src := netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		s.mu.Lock()
		if !s.accept(src, now) {
			s.foreign++
			s.mu.Unlock()
			continue
		}
		s.lastAt = now
		d, ok, audio := s.recv.packet(buf[:n], now)
		codec := s.recv.media.Codec
		s.mu.Unlock()
		if ok && s.onDTMF != nil {
			s.onDTMF(d)
		}
		if sink := s.sink.Load(); sink != nil && len(audio) > 0 {
			(*sink)(audio, codec)
		}
	}
}

// accept says whether a datagram from src is the call's media, latching
// to the first allowed source and re-latching only on sustained traffic
// from another while the latched one is silent. A dropped datagram counts
// for nothing: not audio, not a digit, not the media timeout's clock.
// Called with mu held.
func (s *Session) accept(src netip.AddrPort, now time.Time) bool {
	if !s.remote.IsValid() && s.allow == nil {
		return true // no SDP and no trunk to check against: unfiltered
	}
	allowed := s.remote.IsValid() && src.Addr() == s.remote.Addr().Unmap() || s.allow != nil && s.allow(src.Addr())
	switch {
	case !allowed:
		return false
	case !s.remote.IsValid():
		return true // before the answer's SDP: allowed, but nothing to latch to yet
	case !s.latch.IsValid() || src == s.latch:
		s.latch, s.latchAt, s.candN = src, now, 0
		return true
	}
	if src != s.cand {
		s.cand, s.candN = src, 0
	}
	s.candN++
	if s.candN >= relatchPackets && now.Sub(s.latchAt) >= relatchQuiet {
		s.latch, s.latchAt, s.candN = src, now, 0
		return true
	}
	return false
}

// Close stops playing, releases the port and waits for the reader; it is
// safe to call more than once.
func (s *Session) Close() (Stats, error) {
	var err error
	s.once.Do(func() {
		s.mu.Lock()
		p := s.player
		s.mu.Unlock()
		if p != nil {
			p.stop()
		}
		err = s.conn.Close()
	})
	<-s.done
	if err != nil {
		return s.Stats(), fmt.Errorf("close rtp port %d: %w", s.port, err)
	}
	return s.Stats(), nil
}
