package bridge

import (
	"testing"
	"time"

	"github.com/pion/rtp"

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
