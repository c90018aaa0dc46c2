// Package audio loads the greeting ingress plays to callers: a WAV file of
// 8 kHz mono 16-bit PCM, encoded once to G.711 µ-law and A-law.
package audio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/baton-voice/baton/services/ingress/internal/rtp"
)

// ErrFormat means the file is not a WAV file ingress can play.
var ErrFormat = errors.New("want a WAV file of 8000 Hz mono 16-bit PCM")

// maxSamples bounds a greeting to ten minutes, so a wrong path cannot
// make ingress hold gigabytes.
const maxSamples = 10 * 60 * 8000

// Load reads the WAV file at path and encodes it for RTP.
func Load(path string) (rtp.Clip, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return rtp.Clip{}, fmt.Errorf("read greeting: %w", err)
	}
	samples, err := ParseWAV(data)
	if err != nil {
		return rtp.Clip{}, fmt.Errorf("greeting %s: %w", path, err)
	}
	return Encode(samples), nil
}

// ParseWAV returns the samples of an 8 kHz mono 16-bit PCM WAV file.
func ParseWAV(data []byte) ([]int16, error) {
	if len(data) < 12 || string(data[0:4]) != "RIFF" || string(data[8:12]) != "WAVE" {
		return nil, fmt.Errorf("%w: no RIFF/WAVE header", ErrFormat)
	}
	var haveFmt bool
	rest := data[12:]
	for len(rest) >= 8 {
		id, size := string(rest[0:4]), binary.LittleEndian.Uint32(rest[4:8])
		rest = rest[8:]
		if uint64(size) > uint64(len(rest)) {
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
			if format != 1 || channels != 1 || rate != 8000 || bits != 16 {
				return nil, fmt.Errorf("%w: format %d, %d channels, %d Hz, %d bits", ErrFormat, format, channels, rate, bits)
			}
			haveFmt = true
		case "data":
			if !haveFmt {
				return nil, fmt.Errorf("%w: data before fmt", ErrFormat)
			}
			n := len(body) / 2
			if n > maxSamples {
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

// Encode turns samples into a clip, padded with silence to whole frames.
func Encode(samples []int16) rtp.Clip {
	n := (len(samples) + rtp.FrameSamples - 1) / rtp.FrameSamples * rtp.FrameSamples
	c := rtp.Clip{PCMU: make([]byte, n), PCMA: make([]byte, n)}
	for i := range n {
		var s int16
		if i < len(samples) {
			s = samples[i]
		}
		c.PCMU[i] = ULaw(s)
		c.PCMA[i] = ALaw(s)
	}
	return c
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
