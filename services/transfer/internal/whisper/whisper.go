// Package whisper reads the audio a warm transfer plays to its destination
// before the caller is bridged: a WAV file of 8 kHz mono 16-bit PCM, cut
// into 20 ms frames and encoded with the leg's G.711 law. Load reads a
// local file; Fetcher gets one from an http(s) URL of an allowed host,
// within a timeout and a size bound, and caches it.
package whisper

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/baton-voice/baton/pkg/pcm"
)

// SampleRate is the only rate accepted (G.711's).
const SampleRate = pcm.SampleRate

// FrameSamples is one 20 ms packet's worth of samples.
const FrameSamples = pcm.FrameSamples

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

// Load reads a local WAV file (absolute path). URLs are refused (Fetcher
// gets those). A file longer than maxDur (when positive) is refused.
func Load(path string, maxDur time.Duration) (Audio, error) {
	if IsURL(path) {
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

// ParseWAV reads a RIFF/WAVE file of 8 kHz mono 16-bit PCM with at least
// one sample.
func ParseWAV(b []byte) (Audio, error) {
	a, err := decodeWAV(b)
	if err != nil {
		return Audio{}, fmt.Errorf("%w: %w", ErrAudio, err)
	}
	return a, nil
}

// decodeWAV is ParseWAV without ErrAudio.
func decodeWAV(b []byte) (Audio, error) {
	samples, err := pcm.ParseWAV(b)
	if err != nil {
		return Audio{}, err
	}
	if len(samples) == 0 {
		return Audio{}, fmt.Errorf("%w: no samples", pcm.ErrFormat)
	}
	return Audio{Samples: samples}, nil
}

// Frames encodes the audio as 20 ms payloads of codec (PCMU or PCMA); the
// last frame is padded with silence.
func (a Audio) Frames(codec string) ([][]byte, error) {
	var enc func(int16) byte
	switch strings.ToUpper(codec) {
	case "PCMU":
		enc = pcm.ULaw
	case "PCMA":
		enc = pcm.ALaw
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
