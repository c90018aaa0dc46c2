// Package whisper reads the audio a warm transfer plays to its destination
// before the caller is bridged: a WAV file of 8 kHz mono 16-bit PCM, cut
// into 20 ms frames and encoded with the leg's G.711 law.
package whisper

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// SampleRate is the only rate accepted (G.711's).
const SampleRate = 8000

// FrameSamples is one 20 ms packet's worth of samples.
const FrameSamples = SampleRate / 50

// ErrAudio means the whisper cannot be played.
var ErrAudio = errors.New("unusable whisper")

// Audio is a decoded whisper.
type Audio struct {
	Samples []int16
}

// Duration is how long it plays.
func (a Audio) Duration() time.Duration {
	return time.Duration(len(a.Samples)) * time.Second / SampleRate
}

// maxFileSize bounds what Load reads: ten minutes of 8 kHz 16-bit audio.
const maxFileSize = 10 * 60 * SampleRate * 2

// Load reads a local WAV file (absolute path). URLs are refused. A file
// longer than maxDur (when positive) is refused.
func Load(path string, maxDur time.Duration) (Audio, error) {
	if strings.Contains(path, "://") {
		return Audio{}, fmt.Errorf("%w: %q is a URL: only local files are supported", ErrAudio, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return Audio{}, fmt.Errorf("%w: %w", ErrAudio, err)
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1024))
	if err != nil {
		return Audio{}, fmt.Errorf("%w: read %s: %w", ErrAudio, path, err)
	}
	a, err := ParseWAV(b)
	if err != nil {
		return Audio{}, fmt.Errorf("%s: %w", path, err)
	}
	if maxDur > 0 && a.Duration() > maxDur {
		return Audio{}, fmt.Errorf("%w: %s plays %v, more than invite.whisper.max_duration %v", ErrAudio, path, a.Duration(), maxDur)
	}
	return a, nil
}

// ParseWAV reads a RIFF/WAVE file of 8 kHz mono 16-bit PCM.
func ParseWAV(b []byte) (Audio, error) {
	if len(b) < 12 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return Audio{}, fmt.Errorf("%w: not a RIFF/WAVE file", ErrAudio)
	}
	var haveFmt bool
	for p := 12; p+8 <= len(b); {
		id, size := string(b[p:p+4]), int(binary.LittleEndian.Uint32(b[p+4:p+8]))
		body := b[p+8:]
		if size > len(body) || size < 0 {
			if id != "data" {
				return Audio{}, fmt.Errorf("%w: chunk %q overruns the file", ErrAudio, id)
			}
			size = len(body) // a truncated data chunk (streamed writers)
		}
		body = body[:size]
		switch id {
		case "fmt ":
			if size < 16 {
				return Audio{}, fmt.Errorf("%w: fmt chunk of %d bytes", ErrAudio, size)
			}
			format := binary.LittleEndian.Uint16(body[0:2])
			channels := binary.LittleEndian.Uint16(body[2:4])
			rate := binary.LittleEndian.Uint32(body[4:8])
			bits := binary.LittleEndian.Uint16(body[14:16])
			if format == 0xFFFE && size >= 26 { // WAVE_FORMAT_EXTENSIBLE: the sub-format
				format = binary.LittleEndian.Uint16(body[24:26])
			}
			if format != 1 || channels != 1 || rate != SampleRate || bits != 16 {
				return Audio{}, fmt.Errorf("%w: format %d, %d channels, %d Hz, %d bits: want PCM (1), mono, 8000 Hz, 16 bits",
					ErrAudio, format, channels, rate, bits)
			}
			haveFmt = true
		case "data":
			if !haveFmt {
				return Audio{}, fmt.Errorf("%w: data before fmt", ErrAudio)
			}
			s := make([]int16, size/2)
			for i := range s {
				s[i] = int16(binary.LittleEndian.Uint16(body[2*i:]))
			}
			if len(s) == 0 {
				return Audio{}, fmt.Errorf("%w: no samples", ErrAudio)
			}
			return Audio{Samples: s}, nil
		}
		p += 8 + size + size%2 // chunks are word-aligned
	}
	return Audio{}, fmt.Errorf("%w: no data chunk", ErrAudio)
}

// Frames encodes the audio as 20 ms payloads of codec (PCMU or PCMA); the
// last frame is padded with silence.
func (a Audio) Frames(codec string) ([][]byte, error) {
	var enc func(int16) byte
	switch strings.ToUpper(codec) {
	case "PCMU":
		enc = ULaw
	case "PCMA":
		enc = ALaw
	default:
		return nil, fmt.Errorf("%w: the leg's codec is %s: whispers play on G.711 (PCMU, PCMA) only", ErrAudio, codec)
	}
	n := (len(a.Samples) + FrameSamples - 1) / FrameSamples
	frames := make([][]byte, n)
	for i := range frames {
		f := make([]byte, FrameSamples)
		for j := range f {
			var s int16
			if k := i*FrameSamples + j; k < len(a.Samples) {
				s = a.Samples[k]
			}
			f[j] = enc(s)
		}
		frames[i] = f
	}
	return frames, nil
}

// ULaw encodes one sample with G.711 mu-law.
func ULaw(s int16) byte {
	const bias, clip = 0x84, 32635
	x := int(s)
	sign := 0
	if x < 0 {
		x, sign = -x, 0x80
	}
	if x > clip {
		x = clip
	}
	x += bias
	exp := 7
	for mask := 0x4000; x&mask == 0 && exp > 0; mask >>= 1 {
		exp--
	}
	mant := (x >> (exp + 3)) & 0x0F
	return ^byte(sign | exp<<4 | mant)
}

// ALaw encodes one sample with G.711 A-law.
func ALaw(s int16) byte {
	x := int(s)
	sign := 0x80
	if x < 0 {
		x, sign = -x-1, 0
	}
	if x > 32767 {
		x = 32767
	}
	var out int
	if x < 256 {
		out = x >> 4
	} else {
		exp := 1
		for v := x >> 8; v > 1; v >>= 1 {
			exp++
		}
		out = exp<<4 | (x>>(exp+3))&0x0F
	}
	return byte(out|sign) ^ 0x55
}
