package agent

import (
	"encoding/binary"

	"github.com/baton-voice/baton/pkg/pcm"
)

// ulawToL16x2 turns 8 kHz µ-law into 16 kHz 16-bit little-endian PCM,
// each new sample the mean of its neighbours (linear interpolation).
func ulawToL16x2(u []byte) []byte {
	out := make([]byte, 4*len(u))
	for i, b := range u {
		s := int32(pcm.DecodeULaw(b))
		next := s
		if i+1 < len(u) {
			next = int32(pcm.DecodeULaw(u[i+1]))
		}
		binary.LittleEndian.PutUint16(out[4*i:], uint16(int16(s)))
		binary.LittleEndian.PutUint16(out[4*i+2:], uint16(int16((s+next)/2)))
	}
	return out
}

// l16x2ToUlaw turns 16 kHz 16-bit little-endian PCM into 8 kHz µ-law,
// each sample the mean of a pair (a two-tap low-pass before decimation).
// An odd trailing byte or sample is ignored.
func l16x2ToUlaw(b []byte) []byte {
	n := len(b) / 4
	out := make([]byte, n)
	for i := range n {
		a := int32(int16(binary.LittleEndian.Uint16(b[4*i:])))
		c := int32(int16(binary.LittleEndian.Uint16(b[4*i+2:])))
		out[i] = pcm.ULaw(int16((a + c) / 2))
	}
	return out
}
