package audio

import "testing"

// FuzzParseWAV: any bytes either parse to samples or give ErrFormat.
func FuzzParseWAV(f *testing.F) {
	f.Add(WAV([]int16{1, -1, 1000}, 8000, 1, 16))
	f.Add(WAV(nil, 16000, 2, 16))
	f.Add([]byte("RIFF\x04\x00\x00\x00WAVE"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseWAV(b)
		if err == nil && len(s) > maxSamples {
			t.Fatalf("%d samples", len(s))
		}
	})
}
