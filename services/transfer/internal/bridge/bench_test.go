package bridge

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/transport/v5/replaydetector"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/pump"
	"github.com/baton-voice/baton/services/transfer/internal/sdp"
)

// BenchmarkPacketPath is forward's per-packet work without the sockets:
// parse, statistics, rewrite and, with one SRTP leg, one encryption in
// place (a packet toward the SRTP leg is encrypted once; one from it is
// decrypted once, at about the same cost). It runs once with one bridge,
// everything in cache, and once spread round-robin over 2000 bridges, as
// a relay of 1000 calls with an SRTP leg each holds 2000 contexts: the
// state each packet touches (its leg, its context's keys, HMAC and
// replay state) is then mostly not in cache.
func BenchmarkPacketPath(b *testing.B) {
	for _, bridges := range []int{1, 2000} {
		for _, suite := range []string{"", "AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"} {
			name := "rtp"
			if suite != "" {
				name = "srtp_" + suite
			}
			b.Run(fmt.Sprintf("bridges=%d/%s", bridges, name), func(b *testing.B) {
				benchmarkPacketPath(b, bridges, suite)
			})
		}
	}
}

func benchmarkPacketPath(b *testing.B, bridges int, suite string) {
	type pair struct{ from, to *Leg }
	legs := make([]pair, bridges)
	for i := range legs {
		from, to := &Leg{out: newRewriter()}, &Leg{out: newRewriter()}
		if suite != "" {
			key, err := sdp.NewCrypto(1, suite)
			if err != nil {
				b.Fatal(err)
			}
			profile, err := profileOf(suite)
			if err != nil {
				b.Fatal(err)
			}
			out, err := contextOf(key, profile)
			if err != nil {
				b.Fatal(err)
			}
			to.srtpOut.Store(out)
		}
		legs[i] = pair{from, to}
	}
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 1}, Payload: make([]byte, 160)}
	raw, err := pkt.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	// The pump's buffer: the packet is encrypted in place.
	buf := make([]byte, maxPacket+pump.Tailroom)
	var h rtp.Header
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	now := time.Now()
	for i := 0; b.Loop(); i++ {
		leg := legs[i%bridges]
		seq := i / bridges // a new sequence number for each packet of a stream
		p := buf[:len(raw)]
		copy(p, raw)
		p[2], p[3] = byte(seq>>8), byte(seq)
		if _, err := h.Unmarshal(p); err != nil {
			b.Fatal(err)
		}
		leg.from.stats.record(&h, len(p), now, 8000)
		leg.to.out.rewrite(p, &h, now, 8000)
		if out := leg.to.srtpOut.Load(); out != nil {
			if _, err := out.EncryptRTP(p[:0], p, &h); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TestDecryptAllocatesNothing: the receive path's SRTP decryption, replay
// counting included, allocates nothing per packet (the counting wrapper
// keeps pion's token interface).
func TestDecryptAllocatesNothing(t *testing.T) {
	for _, suite := range []string{"AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"} {
		key, err := sdp.NewCrypto(1, suite)
		require.NoError(t, err)
		profile, err := profileOf(suite)
		require.NoError(t, err)
		enc, err := contextOf(key, profile)
		require.NoError(t, err)
		var replayed atomic.Uint64
		dec, err := contextOf(key, profile, srtp.SRTPReplayDetectorFactory(func() replaydetector.ReplayDetector {
			return newCountingDetector(&replayed)
		}))
		require.NoError(t, err)
		var packets [][]byte
		for i := range 1100 {
			p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 7, SequenceNumber: uint16(i)}, Payload: make([]byte, 160)}
			raw, err := p.Marshal()
			require.NoError(t, err)
			e, err := enc.EncryptRTP(nil, raw, nil)
			require.NoError(t, err)
			packets = append(packets, e)
		}
		plain := make([]byte, maxPacket)
		var h rtp.Header
		i := 0
		allocs := testing.AllocsPerRun(1000, func() {
			if _, err := dec.DecryptRTP(plain[:0], packets[i], &h); err != nil {
				t.Fatal(err)
			}
			i++
		})
		require.Zero(t, allocs, suite)
		// The replay check still works through the token interface.
		_, err = dec.DecryptRTP(plain[:0], packets[5], &h)
		require.Error(t, err, "a replay is refused")
		require.Equal(t, uint64(1), replayed.Load(), "and counted")
	}
}

// TestForwardAllocatesNothing: relaying a packet, with the plain leg's
// parse and the SRTP leg's encryption or decryption in place, allocates
// nothing once the legs have latched.
func TestForwardAllocatesNothing(t *testing.T) {
	b, caller, dest := srtpDestinationBridge(t, "AES_CM_128_HMAC_SHA1_80")
	from, to := b.Leg(Caller), b.Leg(Destination)

	buf := make([]byte, maxPacket+pump.Tailroom)
	seq := uint16(0)
	plain := func() []byte {
		seq++
		p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 1, SequenceNumber: seq, Timestamp: uint32(seq) * 160}, Payload: make([]byte, 160)}
		n, err := p.MarshalTo(buf)
		require.NoError(t, err)
		return buf[:n]
	}
	var sealed [][]byte
	for i := range 1100 {
		p := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 2, SequenceNumber: uint16(i + 1), Timestamp: uint32(i) * 160}, Payload: make([]byte, 160)}
		raw, err := p.Marshal()
		require.NoError(t, err)
		e, err := dest.enc.EncryptRTP(nil, raw, nil)
		require.NoError(t, err)
		sealed = append(sealed, e)
	}
	now := time.Now()

	toSRTP := testing.AllocsPerRun(1000, func() { b.forward(from, to, plain(), caller.addr(), now) })
	i := 0
	fromSRTP := testing.AllocsPerRun(1000, func() {
		n := copy(buf, sealed[i])
		i++
		b.forward(to, from, buf[:n], dest.addr(), now)
	})
	require.Zero(t, toSRTP, "caller to SRTP destination")
	require.Zero(t, fromSRTP, "SRTP destination to caller")
	// Every packet was taken and relayed, the warm-up runs too.
	for _, s := range []*batonv1.MediaStreamStats{b.Stats().GetCallerToDestination(), b.Stats().GetDestinationToCaller()} {
		require.Equal(t, uint64(1001), s.GetPackets())
		require.Zero(t, s.GetDropped())
	}
}
