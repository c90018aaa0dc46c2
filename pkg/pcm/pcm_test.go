package pcm

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
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

func TestG711(t *testing.T) {
	require.Equal(t, byte(0xff), ULaw(0))
	require.Equal(t, byte(0xd5), ALaw(0))
	// Reference values (ITU-T G.711 tables, Sun g711.c).
	require.Equal(t, byte(0x80), ULaw(32767))
	require.Equal(t, byte(0x00), ULaw(-32768))
	require.Equal(t, byte(0xaa), ALaw(32767))
	require.Equal(t, byte(0x2a), ALaw(-32768))
	for s := -32768; s <= 32767; s += 7 {
		in := int16(s)
		tol := max(abs(int(in))/16, 16)
		require.InDelta(t, int(in), int(DecodeULaw(ULaw(in))), float64(tol), "ulaw %d", s)
		require.InDelta(t, int(in), int(DecodeALaw(ALaw(in))), float64(tol), "alaw %d", s)
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func TestParseWAV(t *testing.T) {
	samples := []int16{0, 1, -1, 32767, -32768}
	got, err := ParseWAV(WAV(samples, 8000, 1, 16))
	require.NoError(t, err)
	require.Equal(t, samples, got)
	for name, file := range map[string][]byte{
		"16 kHz":    WAV(samples, 16000, 1, 16),
		"stereo":    WAV(samples, 8000, 2, 16),
		"8-bit":     WAV(samples, 8000, 1, 8),
		"not riff":  []byte("ID3 mp3 data, not a wav file"),
		"truncated": WAV(samples, 8000, 1, 16)[:50],
	} {
		_, err := ParseWAV(file)
		require.ErrorIs(t, err, ErrFormat, name)
	}
}

// FuzzParseWAV: any bytes either parse to a bounded number of samples or
// give ErrFormat.
func FuzzParseWAV(f *testing.F) {
	f.Add(WAV([]int16{1, -1, 1000}, 8000, 1, 16))
	f.Add(WAV(nil, 16000, 2, 16))
	f.Add([]byte("RIFF\x04\x00\x00\x00WAVE"))
	f.Add([]byte("RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseWAV(b)
		if err != nil {
			require.ErrorIs(t, err, ErrFormat)
			return
		}
		if len(s) > MaxSamples {
			t.Fatalf("%d samples", len(s))
		}
	})
}

// The transcoding tables are the laws composed through linear PCM, for
// every byte.
func TestTranscodeTables(t *testing.T) {
	for i := range 256 {
		b := byte(i)
		if got, want := ALawToULaw(b), ULaw(DecodeALaw(b)); got != want {
			t.Fatalf("ALawToULaw(%#x) = %#x, want %#x", b, got, want)
		}
		if got, want := ULawToALaw(b), ALaw(DecodeULaw(b)); got != want {
			t.Fatalf("ULawToALaw(%#x) = %#x, want %#x", b, got, want)
		}
	}
}
