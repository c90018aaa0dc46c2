package bridge

import (
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"

	"github.com/baton-voice/baton/services/transfer/internal/pump"
)

// RTCP is generated, not relayed: each leg is its own RTP session (the
// bridge rewrites SSRCs, sequence numbers and timestamps, so the far end's
// reports would describe a stream the other side never saw). Every
// RTCPInterval (randomised 0.5-1.5x, RFC 3550 6.2) a leg gets a compound
// packet: a sender report about the stream the bridge sends it (its SSRC,
// NTP and RTP time, packet and octet counts) or, before anything was sent,
// a receiver report; a reception report block about the stream received
// from that leg (fraction and cumulative loss, extended highest sequence,
// jitter, LSR/DLSR from the peer's last sender report); and an SDES CNAME.
// The peer's own reports end at the bridge: their SR time feeds LSR/DLSR
// and their report blocks about our SSRC give the round-trip time. SRTP
// legs use SRTCP (their own contexts, same keys).

// rtcpState is a leg's RTCP: its socket, where reports go, SRTCP, and
// what the peer reported.
type rtcpState struct {
	conn    *net.UDPConn
	mu      sync.Mutex
	remote  netip.AddrPort
	latched bool
	in, out *srtp.Context
	// lsr is the middle 32 bits of the peer's last SR NTP time; lsrAt when
	// it arrived.
	lsr      uint32
	lsrAt    time.Time
	rtt      time.Duration
	received uint64
	sent     uint64
	// prior* are RFC 3550 A.3's interval counters (fraction lost).
	expectedPrior, receivedPrior uint64
}

// sendState is what a leg's outgoing stream sent, for sender reports.
type sendState struct {
	mu      sync.Mutex
	packets uint32
	octets  uint32
	lastTS  uint32
	lastAt  time.Time
}

func (s *sendState) add(payload int, ts uint32, now time.Time) {
	s.mu.Lock()
	s.packets++
	s.octets += uint32(payload)
	s.lastTS, s.lastAt = ts, now
	s.mu.Unlock()
}

// listenPair binds an RTP socket on an even port and its RTCP socket on
// the next one.
func listenPair(p *Ports) (rtpSock *pump.Socket, rtcpConn *net.UDPConn, err error) {
	if p.Min == 0 && p.Max == 0 {
		for range 64 {
			c, err := listen(p)
			if err != nil {
				return nil, nil, err
			}
			port := c.Port()
			if port%2 == 0 && port < 65535 {
				r, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.Host, uint16(port+1))))
				if err == nil {
					return c, r, nil
				}
			}
			_ = c.Close()
		}
		return nil, nil, errors.Join(ErrNoPort, errors.New("no even/odd port pair"))
	}
	n := (p.Max - (p.Min+1)&^1) / 2
	for range n + 1 {
		c, err := listen(p)
		if err != nil {
			return nil, nil, err
		}
		port := c.Port()
		r, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.Host, uint16(port+1))))
		if err == nil {
			return c, r, nil
		}
		_ = c.Close()
	}
	return nil, nil, errors.Join(ErrNoPort, errors.New("no even/odd port pair in range"))
}

// RTCPPort is the leg's local RTCP port; 0 without RTCP.
func (l *Leg) RTCPPort() int {
	if l.rtcp == nil {
		return 0
	}
	return l.rtcp.conn.LocalAddr().(*net.UDPAddr).Port
}

// SetRTCP sets where the leg's RTCP goes when the peer's SDP names it
// (a=rtcp, RFC 3605); otherwise it is the RTP port + 1.
func (l *Leg) SetRTCP(addr netip.AddrPort) {
	if l.rtcp == nil {
		return
	}
	l.rtcp.mu.Lock()
	if !l.rtcp.latched {
		l.rtcp.remote = addr
	}
	l.rtcp.mu.Unlock()
}

// RTT is the round-trip time to the leg's peer from its last report about
// our stream; 0 when unknown.
func (l *Leg) RTT() time.Duration {
	if l.rtcp == nil {
		return 0
	}
	l.rtcp.mu.Lock()
	defer l.rtcp.mu.Unlock()
	return l.rtcp.rtt
}

// RTCPCounts are the RTCP packets sent to and received from the leg.
func (l *Leg) RTCPCounts() (sent, received uint64) {
	if l.rtcp == nil {
		return 0, 0
	}
	l.rtcp.mu.Lock()
	defer l.rtcp.mu.Unlock()
	return l.rtcp.sent, l.rtcp.received
}

// ntp is t as a 64-bit NTP timestamp.
func ntp(t time.Time) uint64 {
	const epochOffset = 2208988800 // 1900 to 1970
	s := uint64(t.Unix()) + epochOffset
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	return s<<32 | frac
}

// readRTCP terminates the peer's RTCP until the socket closes.
func (b *Bridge) readRTCP(l *Leg) {
	buf := make([]byte, maxPacket)
	plain := make([]byte, maxPacket)
	st := l.rtcp
	for {
		n, src, err := st.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		now := time.Now()
		pkt := buf[:n]
		st.mu.Lock()
		in := st.in
		st.mu.Unlock()
		if in != nil {
			if pkt, err = in.DecryptRTCP(plain[:0], pkt, nil); err != nil {
				continue
			}
		}
		pkts, err := rtcp.Unmarshal(pkt)
		if err != nil {
			continue
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		ours := l.out.ssrc
		st.mu.Lock()
		if !st.latched {
			st.remote, st.latched = src, true
		} else if st.remote != src {
			st.mu.Unlock()
			continue
		}
		st.received++
		for _, p := range pkts {
			var reports []rtcp.ReceptionReport
			switch r := p.(type) {
			case *rtcp.SenderReport:
				st.lsr, st.lsrAt = uint32(r.NTPTime>>16), now
				reports = r.Reports
			case *rtcp.ReceiverReport:
				reports = r.Reports
			}
			for _, rr := range reports {
				if rr.SSRC != ours || rr.LastSenderReport == 0 {
					continue
				}
				// RFC 3550 6.4.1: A - LSR - DLSR, in 1/65536 s.
				a := uint32(ntp(now) >> 16)
				if d := a - rr.LastSenderReport - rr.Delay; d < 1<<31 {
					st.rtt = time.Duration(uint64(d) * uint64(time.Second) >> 16)
				}
			}
		}
		st.mu.Unlock()
	}
}

// reportLoop sends each leg its reports until the bridge closes.
func (b *Bridge) reportLoop(interval time.Duration) {
	for {
		// RFC 3550 6.2: randomised between 0.5 and 1.5 times the interval.
		d := interval/2 + rand.N(interval)
		select {
		case <-b.done:
			return
		case <-time.After(d):
		}
		now := time.Now()
		for _, l := range b.legs {
			b.report(l, now)
		}
	}
}

// report sends one compound RTCP packet to l.
func (b *Bridge) report(l *Leg, now time.Time) {
	st := l.rtcp
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.remote.IsValid() {
		return
	}
	var blocks []rtcp.ReceptionReport
	if rb, ok := l.stats.reportBlock(&st.expectedPrior, &st.receivedPrior); ok {
		if !st.lsrAt.IsZero() {
			rb.LastSenderReport = st.lsr
			rb.Delay = uint32(now.Sub(st.lsrAt).Seconds() * 65536)
		}
		blocks = append(blocks, rb)
	}
	l.sent.mu.Lock()
	packets, octets, lastTS, lastAt := l.sent.packets, l.sent.octets, l.sent.lastTS, l.sent.lastAt
	l.sent.mu.Unlock()
	ssrc := l.out.ssrc
	var first rtcp.Packet
	switch {
	case packets > 0:
		rtpTime := lastTS + uint32(now.Sub(lastAt).Seconds()*float64(l.clockRate.Load()))
		first = &rtcp.SenderReport{SSRC: ssrc, NTPTime: ntp(now), RTPTime: rtpTime, PacketCount: packets, OctetCount: octets, Reports: blocks}
	case len(blocks) > 0:
		first = &rtcp.ReceiverReport{SSRC: ssrc, Reports: blocks}
	default:
		return // nothing sent or received yet
	}
	raw, err := rtcp.Marshal([]rtcp.Packet{first, rtcp.NewCNAMESourceDescription(ssrc, b.cname)})
	if err != nil {
		return
	}
	if st.out != nil {
		if raw, err = st.out.EncryptRTCP(nil, raw, nil); err != nil {
			return
		}
	}
	if _, err := st.conn.WriteToUDPAddrPort(raw, st.remote); err == nil {
		st.sent++
	}
}

// reportBlock is the reception report about the current source (RFC 3550
// 6.4.1, A.3); the prior counters carry the interval.
func (s *receiveStats) reportBlock(expectedPrior, receivedPrior *uint64) (rtcp.ReceptionReport, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return rtcp.ReceptionReport{}, false
	}
	expected := uint64(s.maxSeq-s.baseSeq) + 1
	lost := s.lostLocked()
	expInt, recInt := expected-*expectedPrior, s.received-*receivedPrior
	if expected < *expectedPrior || s.received < *receivedPrior { // a new source
		expInt, recInt = expected, s.received
	}
	*expectedPrior, *receivedPrior = expected, s.received
	var fraction uint8
	if expInt > 0 && expInt > recInt {
		fraction = uint8((expInt - recInt) << 8 / expInt)
	}
	if lost > 0x7fffff {
		lost = 0x7fffff
	}
	return rtcp.ReceptionReport{
		SSRC: s.ssrc, FractionLost: fraction, TotalLost: uint32(lost),
		LastSequenceNumber: s.maxSeq, Jitter: uint32(s.jitter),
	}, true
}

func newCNAME() string {
	var b [8]byte
	_, _ = cryptorand.Read(b[:])
	return "baton-" + hex.EncodeToString(b[:])
}
