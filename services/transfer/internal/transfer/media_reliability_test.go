//go:build reliability

package transfer

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/reliabilitytest"
	"github.com/baton-voice/baton/services/transfer/internal/sdp"
)

// frame is one 20 ms PCMU frame; its first four bytes carry the sender's
// packet index, so a receiver knows which packet it holds.
const frameBytes = 160

func frame(idx uint32) []byte {
	p := make([]byte, frameBytes)
	binary.BigEndian.PutUint32(p, idx)
	for i := 4; i < len(p); i++ {
		p[i] = 0xFF
	}
	return p
}

// lossyRelay sits between a test endpoint (peer) and a bridge leg, on the
// address the endpoint gave in its SDP, and forwards UDP both ways,
// dropping loss percent of the packets of each direction at random. It
// keeps the index (frame) of every packet it dropped.
type lossyRelay struct {
	conn   *net.UDPConn
	peer   netip.AddrPort
	bridge atomic.Pointer[netip.AddrPort]
	loss   int
	mu     sync.Mutex
	rng    *rand.Rand
	// toBridge and toPeer are the indices dropped each way.
	toBridge, toPeer map[uint32]bool
	forwarded        [2]int
	done             chan struct{}
}

func startLossyRelay(t *testing.T, peer netip.AddrPort, loss int, seed uint64) *lossyRelay {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	r := &lossyRelay{conn: conn, peer: peer, loss: loss, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		toBridge: map[uint32]bool{}, toPeer: map[uint32]bool{}, done: make(chan struct{})}
	go r.serve()
	t.Cleanup(func() {
		_ = conn.Close()
		<-r.done
	})
	return r
}

func (r *lossyRelay) addr() netip.AddrPort { return r.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (r *lossyRelay) setBridge(a netip.AddrPort) { r.bridge.Store(&a) }

func (r *lossyRelay) serve() {
	defer close(r.done)
	buf := make([]byte, 2048)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		bridge := r.bridge.Load()
		if bridge == nil {
			continue
		}
		to, dropped, dir := *bridge, r.toBridge, 0
		if from != r.peer {
			to, dropped, dir = r.peer, r.toPeer, 1
		}
		var p rtp.Packet
		if p.Unmarshal(buf[:n]) != nil || len(p.Payload) < 4 {
			continue
		}
		idx := binary.BigEndian.Uint32(p.Payload)
		r.mu.Lock()
		drop := r.rng.IntN(100) < r.loss
		if drop {
			dropped[idx] = true
		} else {
			r.forwarded[dir]++
		}
		r.mu.Unlock()
		if !drop {
			_, _ = r.conn.WriteToUDPAddrPort(buf[:n], to)
		}
	}
}

func (r *lossyRelay) dropped(toBridge bool) map[uint32]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	src := r.toPeer
	if toBridge {
		src = r.toBridge
	}
	out := make(map[uint32]bool, len(src))
	for k := range src {
		out[k] = true
	}
	return out
}

// mediaDest is a destination (UAS over UDP) whose SDP answer names
// answerAt (its media socket, or a relay in front of it), optionally with
// SDES keys; it records the offer and counts the BYEs it gets.
type mediaDest struct {
	addr     *net.UDPAddr
	media    *net.UDPConn
	answerAt netip.AddrPort
	suite    string
	offers   chan sdp.Session
	byes     atomic.Int64
	mu       sync.Mutex
	// enc encrypts what it sends (its own key, in its answer).
	enc *srtp.Context
}

func startMediaDest(t *testing.T, suite string, answerAt func(media netip.AddrPort) netip.AddrPort) *mediaDest {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("test-media-destination"))
	require.NoError(t, err)
	srv, err := sipgo.NewServer(ua)
	require.NoError(t, err)
	media, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	d := &mediaDest{media: media, suite: suite, offers: make(chan sdp.Session, 1)}
	d.answerAt = answerAt(media.LocalAddr().(*net.UDPAddr).AddrPort())
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		offer, err := sdp.Parse(string(req.Body()))
		if err != nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil))
			return
		}
		ans := sdp.Session{Origin: "dest 1 1 IN IP4 127.0.0.1", Addr: d.answerAt, Proto: "RTP/AVP", Formats: offer.Formats[:1]}
		if d.suite != "" {
			var theirs sdp.Crypto
			for _, c := range offer.Crypto {
				if c.Suite == d.suite {
					theirs = c
				}
			}
			ours, err := sdp.NewCrypto(theirs.Tag, d.suite)
			if err != nil || theirs.Suite == "" {
				_ = tx.Respond(sip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil))
				return
			}
			enc, err := srtpContext(ours)
			if err != nil {
				_ = tx.Respond(sip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil))
				return
			}
			d.mu.Lock()
			d.enc = enc
			d.mu.Unlock()
			ans.Proto, ans.Crypto = "RTP/SAVP", []sdp.Crypto{ours}
		}
		select {
		case d.offers <- offer:
		default:
		}
		res := sip.NewResponseFromRequest(req, 200, "OK", []byte(ans.String()))
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "dest", Host: "127.0.0.1", Port: d.addr.Port}})
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		_ = tx.Respond(res)
	})
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		d.byes.Add(1)
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	var lc net.ListenConfig
	conn, err := lc.ListenPacket(t.Context(), "udp", "127.0.0.1:0")
	require.NoError(t, err)
	d.addr = conn.LocalAddr().(*net.UDPAddr)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.ServeUDP(conn)
	}()
	t.Cleanup(func() {
		require.NoError(t, ua.Close())
		_ = conn.Close()
		_ = media.Close()
		<-served
	})
	return d
}

func (d *mediaDest) offer(t *testing.T) sdp.Session {
	t.Helper()
	select {
	case o := <-d.offers:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("the destination got no INVITE")
		return sdp.Session{}
	}
}

// received is one RTP packet a test endpoint got.
type receivedRTP struct {
	header rtp.Header
	idx    uint32
}

// collect reads RTP from conn until ctx ends.
func collect(ctx context.Context, conn *net.UDPConn) func() []receivedRTP {
	var mu sync.Mutex
	var got []receivedRTP
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for ctx.Err() == nil {
			_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, _, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				continue
			}
			var p rtp.Packet
			if p.Unmarshal(buf[:n]) != nil || len(p.Payload) < 4 {
				continue
			}
			mu.Lock()
			got = append(got, receivedRTP{header: p.Header, idx: binary.BigEndian.Uint32(p.Payload)})
			mu.Unlock()
		}
	}()
	return func() []receivedRTP {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return got
	}
}

// sendStream sends n frames from conn to to, one every gap, with its own
// SSRC, sequence numbers from seq0 and timestamps 160 apart.
func sendStream(ctx context.Context, conn *net.UDPConn, to netip.AddrPort, ssrc uint32, seq0 uint16, n int, gap time.Duration, enc *srtp.Context) error {
	tick := time.NewTicker(gap)
	defer tick.Stop()
	for i := range n {
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq0 + uint16(i),
			Timestamp: 5000 + uint32(i)*frameBytes, SSRC: ssrc}, Payload: frame(uint32(i))}
		b, err := pkt.Marshal()
		if err != nil {
			return err
		}
		if enc != nil {
			if b, err = enc.EncryptRTP(nil, b, nil); err != nil {
				return err
			}
		}
		if _, err := conn.WriteToUDPAddrPort(b, to); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// checkContinuity holds what a receiver must see of a stream of n frames
// the bridge relayed: one SSRC; sequence numbers strictly increasing;
// each packet's sequence number and timestamp at the same offset from
// its frame index (so a gap is exactly the frames missing, and timing is
// kept); and exactly the frames not dropped on either side of the bridge.
func checkContinuity(t *testing.T, dir string, got []receivedRTP, n int, lost map[uint32]bool) {
	t.Helper()
	require.NotEmpty(t, got, dir)
	first := got[0]
	seqOff := first.header.SequenceNumber - uint16(first.idx)
	tsOff := first.header.Timestamp - first.idx*frameBytes
	seen := map[uint32]bool{}
	for i, p := range got {
		require.Equal(t, first.header.SSRC, p.header.SSRC, "%s packet %d: one SSRC", dir, i)
		require.Equal(t, seqOff, p.header.SequenceNumber-uint16(p.idx), "%s frame %d: sequence number off its frame", dir, p.idx)
		require.Equal(t, tsOff, p.header.Timestamp-p.idx*frameBytes, "%s frame %d: timestamp off its frame", dir, p.idx)
		if i > 0 {
			d := p.header.SequenceNumber - got[i-1].header.SequenceNumber
			require.True(t, d > 0 && d < 0x8000, "%s packet %d: sequence %d after %d", dir, i, p.header.SequenceNumber, got[i-1].header.SequenceNumber)
			for missing := got[i-1].idx + 1; missing < p.idx; missing++ {
				require.True(t, lost[missing], "%s: frame %d is missing but was never dropped", dir, missing)
			}
		}
		require.False(t, seen[p.idx], "%s frame %d twice", dir, p.idx)
		seen[p.idx] = true
	}
	for i := range uint32(n) {
		require.Equal(t, !lost[i], seen[i], "%s frame %d: dropped %v, received %v", dir, i, lost[i], seen[i])
	}
}

// lostBetween is how many of dropped lie strictly between the first and
// the last index of 0..n-1 not dropped: the loss RFC 3550 can see.
func lostBetween(dropped map[uint32]bool, n int) uint64 {
	lo, hi := -1, -1
	for i := range n {
		if !dropped[uint32(i)] {
			if lo < 0 {
				lo = i
			}
			hi = i
		}
	}
	var c uint64
	for i := range dropped {
		if int(i) > lo && int(i) < hi {
			c++
		}
	}
	return c
}

func union(a, b map[uint32]bool) map[uint32]bool {
	out := map[uint32]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// TestReliabilityBridgeMediaUnderLoss bridges a warm transfer and runs a
// stream each way through relays that drop 5% of the packets at random
// on both sides of the bridge (4 lossy hops). The bridge keeps each
// outgoing stream continuous: one SSRC, sequence numbers that only grow,
// a gap exactly where a relay dropped a packet, timestamps in step with
// the frames; its own loss figures match the drops before it.
func TestReliabilityBridgeMediaUnderLoss(t *testing.T) {
	const (
		frames = 1000
		loss   = 5
		gap    = 10 * time.Millisecond
	)
	metrics := NewMetrics(prometheus.NewRegistry())
	h := start(t, 202, func(o *Options) {
		withInvite(func(io *InviteOptions) {
			io.Ports.RTCPInterval = 0
			io.IdleTimeout = time.Minute
		})(o)
		o.Metrics = metrics
	})
	seed := uint64(time.Now().UnixNano())
	t.Logf("loss seed %d", seed)
	caller := startCallerSBC(t, 0)
	relayC := startLossyRelay(t, caller.media.LocalAddr().(*net.UDPAddr).AddrPort(), loss, seed)
	caller.mu.Lock()
	caller.answerAt = relayC.addr()
	caller.mu.Unlock()
	var relayD *lossyRelay
	dest := startMediaDest(t, "", func(media netip.AddrPort) netip.AddrPort {
		relayD = startLossyRelay(t, media, loss, seed+1)
		return relayD.addr()
	})

	cmd := inviteCommand(caller, "loss", "sip:queue@"+dest.addr.String())
	cmd.Encryption = encUDPRTP
	h.command(t, cmd)
	h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
	destOffer := dest.offer(t)
	callerOffer, err := sdp.Parse(string(caller.next(t, sip.INVITE).Body()))
	require.NoError(t, err)
	relayC.setBridge(callerOffer.Addr)
	relayD.setBridge(destOffer.Addr)

	ctx, stop := context.WithCancel(t.Context())
	atCaller, atDest := collect(ctx, caller.media), collect(ctx, dest.media)
	var wg sync.WaitGroup
	var errC, errD error
	wg.Go(func() { errC = sendStream(ctx, caller.media, relayC.addr(), 0xCA11, 60000, frames, gap, nil) })
	wg.Go(func() { errD = sendStream(ctx, dest.media, relayD.addr(), 0xDE57, 100, frames, gap, nil) })
	wg.Wait()
	require.NoError(t, errC)
	require.NoError(t, errD)
	time.Sleep(300 * time.Millisecond) // the last packets cross
	stop()
	toDest, toCaller := atDest(), atCaller()

	h.fact(t, cmd.CallId, &batonv1.CallEnded{CallId: cmd.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
	end := h.outcome(t, cmd.CommandId)
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), end.GetStatus().String(), end.GetDetail())

	type direction struct {
		name          string
		got           []receivedRTP
		before, after map[uint32]bool
		stats         *batonv1.MediaStreamStats
	}
	dirs := []direction{
		{"caller_to_destination", toDest, relayC.dropped(true), relayD.dropped(false), end.GetBridge().GetCallerToDestination()},
		{"destination_to_caller", toCaller, relayD.dropped(true), relayC.dropped(false), end.GetBridge().GetDestinationToCaller()},
	}
	var report []string
	for _, d := range dirs {
		lost := union(d.before, d.after)
		checkContinuity(t, d.name, d.got, frames, lost)
		require.Equal(t, uint64(frames-len(d.before)), d.stats.GetPackets(), "%s: the bridge received every packet the first relay passed", d.name)
		require.Equal(t, lostBetween(d.before, frames), d.stats.GetLost(), "%s: the bridge's loss is the first relay's", d.name)
		require.Zero(t, d.stats.GetDropped(), "%s: the bridge dropped nothing itself", d.name)
		require.Positive(t, len(d.before)+len(d.after), "%s: the relays dropped something (5%% of %d)", d.name, frames)
		ssrcs := map[uint32]bool{}
		for _, p := range d.got {
			ssrcs[p.header.SSRC] = true
		}
		report = append(report, fmt.Sprintf("%s: sent %d, dropped %d before + %d after the bridge, received %d (bridge lost %d), %d unexplained gaps, %d SSRC",
			d.name, frames, len(d.before), len(d.after), len(d.got), d.stats.GetLost(), frames-len(lost)-len(d.got), len(ssrcs)))
	}
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(metrics.BridgePackets.WithLabelValues("caller_to_destination")) == float64(frames-len(dirs[0].before))
	}, 5*time.Second, 10*time.Millisecond, "the bridge's packets are in the metrics")
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item:   6,
		Test:   t.Name(),
		Load:   fmt.Sprintf("1 bridged warm transfer, %d RTP packets each way at %v", frames, gap),
		Faults: fmt.Sprintf("%d%% random loss on each of 4 UDP relay hops (caller<->bridge<->destination)", loss),
		Inputs: "PCMU frames numbered in the payload",
		Lost:   report[0] + "; " + report[1],
	})
}

// TestReliabilityBridgeDropsTamperedAndReplayedSRTP: on an SRTP
// destination leg (both suites), packets with a flipped payload byte, a
// flipped authentication tag byte and exact replays of earlier packets
// are dropped by the bridge and counted by cause; the caller gets every
// genuine packet once, in order, and nothing else.
func TestReliabilityBridgeDropsTamperedAndReplayedSRTP(t *testing.T) {
	const genuine = 200
	var rows []string
	for _, suite := range []string{"AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"} {
		t.Run(suite, func(t *testing.T) {
			metrics := NewMetrics(prometheus.NewRegistry())
			h := start(t, 202, func(o *Options) {
				withInvite(func(io *InviteOptions) {
					io.Ports.RTCPInterval = 0
					io.IdleTimeout = time.Minute
					io.AllowSDESOverUDP = true
				})(o)
				o.Metrics = metrics
			})
			caller := startCallerSBC(t, 0)
			dest := startMediaDest(t, suite, func(media netip.AddrPort) netip.AddrPort { return media })
			cmd := inviteCommand(caller, "srtp-attack", "sip:queue@"+dest.addr.String())
			cmd.Encryption = encUDPSRTP
			h.command(t, cmd)
			h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
			bridgeLeg := dest.offer(t).Addr
			caller.next(t, sip.INVITE)
			dest.mu.Lock()
			enc := dest.enc
			dest.mu.Unlock()
			require.NotNil(t, enc)

			ctx, stop := context.WithCancel(t.Context())
			atCaller := collect(ctx, caller.media)
			var wire [][]byte
			write := func(b []byte) {
				_, err := dest.media.WriteToUDPAddrPort(b, bridgeLeg)
				require.NoError(t, err)
			}
			flip := func(b []byte, at int) []byte {
				c := append([]byte(nil), b...)
				c[at] ^= 0x80
				return c
			}
			tamperedPayload, tamperedTag, replayed := 0, 0, 0
			for i := range genuine {
				pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(7000 + i),
					Timestamp: uint32(i) * frameBytes, SSRC: 0x5EC}, Payload: frame(uint32(i))}
				plain, err := pkt.Marshal()
				require.NoError(t, err)
				b, err := enc.EncryptRTP(nil, plain, nil)
				require.NoError(t, err)
				switch i % 4 {
				case 1: // a tampered copy first: it must not use up the index
					write(flip(b, 12+i%frameBytes))
					tamperedPayload++
				case 2:
					write(flip(b, len(b)-1-i%4))
					tamperedTag++
				}
				write(b)
				wire = append(wire, b)
				if i%3 == 2 { // replay the packet before, and this one
					write(wire[i-1])
					write(b)
					replayed += 2
				}
				time.Sleep(2 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond)
			stop()
			got := atCaller()

			h.fact(t, cmd.CallId, &batonv1.CallEnded{CallId: cmd.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
			end := h.outcome(t, cmd.CommandId)
			require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), end.GetStatus().String(), end.GetDetail())

			checkContinuity(t, "destination_to_caller", got, genuine, nil)
			require.Len(t, got, genuine, "every genuine packet, once, and nothing else")
			st := end.GetBridge().GetDestinationToCaller()
			require.Equal(t, suite, end.GetBridge().GetDestinationSrtp())
			require.Equal(t, uint64(genuine), st.GetPackets())
			require.Equal(t, uint64(tamperedPayload+tamperedTag+replayed), st.GetDropped())
			require.Equal(t, float64(tamperedPayload+tamperedTag),
				testutil.ToFloat64(metrics.BridgeSRTPDropped.WithLabelValues("destination_to_caller", "unauthentic")))
			require.Equal(t, float64(replayed),
				testutil.ToFloat64(metrics.BridgeSRTPDropped.WithLabelValues("destination_to_caller", "replayed")))
			require.Eventually(t, func() bool {
				return testutil.ToFloat64(metrics.BridgeDropped.WithLabelValues("destination_to_caller")) == float64(tamperedPayload+tamperedTag+replayed)
			}, 5*time.Second, 10*time.Millisecond, "the drops are in the metrics")
			rows = append(rows, fmt.Sprintf("%s: %d genuine forwarded once, %d tampered payload + %d tampered tag dropped (unauthentic), %d replays dropped (replayed), %d forwarded",
				suite, len(got), tamperedPayload, tamperedTag, replayed, len(got)-genuine))
		})
	}
	require.Len(t, rows, 2)
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item:   6,
		Test:   t.Name(),
		Load:   fmt.Sprintf("2 bridged warm transfers (one per SRTP suite), %d genuine SRTP packets each", genuine),
		Faults: "tampered payload byte, tampered auth tag byte, exact replays, on the destination's SRTP leg",
		Inputs: "AES_CM_128_HMAC_SHA1_80, AEAD_AES_128_GCM",
		Lost:   rows[0] + "; " + rows[1],
	})
}

// TestReliabilityMediaTimeoutEndsTheCall: media flows both ways for three
// idle timeouts and the call stays up; then the caller goes silent. The
// bridge's idle teardown BYEs both legs and publishes ENDED with reason
// media_timeout, never earlier than the timeout after the last packet.
func TestReliabilityMediaTimeoutEndsTheCall(t *testing.T) {
	const idle = time.Second
	metrics := NewMetrics(prometheus.NewRegistry())
	h := start(t, 202, func(o *Options) {
		withInvite(func(io *InviteOptions) {
			io.Ports.RTCPInterval = 0
			io.IdleTimeout = idle
		})(o)
		o.Metrics = metrics
	})
	caller := startCallerSBC(t, 0)
	dest := startMediaDest(t, "", func(media netip.AddrPort) netip.AddrPort { return media })
	cmd := inviteCommand(caller, "silence", "sip:queue@"+dest.addr.String())
	cmd.Encryption = encUDPRTP
	h.command(t, cmd)
	got := h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
	bridgedAt := got[1].GetElapsed().AsDuration()
	destLeg := dest.offer(t).Addr
	callerOffer, err := sdp.Parse(string(caller.next(t, sip.INVITE).Body()))
	require.NoError(t, err)

	// Both talk for three idle timeouts; then the caller stops and the
	// destination goes on.
	const talk = 3 * idle
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	frames := int(talk / (20 * time.Millisecond))
	var wg sync.WaitGroup
	var errC error
	wg.Go(func() {
		errC = sendStream(ctx, caller.media, callerOffer.Addr, 0xCA11, 1, frames, 20*time.Millisecond, nil)
	})
	destDone := make(chan error, 1)
	go func() {
		destDone <- sendStream(ctx, dest.media, destLeg, 0xDE57, 1, 10*frames, 20*time.Millisecond, nil)
	}()
	wg.Wait()
	require.NoError(t, errC)
	silentFrom := time.Now()

	end := h.outcome(t, cmd.CommandId)
	silence := time.Since(silentFrom)
	stop()
	<-destDone
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), end.GetStatus().String(), end.GetDetail())
	require.Equal(t, EndMediaTimeout, end.GetReason())
	require.Contains(t, end.GetDetail(), "no media from the caller")
	up := end.GetElapsed().AsDuration() - bridgedAt
	// The caller's last packet left (frames-1) frames after it began, at
	// least that long after BRIDGED; the teardown comes a timeout later.
	require.GreaterOrEqual(t, up, time.Duration(frames-1)*20*time.Millisecond+idle,
		"the call stayed up while media flowed and for the timeout after")
	require.GreaterOrEqual(t, silence, idle-idlePoll, "not torn down before the timeout")
	bye := caller.next(t, sip.BYE)
	require.Equal(t, cmd.Dialog.CallId, bye.CallID().Value(), "the caller's leg got its BYE")
	require.Eventually(t, func() bool { return dest.byes.Load() == 1 }, 5*time.Second, 10*time.Millisecond, "the destination got its BYE")
	st := end.GetBridge()
	require.Equal(t, uint64(frames), st.GetCallerToDestination().GetPackets())
	require.Positive(t, st.GetDestinationToCaller().GetPackets())
	require.Eventually(t, func() bool { return testutil.ToFloat64(metrics.Outcomes.WithLabelValues("invite", "ended")) == 1 },
		5*time.Second, 10*time.Millisecond)
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item:   6,
		Test:   t.Name(),
		Load:   fmt.Sprintf("1 bridged warm transfer, %d packets caller->destination over %v, destination talking on", frames, talk),
		Faults: fmt.Sprintf("the caller goes silent; media.idle_timeout %v", idle),
		Inputs: "RTP over real UDP, SIP over real UDP (sipgo peers)",
		Lost: fmt.Sprintf("ENDED reason %s after %v of silence (call up %v after BRIDGED); BYE to caller 1, to destination %d; 0 early teardowns",
			end.GetReason(), silence.Round(10*time.Millisecond), up.Round(10*time.Millisecond), dest.byes.Load()),
	})
}
