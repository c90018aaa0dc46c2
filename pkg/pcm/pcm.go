// Package pcm reads and encodes the audio Baton plays into calls: 8 kHz
// mono 16-bit PCM from WAV files, and G.711 (µ-law for PCMU, A-law for
// PCMA). Ingress plays greetings with it, transfer whispers.
package pcm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// SampleRate is the only rate Baton plays (G.711's).
const SampleRate = 8000

// FrameSamples is one 20 ms RTP packet's worth of samples.
const FrameSamples = SampleRate / 50

// ErrFormat means the file is not a WAV file Baton can play.
var ErrFormat = errors.New("want a WAV file of 8000 Hz mono 16-bit PCM")

// MaxSamples bounds a clip to ten minutes, so a wrong path cannot make a
// service hold gigabytes.
const MaxSamples = 10 * 60 * SampleRate

// ParseWAV returns the samples of an 8 kHz mono 16-bit PCM WAV file
// (WAVE_FORMAT_EXTENSIBLE with a PCM sub-format included).
func ParseWAV(data []byte) ([]int16, error) {
	if len(data) < 12 || string(data[0:4]) != "RIFF" || string(data[8:12]) != "WAVE" {
		return nil, fmt.Errorf("%w: not a RIFF/WAVE file", ErrFormat)
	}
	var haveFmt bool
	rest := data[12:]
	for len(rest) >= 8 {
		id, size := string(rest[0:4]), uint64(binary.LittleEndian.Uint32(rest[4:8]))
		rest = rest[8:]
		if size > uint64(len(rest)) {
			return nil, fmt.Errorf("%w: chunk %q runs past the end", ErrFormat, id)
		}
		body := rest[:size]
		switch id {
		case "fmt ":
			if len(body) < 16 {
				return nil, fmt.Errorf("%w: short fmt chunk", ErrFormat)
			}
			format := binary.LittleEndian.Uint16(body[0:2])
			channels := binary.LittleEndian.Uint16(body[2:4])
			rate := binary.LittleEndian.Uint32(body[4:8])
			bits := binary.LittleEndian.Uint16(body[14:16])
			if format == 0xFFFE && len(body) >= 26 { // WAVE_FORMAT_EXTENSIBLE: the sub-format
				format = binary.LittleEndian.Uint16(body[24:26])
			}
			if format != 1 || channels != 1 || rate != SampleRate || bits != 16 {
				return nil, fmt.Errorf("%w: format %d, %d channels, %d Hz, %d bits", ErrFormat, format, channels, rate, bits)
			}
			haveFmt = true
		case "data":
			if !haveFmt {
				return nil, fmt.Errorf("%w: data before fmt", ErrFormat)
			}
			n := len(body) / 2
			if n > MaxSamples {
				return nil, fmt.Errorf("%w: longer than 10 minutes", ErrFormat)
			}
			out := make([]int16, n)
			for i := range out {
				out[i] = int16(binary.LittleEndian.Uint16(body[2*i:]))
			}
			return out, nil
		}
		rest = rest[size:]
		if size%2 == 1 && len(rest) > 0 { // chunks are word-aligned
			rest = rest[1:]
		}
	}
	return nil, fmt.Errorf("%w: no data chunk", ErrFormat)
}

// ULaw encodes one sample as G.711 µ-law.
func ULaw(s int16) byte {
	const bias, clip = 0x84, 32635
	v := int(s)
	sign := 0
	if v < 0 {
		v, sign = -v, 0x80
	}
	v = min(v, clip) + bias
	exp := 7
	for mask := 0x4000; v&mask == 0 && exp > 0; mask >>= 1 {
		exp--
	}
	mant := (v >> (exp + 3)) & 0x0f
	return ^byte(sign | exp<<4 | mant)
}

// ALaw encodes one sample as G.711 A-law.
func ALaw(s int16) byte {
	pcm := int(s) >> 3
	mask := 0xd5
	if pcm < 0 {
		mask, pcm = 0x55, -pcm-1
	}
	seg := 0
	for end := 0x1f; seg < 8 && pcm > end; end = end<<1 | 1 {
		seg++
	}
	if seg >= 8 {
		return byte(0x7f ^ mask)
	}
	aval := seg << 4
	if seg < 2 {
		aval |= (pcm >> 1) & 0x0f
	} else {
		aval |= (pcm >> seg) & 0x0f
	}
	return byte(aval ^ mask)
}

// DecodeULaw and DecodeALaw invert ULaw and ALaw (to within G.711's step).
func DecodeULaw(u byte) int16 {
	u = ^u
	t := (int(u&0x0f) << 3) + 0x84
	t <<= (u & 0x70) >> 4
	if u&0x80 != 0 {
		return int16(0x84 - t)
	}
	return int16(t - 0x84)
}

// DecodeALaw inverts ALaw.
func DecodeALaw(a byte) int16 {
	a ^= 0x55
	t := int(a&0x0f) << 4
	switch seg := int(a&0x70) >> 4; seg {
	case 0:
		t += 8
	case 1:
		t += 0x108
	default:
		t += 0x108
		t <<= seg - 1
	}
	if a&0x80 != 0 {
		return int16(t)
	}
	return int16(-t)
}

// The G.711 laws converted into each other through linear PCM, one table
// each, built once: a PCMA call's audio is transcoded byte by byte, 50
// frames a second per call.
var (
	alawToULaw = transcodeTable(DecodeALaw, ULaw)
	ulawToALaw = transcodeTable(DecodeULaw, ALaw)
)

func transcodeTable(decode func(byte) int16, encode func(int16) byte) *[256]byte {
	var t [256]byte
	for i := range t {
		t[i] = encode(decode(byte(i)))
	}
	return &t
}

// ALawToULaw is the µ-law byte of an A-law byte's sample.
func ALawToULaw(a byte) byte { return alawToULaw[a] }

// ULawToALaw is the A-law byte of a µ-law byte's sample.
func ULawToALaw(u byte) byte { return ulawToALaw[u] }
