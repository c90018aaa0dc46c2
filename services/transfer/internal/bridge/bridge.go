// Package bridge is the media bridge of a warm transfer: two UDP sockets,
// one facing the caller and one facing the destination, and a loop per
// socket that forwards each RTP packet to the other leg.
//
// Each outgoing stream keeps one SSRC and continuous sequence numbers and
// timestamps whatever the source does (a new SSRC after a re-INVITE, a
// switch of the media source): the rewriter re-bases on every source
// change and marks the first packet. Each leg latches to the port its
// packets really come from (symmetric RTP, so NAT does not matter) at the
// address its SDP signalled, and moves to another port of that address
// only on sustained traffic while the latched one is silent (a NAT
// rebinding); every other source is dropped and counted. Before the first
// packet, media goes to the SDP address.
// A leg may use SRTP (SDES keys, pion/srtp): packets are decrypted as they
// arrive and encrypted as they leave. Per-direction statistics follow RFC
// 3550 (loss from sequence numbers, interarrival jitter). Play sends
// prepared frames (a whisper) out of one leg before the bridge is active,
// as the start of that leg's outgoing stream. RTCP, when enabled, is
// generated per leg and terminated, not relayed (rtcp.go).
package bridge

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/transport/v5/replaydetector"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/pump"
	"github.com/baton-voice/baton/services/transfer/internal/sdp"
)

// maxPacket is the receive buffer: an MTU plus room for SRTP tags.
const maxPacket = 1500

// ErrNoPort means no media port could be bound in the configured range.
var ErrNoPort = errors.New("no free media port")

// Ports is where media sockets are bound. One Ports is shared by all the
// bridges of a process (use it by pointer).
type Ports struct {
	// Host is the local IP to bind.
	Host netip.Addr
	// Min and Max bound the port range; 0 and 0 let the OS choose.
	Min, Max int
	// RTCPInterval is how often each leg gets an RTCP report (rtcp.go);
	// 0 turns RTCP off (no RTCP sockets).
	RTCPInterval time.Duration
	// Pump reads the legs' RTP sockets (one per process, a worker per
	// core); nil gives each bridge a one-worker pump of its own.
	Pump *pump.Pump
	// next spreads allocations over the range.
	next atomic.Uint32
}

// Side names a leg.
type Side int

// The two legs.
const (
	Caller Side = iota
	Destination
)

func (s Side) String() string {
	if s == Caller {
		return "caller"
	}
	return "destination"
}

// Bridge relays media between the caller and destination legs.
type Bridge struct {
	legs   [2]*Leg
	active atomic.Bool
	// started is when Activate was called (unix nanos).
	started atomic.Int64
	wg      sync.WaitGroup
	closed  atomic.Bool
	pump    *pump.Pump
	ownPump bool
	codec   atomic.Pointer[string]
	// done closes with the bridge (ends the report loop).
	done  chan struct{}
	cname string
}

// Leg is one side of the bridge: its socket, where it sends, its SRTP
// contexts, and the statistics of what it received.
type Leg struct {
	side Side
	sock *pump.Socket
	// h is the receive path's header, used only on the pump's worker.
	h rtp.Header
	// remote is where packets for this leg go: the SDP address, then the
	// latched source.
	remote  atomic.Pointer[netip.AddrPort]
	latched atomic.Bool
	// signalled is the IP address of the leg's SDP: only it may latch the
	// leg (any port of it, for NAT). Nil until an SDP names one.
	signalled atomic.Pointer[netip.Addr]
	// latchAt is when the latched source last sent (unix nanos); cand is
	// another port of the signalled address and candN its packets since
	// the latched source last sent, for a re-latch (NAT rebinding). Used
	// on the pump's worker only, like h.
	latchAt int64
	cand    netip.AddrPort
	candN   int
	// relatches counts the re-latches to a new port.
	relatches atomic.Uint64
	// clockRate is the RTP clock of the leg's codec (jitter, re-basing).
	clockRate atomic.Uint32
	// srtpIn decrypts what the leg receives; srtpOut encrypts what it
	// sends. Set before media flows (SetRemote), read by one loop each.
	srtpIn, srtpOut atomic.Pointer[srtp.Context]
	profile         atomic.Pointer[string]
	// lastRecv is when the leg last received a valid packet (unix nanos).
	lastRecv atomic.Int64
	// muted is set while the leg's peer does not receive (it holds:
	// sendonly or inactive): nothing is sent to it.
	muted atomic.Bool
	stats receiveStats
	out   rewriter
	// sent is what the bridge sent this leg (sender reports).
	sent sendState
	// rtcp is nil when RTCP is off.
	rtcp *rtcpState
}

// New binds the two legs' sockets in ports.
func New(ports *Ports) (*Bridge, error) {
	b := &Bridge{done: make(chan struct{}), cname: newCNAME(), pump: ports.Pump}
	if b.pump == nil {
		p, err := pump.New(1, pump.DefaultLinger)
		if err != nil {
			return nil, err
		}
		b.pump, b.ownPump = p, true
	}
	for i := range b.legs {
		var sock *pump.Socket
		var rtcpConn *net.UDPConn
		var err error
		if ports.RTCPInterval > 0 {
			sock, rtcpConn, err = listenPair(ports)
		} else {
			sock, err = listen(ports)
		}
		if err != nil {
			b.Close()
			return nil, err
		}
		b.legs[i] = &Leg{side: Side(i), sock: sock, out: newRewriter()}
		b.legs[i].clockRate.Store(8000)
		if rtcpConn != nil {
			b.legs[i].rtcp = &rtcpState{conn: rtcpConn}
		}
	}
	for i := range b.legs {
		from, to := b.legs[i], b.legs[1-i]
		if err := b.pump.Add(from.sock, func(pkt []byte, src netip.AddrPort, now time.Time) {
			b.forward(from, to, pkt, src, now)
		}); err != nil {
			b.Close()
			return nil, fmt.Errorf("media bridge: %w", err)
		}
		if b.legs[i].rtcp != nil {
			b.wg.Go(func() { b.readRTCP(b.legs[i]) })
		}
	}
	if ports.RTCPInterval > 0 {
		b.wg.Go(func() { b.reportLoop(ports.RTCPInterval) })
	}
	return b, nil
}

func listen(p *Ports) (*pump.Socket, error) {
	if p.Min == 0 && p.Max == 0 {
		conn, err := pump.Listen(netip.AddrPortFrom(p.Host, 0))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoPort, err)
		}
		return conn, nil
	}
	// Even ports only (RFC 3550 11: RTP even, RTCP odd).
	lo, hi := (p.Min+1)&^1, p.Max
	n := (hi-lo)/2 + 1
	if n <= 0 {
		return nil, fmt.Errorf("%w: empty range %d-%d", ErrNoPort, p.Min, p.Max)
	}
	start := int(p.next.Add(1)) % n
	for i := range n {
		port := lo + 2*((start+i)%n)
		conn, err := pump.Listen(netip.AddrPortFrom(p.Host, uint16(port)))
		if err == nil {
			return conn, nil
		}
	}
	return nil, fmt.Errorf("%w in %d-%d", ErrNoPort, p.Min, p.Max)
}

// Leg returns one side.
func (b *Bridge) Leg(s Side) *Leg { return b.legs[s] }

// Port is the leg's local media port.
func (l *Leg) Port() int { return l.sock.Port() }

// Remote is where the leg currently sends.
func (l *Leg) Remote() (netip.AddrPort, bool) {
	r := l.remote.Load()
	if r == nil {
		return netip.AddrPort{}, false
	}
	return *r, true
}

// Keys are a leg's SRTP keys: Local encrypts what Baton sends, Remote
// decrypts what the peer sends. Zero Keys means plain RTP.
type Keys struct {
	Local, Remote sdp.Crypto
}

// SetRemote sets the leg's peer from its SDP: the address media goes to
// until a packet latches the leg, the codec's clock rate, and SRTP keys.
func (l *Leg) SetRemote(addr netip.AddrPort, clockRate uint32, keys Keys) error {
	if keys.Local.Suite != "" {
		profile, err := profileOf(keys.Local.Suite)
		if err != nil {
			return err
		}
		if keys.Remote.Suite != keys.Local.Suite {
			return fmt.Errorf("srtp: local suite %s, remote %s", keys.Local.Suite, keys.Remote.Suite)
		}
		out, err := contextOf(keys.Local, profile)
		if err != nil {
			return err
		}
		// What the peer sends is checked for replays (RFC 3711 3.3.2); a
		// replayed packet is counted and dropped like a forged one.
		in, err := contextOf(keys.Remote, profile, srtp.SRTPReplayDetectorFactory(func() replaydetector.ReplayDetector {
			return newCountingDetector(&l.stats.replayed)
		}))
		if err != nil {
			return err
		}
		l.srtpOut.Store(out)
		l.srtpIn.Store(in)
		if l.rtcp != nil {
			// SRTCP gets its own contexts: a Context is not safe for
			// concurrent use, and RTCP runs on its own goroutines.
			rout, err := contextOf(keys.Local, profile)
			if err != nil {
				return err
			}
			rin, err := contextOf(keys.Remote, profile, srtp.SRTCPReplayProtection(ReplayWindow))
			if err != nil {
				return err
			}
			l.rtcp.mu.Lock()
			l.rtcp.in, l.rtcp.out = rin, rout
			l.rtcp.mu.Unlock()
		}
		suite := keys.Local.Suite
		l.profile.Store(&suite)
	}
	if clockRate > 0 {
		l.clockRate.Store(clockRate)
	}
	if !l.latched.Load() {
		l.remote.Store(&addr)
	}
	l.signal(addr)
	if l.rtcp != nil && addr.Port() < 65535 {
		l.SetRTCP(netip.AddrPortFrom(addr.Addr(), addr.Port()+1))
	}
	return nil
}

// signal records the SDP's address as the only one that may latch the
// leg. An unspecified address (0.0.0.0, hold) keeps the one before.
func (l *Leg) signal(addr netip.AddrPort) {
	ip := addr.Addr().Unmap()
	if !ip.IsValid() || ip.IsUnspecified() {
		return
	}
	l.signalled.Store(&ip)
}

func profileOf(suite string) (srtp.ProtectionProfile, error) {
	switch suite {
	case "AES_CM_128_HMAC_SHA1_80":
		return srtp.ProtectionProfileAes128CmHmacSha1_80, nil
	case "AEAD_AES_128_GCM":
		return srtp.ProtectionProfileAeadAes128Gcm, nil
	}
	return 0, fmt.Errorf("srtp suite %q not supported", suite)
}

// ReplayWindow is how many packets back an SRTP or SRTCP index is
// remembered to refuse a replay (RFC 3711 3.3.2 asks for at least 64).
const ReplayWindow = 128

// maxSRTPIndex is the largest SRTP packet index: a 32-bit rollover counter
// and a 16-bit sequence number.
const maxSRTPIndex = 1<<48 - 1

// countingDetector counts the packets its replay detector refuses.
type countingDetector struct {
	replaydetector.ReplayDetector
	rejected *atomic.Uint64
}

// newCountingDetector wraps pion's sliding-window detector. pion's own
// offers a token interface (CheckSeq, Accept) that srtp prefers: without
// it srtp falls back to Check, whose accept closure costs an allocation a
// packet. The wrapper offers it whenever the detector does.
func newCountingDetector(rejected *atomic.Uint64) replaydetector.ReplayDetector {
	d := replaydetector.New(ReplayWindow, maxSRTPIndex)
	c := countingDetector{ReplayDetector: d, rejected: rejected}
	if tokens, ok := d.(replaydetector.CheckAccepter); ok {
		return countingTokens{countingDetector: c, tokens: tokens}
	}
	return c
}

func (d countingDetector) Check(index uint64) (func() bool, bool) {
	accept, ok := d.ReplayDetector.Check(index)
	if !ok {
		d.rejected.Add(1)
	}
	return accept, ok
}

// countingTokens is countingDetector with the token interface.
type countingTokens struct {
	countingDetector
	tokens replaydetector.CheckAccepter
}

// CheckSeq is Check without the closure.
func (d countingTokens) CheckSeq(index uint64) replaydetector.Token {
	tok := d.tokens.CheckSeq(index)
	if !tok.Passed() {
		d.rejected.Add(1)
	}
	return tok
}

// Accept marks a checked packet received.
func (d countingTokens) Accept(tok replaydetector.Token) bool { return d.tokens.Accept(tok) }

func contextOf(c sdp.Crypto, profile srtp.ProtectionProfile, opts ...srtp.ContextOption) (*srtp.Context, error) {
	k, s, ok := sdp.KeyLen(c.Suite)
	if !ok || len(c.Key) != k+s {
		return nil, fmt.Errorf("srtp %s: key of %d bytes", c.Suite, len(c.Key))
	}
	ctx, err := srtp.CreateContext(c.Key[:k], c.Key[k:], profile, opts...)
	if err != nil {
		return nil, fmt.Errorf("srtp %s context: %w", c.Suite, err)
	}
	return ctx, nil
}

// SetCodec names the codec for the statistics.
func (b *Bridge) SetCodec(name string) { b.codec.Store(&name) }

// Activate starts forwarding both ways; before it, packets are received
// (and latch their leg) but dropped.
func (b *Bridge) Activate() {
	now := time.Now().UnixNano()
	for _, l := range b.legs {
		l.lastRecv.Store(now)
	}
	b.started.Store(now)
	b.active.Store(true)
}

// ErrActive means Play was called on an active bridge.
var ErrActive = errors.New("bridge already active")

// Ptime is the packet interval of Play.
const Ptime = 20 * time.Millisecond

// Play sends frames (payloads of payload type pt, samples RTP clock ticks
// each) out of the leg side to its peer, one every Ptime, as the start of
// the stream that leg sends: its SSRC, sequence numbers and timestamps
// continue into the bridged media that follows (which starts a new source:
// marker bit, re-based). SRTP legs encrypt. Call it before Activate, while
// nothing else writes that stream. It returns the packets sent, early
// when ctx ends.
func (b *Bridge) Play(ctx context.Context, side Side, pt uint8, samples uint32, frames [][]byte) (int, error) {
	if b.active.Load() {
		return 0, ErrActive
	}
	l := b.legs[side]
	dst, ok := l.Remote()
	if !ok {
		return 0, fmt.Errorf("play to the %s: no remote address", side)
	}
	var whisperSSRC [4]byte
	_, _ = rand.Read(whisperSSRC[:])
	h := rtp.Header{Version: 2, PayloadType: pt, SSRC: binary.BigEndian.Uint32(whisperSSRC[:])}
	enc := make([]byte, 0, maxPacket+32)
	tick := time.NewTicker(Ptime)
	defer tick.Stop()
	sent := 0
	for i, f := range frames {
		if i > 0 {
			select {
			case <-ctx.Done():
				return sent, ctx.Err()
			case <-tick.C:
			}
		}
		h.SequenceNumber, h.Timestamp, h.Marker = uint16(i), uint32(i)*samples, false
		pkt, err := (&rtp.Packet{Header: h, Payload: f}).Marshal()
		if err != nil {
			return sent, fmt.Errorf("play: %w", err)
		}
		hh := h
		l.out.rewrite(pkt, &hh, time.Now(), l.clockRate.Load())
		if out := l.srtpOut.Load(); out != nil {
			if pkt, err = out.EncryptRTP(enc[:0], pkt, &hh); err != nil {
				return sent, fmt.Errorf("play: srtp: %w", err)
			}
		}
		if err := l.sock.WriteTo(pkt, dst); err != nil {
			return sent, fmt.Errorf("play to the %s: %w", side, err)
		}
		l.sent.add(len(f), hh.Timestamp, time.Now())
		sent++
	}
	// What follows (the bridged media) is a new source.
	l.out.fresh = true
	return sent, nil
}

// Idle returns the first leg that received nothing for d since the bridge
// was activated, if any; legs in ignore (a peer that put the call on
// hold) are not watched.
func (b *Bridge) Idle(now time.Time, d time.Duration, ignore ...Side) (Side, bool) {
	if !b.active.Load() {
		return 0, false
	}
	for _, l := range b.legs {
		if slices.Contains(ignore, l.side) {
			continue
		}
		if now.Sub(time.Unix(0, l.lastRecv.Load())) > d {
			return l.side, true
		}
	}
	return 0, false
}

// forward relays one packet from received to to. It runs on the pump's
// worker, never twice at once for one leg; pkt is the pump's buffer, with
// pump.Tailroom to spare, and is decrypted, rewritten and encrypted in
// place, so a leg needs no buffers of its own.
func (b *Bridge) forward(from, to *Leg, pkt []byte, src netip.AddrPort, now time.Time) {
	h := &from.h
	if in := from.srtpIn.Load(); in != nil {
		out, err := in.DecryptRTP(pkt[:0], pkt, h)
		if err != nil {
			// A replay was counted by the replay detector.
			if errors.Is(err, srtp.ErrFailedToVerifyAuthTag) {
				from.stats.unauthentic.Add(1)
			}
			from.stats.dropped.Add(1)
			return
		}
		pkt = out
	} else if _, err := h.Unmarshal(pkt); err != nil {
		from.stats.dropped.Add(1)
		return
	}
	// Latch only to packets that parsed (and authenticated).
	if !from.accept(src, now) {
		from.stats.dropped.Add(1)
		return
	}
	from.lastRecv.Store(now.UnixNano())
	from.stats.record(h, len(pkt), now, from.clockRate.Load())
	dst, ok := to.Remote()
	if !b.active.Load() || !ok {
		from.stats.dropped.Add(1)
		return
	}
	if to.muted.Load() {
		from.stats.held.Add(1)
		return
	}
	to.out.rewrite(pkt, h, now, to.clockRate.Load())
	plainLen := len(pkt)
	if enc := to.srtpOut.Load(); enc != nil {
		e, err := enc.EncryptRTP(pkt[:0], pkt, h)
		if err != nil {
			from.stats.dropped.Add(1)
			return
		}
		pkt = e
	}
	if err := to.sock.WriteTo(pkt, dst); err != nil {
		from.stats.dropped.Add(1)
		return
	}
	from.stats.forwarded.Add(1)
	if to.rtcp != nil {
		to.sent.add(plainLen-h.MarshalSize(), h.Timestamp, now)
	}
}

// Held is how many packets from this leg were not forwarded because the
// other leg's peer held (SetReceiving false).
func (l *Leg) Held() uint64 { return l.stats.held.Load() }

// SetReceiving says whether the leg's peer receives media (its SDP
// direction is sendrecv or recvonly). While it does not (hold: sendonly,
// inactive), nothing is sent to it (RFC 3264 5.1: a sendonly stream's
// peer must not be sent media); what would have gone is counted as held.
func (l *Leg) SetReceiving(on bool) { l.muted.Store(!on) }

// Receiving reports whether the leg's peer is sent media (SetReceiving).
func (l *Leg) Receiving() bool { return !l.muted.Load() }

// Move points the leg at a new address (a re-INVITE moved the peer's
// media): packets go there until the leg latches again to the first
// source it hears from.
func (l *Leg) Move(addr netip.AddrPort) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	l.signal(addr)
	l.remote.Store(&addr)
	l.latched.Store(false)
	if l.rtcp != nil && addr.Port() < 65535 {
		l.SetRTCP(netip.AddrPortFrom(addr.Addr(), addr.Port()+1))
	}
}

// Re-latching: once a leg is latched, another port of its signalled
// address (a NAT rebinding, an SBC moving the stream) takes it over only
// after the latched source has been silent this long and the new port has
// sent this many packets since the latched source last did, as ingress's
// media does: a burst of forged or stray packets from a new port never
// takes the call's audio, nor do packets sent while the caller talks.
const (
	RelatchQuiet   = time.Second
	RelatchPackets = 10
)

// accept latches the leg to the first source it hears from at the
// address its SDP signalled (any port: NAT) and then accepts only that
// source, or another port of the signalled address once the latched
// source has been silent for RelatchQuiet and that port has sent
// RelatchPackets packets since the latched source last did (a re-latch,
// counted). Every other packet is counted as
// foreign: before, the first packet from anywhere took the leg, and with
// it the caller's audio.
func (l *Leg) accept(src netip.AddrPort, now time.Time) bool {
	sig := l.signalled.Load()
	if l.latched.Load() {
		r := l.remote.Load()
		if r != nil && *r == src {
			// The latched source talks: a candidate starts over.
			l.latchAt, l.candN = now.UnixNano(), 0
			return true
		}
		if sig == nil || src.Addr().Unmap() != *sig {
			l.stats.foreign.Add(1)
			return false
		}
		if src != l.cand {
			l.cand, l.candN = src, 0
		}
		l.candN++
		if l.candN < RelatchPackets || now.UnixNano()-l.latchAt < int64(RelatchQuiet) {
			l.stats.foreign.Add(1)
			return false
		}
		l.relatches.Add(1)
	} else if sig != nil && src.Addr().Unmap() != *sig {
		l.stats.foreign.Add(1)
		return false
	}
	// A copy of its own: storing &src would move src to the heap on every
	// call, latched or not (one allocation per packet).
	latched := netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	l.remote.Store(&latched)
	l.latched.Store(true)
	l.latchAt, l.cand, l.candN = now.UnixNano(), netip.AddrPort{}, 0
	return true
}

// Relatches is how many times the leg moved to another port of its
// signalled address after sustained traffic from it (NAT rebinding).
func (l *Leg) Relatches() uint64 { return l.relatches.Load() }

// Drops are the packets a leg received and did not forward because SRTP
// refused them.
type Drops struct {
	// Unauthentic failed SRTP authentication (a tampered payload or tag,
	// a wrong key).
	Unauthentic uint64
	// Replayed repeated an SRTP index already received (or older than
	// the replay window).
	Replayed uint64
	// Foreign came from a source the leg is not latched to (another
	// address, or another port of the signalled one before it re-latched
	// the leg), or, before it latched, from an address its SDP did not
	// signal.
	Foreign uint64
}

// Drops returns the leg's SRTP drops so far (they are part of its
// statistics' dropped count).
func (l *Leg) Drops() Drops {
	return Drops{Unauthentic: l.stats.unauthentic.Load(), Replayed: l.stats.replayed.Load(), Foreign: l.stats.foreign.Load()}
}

// Stats returns the statistics so far.
func (b *Bridge) Stats() *batonv1.BridgeStats {
	s := &batonv1.BridgeStats{
		CallerToDestination: b.legs[Caller].stats.snapshot(),
		DestinationToCaller: b.legs[Destination].stats.snapshot(),
	}
	if c := b.codec.Load(); c != nil {
		s.Codec = *c
	}
	if p := b.legs[Caller].profile.Load(); p != nil {
		s.CallerSrtp = *p
	}
	if p := b.legs[Destination].profile.Load(); p != nil {
		s.DestinationSrtp = *p
	}
	return s
}

// Since is when the bridge was activated; zero before.
func (b *Bridge) Since() time.Time {
	if n := b.started.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Close releases both sockets and waits for the loops.
func (b *Bridge) Close() {
	if b.closed.Swap(true) {
		return
	}
	close(b.done)
	// Both legs leave the pump before either socket is closed: a
	// handler of one leg writes to the other's socket, and a closed
	// descriptor's number may be reused at once. Once Remove returns, no
	// handler of that leg runs.
	for _, l := range b.legs {
		if l != nil {
			b.pump.Remove(l.sock)
		}
	}
	for _, l := range b.legs {
		if l != nil {
			_ = l.sock.Close()
			if l.rtcp != nil {
				_ = l.rtcp.conn.Close()
			}
		}
	}
	if b.ownPump {
		_ = b.pump.Close()
	}
	b.wg.Wait()
}
