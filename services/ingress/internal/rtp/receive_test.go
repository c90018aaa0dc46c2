package rtp

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// packet renders an RTP packet.
func packet(pt uint8, seq uint16, ts, ssrc uint32, marker bool, payload []byte) []byte {
	b := make([]byte, 12, 12+len(payload))
	b[0] = 0x80
	b[1] = pt
	if marker {
		b[1] |= 0x80
	}
	binary.BigEndian.PutUint16(b[2:], seq)
	binary.BigEndian.PutUint32(b[4:], ts)
	binary.BigEndian.PutUint32(b[8:], ssrc)
	return append(b, payload...)
}

// event renders an RFC 4733 payload.
func event(code uint8, end bool, duration uint16) []byte {
	p := []byte{code, 10, 0, 0}
	if end {
		p[1] |= 0x80
	}
	binary.BigEndian.PutUint16(p[2:], duration)
	return p
}

var pcmu = Media{Codec: "PCMU", PayloadType: 0, ClockRate: 8000, EventPayloadType: 101}

func TestReceiverLossAndJitter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	cases := []struct {
		name   string
		seqs   []uint16
		jitter []time.Duration // arrival offset from the nominal 20 ms grid
		lost   uint64
		wantJ  float64 // ms
	}{
		{"in order, on time", []uint16{1, 2, 3, 4, 5}, nil, 0, 0},
		{"two gaps", []uint16{1, 2, 5, 6, 8}, nil, 3, 0},
		{"wraps", []uint16{65534, 65535, 0, 2}, nil, 1, 0},
		{"reordered and duplicated", []uint16{10, 12, 11, 11, 13}, nil, 0, 0},
		// Every other packet 8 ms late: |D| is 8 ms from the second packet
		// on; J = J + (|D| - J)/16 over 3 steps from 0.
		{"jitter", []uint16{1, 2, 3, 4}, []time.Duration{0, 8 * time.Millisecond, 0, 8 * time.Millisecond}, 0, 8 * (1 - 15.0*15*15/(16*16*16))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := receiver{start: t0, media: pcmu}
			for i, seq := range tc.seqs {
				ts := uint32(seq) * 160
				at := t0.Add(time.Duration(seq) * 20 * time.Millisecond)
				if tc.jitter != nil {
					at = at.Add(tc.jitter[i])
				}
				_, ok, _ := r.packet(packet(0, seq, ts, 7, false, make([]byte, 160)), at)
				require.False(t, ok)
			}
			st := r.stats()
			require.EqualValues(t, len(tc.seqs), st.Packets)
			require.EqualValues(t, len(tc.seqs)*172, st.Bytes)
			require.Equal(t, tc.lost, st.Lost)
			require.InDelta(t, tc.wantJ, st.JitterMS, 0.01)
		})
	}

	t.Run("new ssrc keeps the old loss", func(t *testing.T) {
		r := receiver{start: t0, media: pcmu}
		for _, p := range [][]byte{packet(0, 1, 0, 7, false, nil), packet(0, 3, 0, 7, false, nil), packet(0, 500, 0, 9, false, nil), packet(0, 502, 0, 9, false, nil)} {
			r.packet(p, t0)
		}
		require.EqualValues(t, 2, r.stats().Lost)
	})
}

func TestReceiverDTMF(t *testing.T) {
	r := receiver{start: time.Unix(0, 0), media: pcmu}
	var got []DTMF
	seq := uint16(100)
	send := func(ts uint32, p []byte) {
		seq++
		if d, ok, _ := r.packet(packet(101, seq, ts, 7, false, p), time.Unix(0, 0)); ok {
			got = append(got, d)
		}
	}
	// Digit 5: start, two updates, three end packets (RFC 4733 2.5.1.4).
	send(8000, event(5, false, 160))
	send(8000, event(5, false, 320))
	send(8000, event(5, false, 480))
	for range 3 {
		send(8000, event(5, true, 800))
	}
	// Then #, then 5 again (a new timestamp is a new event).
	for range 3 {
		send(16000, event(11, true, 1600))
	}
	for range 3 {
		send(24000, event(5, true, 400))
	}
	send(32000, event(200, true, 400)) // unknown event code
	send(40000, []byte{1, 2})          // short payload
	require.Equal(t, []DTMF{{"5", 100}, {"#", 200}, {"5", 50}}, got)
	require.Zero(t, r.stats().Lost)
	require.Zero(t, r.stats().JitterMS, "event packets do not count for jitter")
}

// TestPlay plays a clip to a Go RTP receiver and checks every packet.
func TestPlay(t *testing.T) {
	base := freeRange(t)
	a := NewAllocator("127.0.0.1", base, base+2)
	s, err := a.Open(nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _, err := s.Close(); require.NoError(t, err) })

	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, peer.Close()) })
	to := peer.LocalAddr().(*net.UDPAddr).AddrPort()

	clip := Clip{PCMU: make([]byte, 5*FrameSamples), PCMA: make([]byte, 5*FrameSamples)}
	for i := range clip.PCMU {
		clip.PCMU[i] = byte(i / FrameSamples)
		clip.PCMA[i] = byte(0x80 + i/FrameSamples)
	}
	s.SetMedia(Media{Codec: "PCMA", PayloadType: 8, ClockRate: 8000, EventPayloadType: -1}, to, true)
	s.Play(clip)

	buf := make([]byte, 1500)
	var first []byte
	for i := range 5 {
		require.NoError(t, peer.SetReadDeadline(time.Now().Add(5*time.Second)))
		n, from, err := peer.ReadFromUDPAddrPort(buf)
		require.NoError(t, err)
		require.Equal(t, s.Port(), int(from.Port()), "sent from the call's RTP port")
		p := buf[:n]
		require.Len(t, p, 12+FrameSamples)
		require.EqualValues(t, 2, p[0]>>6)
		require.EqualValues(t, 8, p[1]&0x7f, "payload type of the negotiated codec")
		require.Equal(t, i == 0, p[1]&0x80 != 0, "marker on the first packet only")
		if i == 0 {
			first = append([]byte(nil), p[:12]...)
		} else {
			require.Equal(t, binary.BigEndian.Uint16(first[2:])+uint16(i), binary.BigEndian.Uint16(p[2:]))
			require.Equal(t, binary.BigEndian.Uint32(first[4:])+uint32(i*FrameSamples), binary.BigEndian.Uint32(p[4:]))
			require.Equal(t, first[8:12], p[8:12], "one SSRC")
		}
		require.Equal(t, clip.PCMA[i*FrameSamples:(i+1)*FrameSamples], p[12:], "A-law frame %d", i)
	}
	// The clip is over: nothing more comes.
	require.NoError(t, peer.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	_, _, err = peer.ReadFromUDPAddrPort(buf)
	require.Error(t, err)

	// On hold nothing is sent.
	s.SetMedia(Media{Codec: "PCMU", PayloadType: 0, ClockRate: 8000, EventPayloadType: -1}, to, false)
	s.Play(Silence(100 * time.Millisecond))
	require.NoError(t, peer.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	_, _, err = peer.ReadFromUDPAddrPort(buf)
	require.Error(t, err, "sent while on hold")
	s.Stop()
}
