package audio

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/pcm"
	"github.com/baton-voice/baton/services/ingress/internal/rtp"
)

// WAV renders samples as a WAV file with the given format fields.
func WAV(samples []int16, rate uint32, channels, bits uint16) []byte {
	data := make([]byte, 2*len(samples))
	for i, s := range samples {
		binary.LittleEndian.PutUint16(data[2*i:], uint16(s))
	}
	b := []byte("RIFF....WAVE")
	b = append(b, "fmt "...)
	b = binary.LittleEndian.AppendUint32(b, 16)
	b = binary.LittleEndian.AppendUint16(b, 1)
	b = binary.LittleEndian.AppendUint16(b, channels)
	b = binary.LittleEndian.AppendUint32(b, rate)
	b = binary.LittleEndian.AppendUint32(b, rate*uint32(channels)*uint32(bits)/8)
	b = binary.LittleEndian.AppendUint16(b, channels*bits/8)
	b = binary.LittleEndian.AppendUint16(b, bits)
	b = append(b, "LIST"...) // an odd-sized chunk to skip
	b = binary.LittleEndian.AppendUint32(b, 3)
	b = append(b, 'a', 'b', 'c', 0)
	b = append(b, "data"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)-8))
	return b
}

func TestLoad(t *testing.T) {
	samples := make([]int16, 400) // 2.5 frames: padded to 3
	for i := range samples {
		samples[i] = int16(i * 50)
	}
	cases := []struct {
		name     string
		file     []byte
		wantErr  bool
		wantSize int
	}{
		{"8k mono 16-bit", WAV(samples, 8000, 1, 16), false, 3 * rtp.FrameSamples},
		{"16 kHz", WAV(samples, 16000, 1, 16), true, 0},
		{"stereo", WAV(samples, 8000, 2, 16), true, 0},
		{"8-bit", WAV(samples, 8000, 1, 8), true, 0},
		{"not riff", []byte("hello world, this is not a wav"), true, 0},
		{"truncated", WAV(samples, 8000, 1, 16)[:60], true, 0},
	}
	dir := t.TempDir()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".wav")
			require.NoError(t, os.WriteFile(path, tc.file, 0o600))
			clip, err := Load(path)
			if tc.wantErr {
				require.ErrorIs(t, err, pcm.ErrFormat)
				return
			}
			require.NoError(t, err)
			require.Len(t, clip.PCMU, tc.wantSize)
			require.Len(t, clip.PCMA, tc.wantSize)
			require.Equal(t, 3, clip.Frames())
			require.Equal(t, pcm.ULaw(samples[399]), clip.PCMU[399])
			require.Equal(t, pcm.ALaw(samples[123]), clip.PCMA[123])
			require.Equal(t, byte(0xff), clip.PCMU[400], "padding is silence")
		})
	}
	_, err := Load(filepath.Join(dir, "missing.wav"))
	require.Error(t, err)
}
