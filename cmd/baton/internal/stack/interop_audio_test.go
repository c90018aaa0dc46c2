//go:build interop

package stack

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// waitFor retries check every 100 ms until it returns nil; after limit it
// fails the test with check's last error.
func waitFor(t *testing.T, what string, limit time.Duration, check func() error) {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("%s: not after %v: %v", what, limit, err)
		case <-t.Context().Done():
			t.Fatalf("%s: %v", what, t.Context().Err())
		case <-tick.C:
		}
	}
}

func contextTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), d)
}

// wav is 16-bit PCM audio read from a WAV file, mixed down to mono.
type wav struct {
	rate    int
	samples []float64 // -1..1
}

// writeSineWAV writes seconds of a sine of hz at 8 kHz, 16-bit mono: the
// microphone of a peer that plays a file.
func writeSineWAV(path string, hz float64, seconds int) error {
	const rate = 8000
	n := rate * seconds
	data := append(wavHeader(rate, 1, 2*n), make([]byte, 2*n)...)
	for i := range n {
		v := int16(0.3 * 32767 * math.Sin(2*math.Pi*hz*float64(i)/rate))
		binary.LittleEndian.PutUint16(data[44+2*i:], uint16(v))
	}
	return os.WriteFile(path, data, 0o644)
}

// wavHeader is the 44-byte header of a 16-bit PCM WAV file with size
// bytes of samples.
func wavHeader(rate, channels, size int) []byte {
	h := make([]byte, 44)
	copy(h[0:], "RIFF")
	binary.LittleEndian.PutUint32(h[4:], uint32(36+size))
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16)
	binary.LittleEndian.PutUint16(h[20:], 1) // PCM
	binary.LittleEndian.PutUint16(h[22:], uint16(channels))
	binary.LittleEndian.PutUint32(h[24:], uint32(rate))
	binary.LittleEndian.PutUint32(h[28:], uint32(rate*channels*2))
	binary.LittleEndian.PutUint16(h[32:], uint16(channels*2))
	binary.LittleEndian.PutUint16(h[34:], 16)
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], uint32(size))
	return h
}

// readWAV reads a RIFF WAVE file of 16-bit PCM, any rate and channels.
func readWAV(path string) (wav, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return wav{}, err
	}
	if len(data) >= 44 && bytes.Equal(data[:44], make([]byte, 44)) {
		// linphonec's recorder writes a zeroed header and fills it in
		// when the call ends; until then it is the call's audio as
		// decoded: 16-bit mono at the codec's rate, 8 kHz for PCMU.
		data = append(wavHeader(8000, 1, len(data)-44), data[44:]...)
	}
	if len(data) < 12 || string(data[0:4]) != "RIFF" || string(data[8:12]) != "WAVE" {
		return wav{}, fmt.Errorf("%s: not a RIFF WAVE file", path)
	}
	var w wav
	channels, bits := 0, 0
	for off := 12; off+8 <= len(data); {
		id := string(data[off : off+4])
		size := int(binary.LittleEndian.Uint32(data[off+4:]))
		end := off + 8 + size
		if end > len(data) || id == "data" {
			// The samples run to the end of the file: a recording
			// still being written has a size of 0, or of what it held
			// when linphonec paused it, in its header.
			end = len(data)
		}
		body := data[off+8 : end]
		switch id {
		case "fmt ":
			if len(body) < 16 {
				return wav{}, fmt.Errorf("%s: short fmt chunk", path)
			}
			channels = int(binary.LittleEndian.Uint16(body[2:]))
			w.rate = int(binary.LittleEndian.Uint32(body[4:]))
			bits = int(binary.LittleEndian.Uint16(body[14:]))
		case "data":
			if bits != 16 || channels < 1 {
				return wav{}, fmt.Errorf("%s: want 16-bit PCM, have %d bits, %d channels", path, bits, channels)
			}
			frames := len(body) / (2 * channels)
			w.samples = make([]float64, frames)
			for i := range frames {
				var sum float64
				for c := range channels {
					sum += float64(int16(binary.LittleEndian.Uint16(body[2*(i*channels+c):]))) / 32768
				}
				w.samples[i] = sum / float64(channels)
			}
			return w, nil
		}
		off += 8 + size + size%2
	}
	return wav{}, errors.New(path + ": no data chunk")
}

// goertzel is the power of frequency hz in samples at rate (the Goertzel
// algorithm: one DFT bin).
func goertzel(samples []float64, rate int, hz float64) float64 {
	k := 2 * math.Cos(2*math.Pi*hz/float64(rate))
	var s1, s2 float64
	for _, x := range samples {
		s1, s2 = x+k*s1-s2, s1
	}
	return (s1*s1 + s2*s2 - k*s1*s2) / float64(len(samples)*len(samples))
}

// toneWindows splits w into windows of 250 ms and returns, for each one
// loud enough to be more than silence or comfort noise, its dominant
// frequency between 200 and 3400 Hz (in 20 Hz steps).
func toneWindows(w wav) []float64 {
	size := w.rate / 4
	var out []float64
	for off := 0; off+size <= len(w.samples); off += size {
		win := w.samples[off : off+size]
		var energy float64
		for _, x := range win {
			energy += x * x
		}
		if math.Sqrt(energy/float64(size)) < 0.01 { // below -40 dBFS: silence
			continue
		}
		best, bestHz := 0.0, 0.0
		for hz := 200.0; hz <= 3400; hz += 20 {
			if p := goertzel(win, w.rate, hz); p > best {
				best, bestHz = p, hz
			}
		}
		out = append(out, bestHz)
	}
	return out
}

// heardTone reports how many 250 ms windows of the files have hz (within
// 30 Hz) as their dominant frequency, and every window's frequency for
// the failure message.
func heardTone(files []string, hz float64) (int, []float64, error) {
	n := 0
	var all []float64
	for _, f := range files {
		w, err := readWAV(f)
		if err != nil {
			return 0, nil, err
		}
		for _, got := range toneWindows(w) {
			all = append(all, got)
			if math.Abs(got-hz) <= 30 {
				n++
			}
		}
	}
	return n, all, nil
}

// TestGoertzel: the tone check finds the tone a file holds and no other,
// and calls silence silence.
func TestGoertzel(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/tone.wav"
	require.NoError(t, writeSineWAV(path, 1300, 2))
	n, all, err := heardTone([]string{path}, 1300)
	require.NoError(t, err)
	require.Equal(t, 8, n, "every window of a 2 s 1300 Hz tone: %v", all)
	n, _, err = heardTone([]string{path}, 700)
	require.NoError(t, err)
	require.Zero(t, n)

	w, err := readWAV(path)
	require.NoError(t, err)
	for i := range w.samples {
		w.samples[i] = 0
	}
	require.Empty(t, toneWindows(w))
}
