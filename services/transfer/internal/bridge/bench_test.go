package bridge

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/transport/v5/replaydetector"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/services/transfer/internal/sdp"
)

// BenchmarkPacketPath is forward's per-packet work without the sockets:
// parse, statistics, rewrite and, with one SRTP leg, one encryption (a
// packet toward the SRTP leg is encrypted once; one from it is decrypted
// once, at about the same cost).
func BenchmarkPacketPath(b *testing.B) {
	for _, suite := range []string{"", "AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"} {
		name := "rtp"
		if suite != "" {
			name = "srtp_" + suite
		}
		b.Run(name, func(b *testing.B) {
			pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 1}, Payload: make([]byte, 160)}
			raw, err := pkt.Marshal()
			if err != nil {
				b.Fatal(err)
			}
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
			buf := make([]byte, maxPacket)
			enc := make([]byte, maxPacket+32)
			var h rtp.Header
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			now := time.Now()
			for i := 0; b.Loop(); i++ {
				p := buf[:len(raw)]
				copy(p, raw)
				p[2], p[3] = byte(i>>8), byte(i) // a new sequence number each time
				if _, err := h.Unmarshal(p); err != nil {
					b.Fatal(err)
				}
				from.stats.record(&h, len(p), now, 8000)
				to.out.rewrite(p, &h, now, 8000)
				if out := to.srtpOut.Load(); out != nil {
					if _, err := out.EncryptRTP(enc[:0], p, &h); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
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
