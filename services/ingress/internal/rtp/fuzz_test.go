package rtp

import (
	"testing"
	"time"
)

// FuzzReceiverPacket feeds arbitrary datagrams to the receiver: it must
// never panic, count every datagram, and report at most one digit each.
func FuzzReceiverPacket(f *testing.F) {
	f.Add(packet(0, 1, 160, 7, false, make([]byte, 160)))
	f.Add(packet(101, 2, 320, 7, false, event(5, true, 800)))
	f.Add([]byte{0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 9})
	f.Add([]byte{0xa0, 101, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 1, 0x80, 0, 10, 200})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := receiver{start: time.Unix(0, 0), media: pcmu}
		r.packet(b, time.Unix(1, 0))
		r.packet(b, time.Unix(2, 0))
		if st := r.stats(); st.Packets != 2 || st.JitterMS < 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}
