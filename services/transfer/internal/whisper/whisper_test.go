package whisper

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/pcm"
)

// Reference decoders (ITU-T G.711, as in Sun's g711.c).
func ulawDecode(u byte) int {
	u = ^u
	t := (int(u&0x0F) << 3) + 0x84
	t <<= (u & 0x70) >> 4
	if u&0x80 != 0 {
		return 0x84 - t
	}
	return t - 0x84
}

func alawDecode(a byte) int {
	a ^= 0x55
	t := int(a&0x0F) << 4
	seg := int(a&0x70) >> 4
	switch seg {
	case 0:
		t += 8
	case 1:
		t += 0x108
	default:
		t += 0x108
		t <<= seg - 1
	}
	if a&0x80 != 0 {
		return t
	}
	return -t
}

func TestG711KnownValuesAndRoundTrip(t *testing.T) {
	require.Equal(t, byte(0xFF), pcm.ULaw(0))
	require.Equal(t, byte(0x80), pcm.ULaw(32767))
	require.Equal(t, byte(0x00), pcm.ULaw(-32768))
	require.Equal(t, byte(0xD5), pcm.ALaw(0))
	require.Equal(t, byte(0xAA), pcm.ALaw(32767))
	require.Equal(t, byte(0x2A), pcm.ALaw(-32768))
	for s := -32768; s <= 32767; s += 7 {
		for name, c := range map[string]struct {
			enc func(int16) byte
			dec func(byte) int
		}{"ulaw": {pcm.ULaw, ulawDecode}, "alaw": {pcm.ALaw, alawDecode}} {
			got := c.dec(c.enc(int16(s)))
			// G.711 quantisation: the step doubles per segment, at most
			// 1/16 of the magnitude (plus the first segment's step).
			tol := max(abs(s)/16, 16)
			if abs(s) > 32000 {
				tol = 1100 // clipping at the top of the range
			}
			require.LessOrEqual(t, abs(got-s), tol, "%s %d -> %d", name, s, got)
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// WAV writes a RIFF/WAVE file of 16-bit PCM.
func WAV(rate uint32, channels uint16, samples []int16) []byte {
	data := make([]byte, 2*len(samples))
	for i, s := range samples {
		binary.LittleEndian.PutUint16(data[2*i:], uint16(s))
	}
	b := []byte("RIFF\x00\x00\x00\x00WAVE")
	b = append(b, "fmt "...)
	b = binary.LittleEndian.AppendUint32(b, 16)
	b = binary.LittleEndian.AppendUint16(b, 1)
	b = binary.LittleEndian.AppendUint16(b, channels)
	b = binary.LittleEndian.AppendUint32(b, rate)
	b = binary.LittleEndian.AppendUint32(b, rate*uint32(channels)*2)
	b = binary.LittleEndian.AppendUint16(b, channels*2)
	b = binary.LittleEndian.AppendUint16(b, 16)
	b = append(b, "LIST\x04\x00\x00\x00INFO"...) // a chunk to skip
	b = append(b, "data"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)-8))
	return b
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}
	samples := make([]int16, 1000) // 125 ms: 7 frames, the last padded
	for i := range samples {
		samples[i] = int16(i * 30)
	}
	good := write("good.wav", WAV(8000, 1, samples))
	a, err := Load(good, time.Second)
	require.NoError(t, err)
	require.Equal(t, samples, a.Samples)
	require.Equal(t, 125*time.Millisecond, a.Duration())
	frames, err := a.Frames("PCMU")
	require.NoError(t, err)
	require.Len(t, frames, 7)
	require.Equal(t, pcm.ULaw(samples[161]), frames[1][1])
	require.Equal(t, pcm.ULaw(0), frames[6][159], "padding is silence")
	frames, err = a.Frames("pcma")
	require.NoError(t, err)
	require.Equal(t, pcm.ALaw(samples[5]), frames[0][5])
	_, err = a.Frames("opus")
	require.ErrorContains(t, err, "G.711")

	for _, tc := range []struct {
		name, path, want string
		max              time.Duration
	}{
		{name: "url", path: "https://example.com/w.wav", want: "is a URL"},
		{name: "missing", path: filepath.Join(dir, "nope.wav"), want: "no such file"},
		{name: "16 kHz", path: write("wide.wav", WAV(16000, 1, samples)), want: "16000 Hz"},
		{name: "stereo", path: write("stereo.wav", WAV(8000, 2, samples)), want: "2 channels"},
		{name: "not wav", path: write("x.wav", []byte("ID3 mp3 data")), want: "not a RIFF/WAVE"},
		{name: "too long", path: good, max: 100 * time.Millisecond, want: "max_duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.path, tc.max)
			require.ErrorIs(t, err, ErrAudio)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func FuzzParseWAV(f *testing.F) {
	f.Add(WAV(8000, 1, []int16{1, 2, 3}))
	f.Add([]byte("RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseWAV(b)
		if err == nil {
			require.NotEmpty(t, a.Samples)
		}
	})
}
