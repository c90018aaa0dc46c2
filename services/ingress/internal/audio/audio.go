// Package audio loads the greeting ingress plays to callers: a WAV file of
// 8 kHz mono 16-bit PCM (pkg/pcm), encoded once to G.711 µ-law and A-law.
package audio

import (
	"fmt"
	"os"

	"github.com/baton-voice/baton/pkg/pcm"
	"github.com/baton-voice/baton/services/ingress/internal/rtp"
)

// Load reads the WAV file at path and encodes it for RTP.
func Load(path string) (rtp.Clip, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return rtp.Clip{}, fmt.Errorf("read greeting: %w", err)
	}
	samples, err := pcm.ParseWAV(data)
	if err != nil {
		return rtp.Clip{}, fmt.Errorf("greeting %s: %w", path, err)
	}
	return Encode(samples), nil
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
		c.PCMU[i] = pcm.ULaw(s)
		c.PCMA[i] = pcm.ALaw(s)
	}
	return c
}
