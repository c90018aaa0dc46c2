// Package rtp is the thin media anchor of the agent leg: it allocates a UDP
// port from the configured range for each call, reads what arrives on it
// until the call ends (statistics per RFC 3550, DTMF digits per RFC 4733)
// and plays the greeting or silence to the caller from the same port.
package rtp

import (
	"encoding/binary"
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
//
// With reuse on (WithReuse), a session's socket outlives it: Close hands
// the bound socket, with its reading goroutine, back to the allocator,
// which keeps up to keep of them idle and gives them out again oldest
// first, once they have been idle for the quarantine. That spares each
// call the socket's system calls (socket, setsockopt, bind, getsockname,
// close and the poller's two epoll_ctl) and a goroutine. A late packet of
// the previous call is not heard in the next one: while a socket is idle
// its reader drops what arrives; a socket is reused only after the
// quarantine (unless no other port of the range can be bound); and for a
// quarantine after it is reused, datagrams from the previous call's last
// source with its last SSRC are dropped (counted as foreign), so they can
// neither take the new call's latch nor reach its audio or digits.
type Allocator struct {
	host     string
	min, max int
	// keep is how many idle sockets are kept bound for reuse (0: none,
	// Close releases the port); quarantine is how long one stays idle
	// before it is given out again.
	keep       int
	quarantine time.Duration
	now        func() time.Time

	mu     sync.Mutex
	next   int
	idle   []*socket // oldest released first
	closed bool
	// dropped counts datagrams that reached an idle socket.
	dropped atomic.Uint64
}

// Option changes an Allocator.
type Option func(*Allocator)

// WithReuse keeps up to keep released sockets bound, each reused once it
// has been idle for quarantine. keep <= 0 turns reuse off.
func WithReuse(keep int, quarantine time.Duration) Option {
	return func(a *Allocator) { a.keep, a.quarantine = max(keep, 0), max(quarantine, 0) }
}

// withClock sets the clock the quarantine is measured on (tests).
func withClock(now func() time.Time) Option { return func(a *Allocator) { a.now = now } }

// NewAllocator returns an allocator binding on host.
func NewAllocator(host string, portMin, portMax int, opts ...Option) *Allocator {
	first := portMin + portMin%2
	a := &Allocator{host: host, min: first, max: portMax, next: first, now: time.Now}
	for _, o := range opts {
		o(a)
	}
	return a
}

// socket is one bound RTP port and the goroutine that reads it. The
// datagrams go to the session it is lent to; with none they are dropped.
type socket struct {
	conn    *net.UDPConn
	port    int
	done    chan struct{}  // closed when the reader has returned
	dropped *atomic.Uint64 // the allocator's count of datagrams no session took

	// mu is held while a datagram is handed to sess, so once detach
	// returns the session's callbacks are not running and never will.
	mu   sync.Mutex
	sess *Session
	// What the last session heard, for the next one's quarantine: its
	// last accepted source and SSRC, and when it was released.
	prevSrc  netip.AddrPort
	prevSSRC uint32
	prevOK   bool
	freedAt  time.Time
}

func (k *socket) read() {
	defer close(k.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := k.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return // closed
		}
		k.mu.Lock()
		if s := k.sess; s != nil {
			s.datagram(buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), time.Now())
		} else {
			k.dropped.Add(1)
		}
		k.mu.Unlock()
	}
}

// attach lends k to s; the previous session's source and SSRC stay
// filtered out for the quarantine.
func (k *socket) attach(s *Session, quarantine time.Duration, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.prevOK {
		s.stale = staleStream{src: k.prevSrc, ssrc: k.prevSSRC, until: now.Add(quarantine), set: true}
	}
	k.sess = s
}

// detach takes k back from its session, remembering what it last heard.
func (k *socket) detach(now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if s := k.sess; s != nil {
		s.mu.Lock()
		k.prevSrc, k.prevSSRC, k.prevOK = s.lastSrc, s.recv.ssrc, s.lastSrc.IsValid() && s.recv.started
		s.mu.Unlock()
	}
	k.sess, k.freedAt = nil, now
}

// close releases the port and waits for the reader.
func (k *socket) close() error {
	err := k.conn.Close()
	<-k.done
	if err != nil {
		return fmt.Errorf("close rtp port %d: %w", k.port, err)
	}
	return nil
}

// Open lends out a socket (an idle one past its quarantine, else a newly
// bound port) and starts handing what arrives on it to the new session;
// onDTMF (may be nil) gets each RFC 4733 digit, on the reading goroutine.
// allow (may be nil) says which sources besides the SDP's address may
// send the call's media: the call's trunk, so an SBC whose media comes
// from another address of its range (NAT) is heard. With allow nil and
// no SDP address yet, the session takes anything (tests, raw counting).
func (a *Allocator) Open(onDTMF func(DTMF), allow func(netip.Addr) bool) (*Session, error) {
	k, err := a.take()
	if err != nil {
		return nil, err
	}
	s := &Session{sock: k, conn: k.conn, port: k.port, alloc: a, onDTMF: onDTMF, allow: allow,
		recv: receiver{start: time.Now(), media: Media{PayloadType: -1, EventPayloadType: -1, ClockRate: 8000}}}
	k.attach(s, a.quarantine, a.now())
	return s, nil
}

// take returns an idle socket past its quarantine, else binds the next
// free port, else (the range is full) the oldest idle socket.
func (a *Allocator) take() (*socket, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, fmt.Errorf("%w: allocator closed", ErrNoPorts)
	}
	if len(a.idle) > 0 && a.now().Sub(a.idle[0].freedAt) >= a.quarantine {
		return a.popIdle(), nil
	}
	k, err := a.bind()
	if errors.Is(err, ErrNoPorts) && len(a.idle) > 0 {
		return a.popIdle(), nil // the range is full: reuse within the quarantine, filtered
	}
	return k, err
}

func (a *Allocator) popIdle() *socket {
	k := a.idle[0]
	a.idle[0] = nil
	a.idle = a.idle[1:]
	return k
}

// bind binds the next port of the range that is free; called with mu held.
func (a *Allocator) bind() (*socket, error) {
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
			continue // in use by another call, an idle socket or another process; try the next one
		}
		k := &socket{conn: conn, port: port, done: make(chan struct{}), dropped: &a.dropped}
		go k.read()
		return k, nil
	}
	return nil, fmt.Errorf("%w in %d-%d", ErrNoPorts, a.min, a.max)
}

// release takes k back from a closed session: kept idle when reuse is on
// and there is room, else closed.
func (a *Allocator) release(k *socket) error {
	k.detach(a.now())
	a.mu.Lock()
	if !a.closed && len(a.idle) < a.keep {
		a.idle = append(a.idle, k)
		a.mu.Unlock()
		return nil
	}
	a.mu.Unlock()
	return k.close()
}

// Idle is the number of sockets kept bound for reuse.
func (a *Allocator) Idle() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.idle)
}

// DroppedIdle is the number of datagrams that reached a socket while it
// was idle, between calls: dropped, heard by no call.
func (a *Allocator) DroppedIdle() uint64 { return a.dropped.Load() }

// Close releases every idle socket; sessions still open release theirs
// when they close, and Open fails from now on. It is safe to call more
// than once.
func (a *Allocator) Close() error {
	a.mu.Lock()
	idle := a.idle
	a.idle, a.closed = nil, true
	a.mu.Unlock()
	var errs []error
	for _, k := range idle {
		errs = append(errs, k.close())
	}
	return errors.Join(errs...)
}

// Session is one call's RTP socket: it receives the far end's RTP
// (statistics, RFC 4733 digits) and plays audio to it from the same port
// (symmetric RTP).
type Session struct {
	sock   *socket
	conn   *net.UDPConn // sock's
	port   int
	alloc  *Allocator
	onDTMF func(DTMF)
	allow  func(netip.Addr) bool
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
	closed  bool           // Close began: no more playing
	lastAt  time.Time      // when the last datagram arrived; zero before the first
	lastSrc netip.AddrPort // the source of the last accepted datagram
	// stale is the previous call's stream on a reused socket, dropped
	// until its time is up.
	stale staleStream

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

// staleStream is the previous session's last source and SSRC on a
// reused socket.
type staleStream struct {
	src   netip.AddrPort
	ssrc  uint32
	until time.Time
	set   bool
}

// matches reports whether a datagram from src is the previous call's RTP.
func (st *staleStream) matches(b []byte, src netip.AddrPort, now time.Time) bool {
	if !st.set {
		return false
	}
	if !now.Before(st.until) {
		st.set = false
		return false
	}
	return src == st.src && len(b) >= 12 && b[0]>>6 == 2 && binary.BigEndian.Uint32(b[8:12]) == st.ssrc
}

// datagram takes one datagram that arrived from src, on the socket's
// reading goroutine.
func (s *Session) datagram(b []byte, src netip.AddrPort, now time.Time) {
	s.mu.Lock()
	if s.stale.matches(b, src, now) || !s.accept(src, now) {
		s.foreign++
		s.mu.Unlock()
		return
	}
	s.lastAt, s.lastSrc = now, src
	d, ok, audio := s.recv.packet(b, now)
	codec := s.recv.media.Codec
	s.mu.Unlock()
	if ok && s.onDTMF != nil {
		s.onDTMF(d)
	}
	if sink := s.sink.Load(); sink != nil && len(audio) > 0 {
		(*sink)(audio, codec)
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

// Close stops playing and gives the socket back (kept for reuse, or the
// port released); once it returns no callback of the session runs. It is
// safe to call more than once.
func (s *Session) Close() (Stats, error) {
	var err error
	s.once.Do(func() {
		s.mu.Lock()
		p := s.player
		s.closed = true
		s.mu.Unlock()
		if p != nil {
			p.stop()
		}
		err = s.alloc.release(s.sock)
	})
	return s.Stats(), err
}
