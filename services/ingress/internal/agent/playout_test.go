package agent

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = (seed + byte(i)) & 0x7f // never µ-law silence (0xff)
	}
	return b
}

// Chunks of any size come out as 20 ms frames, in order, and a mark is
// due with the frame that completes the audio before it.
func TestPlayoutReframesAndMarks(t *testing.T) {
	p := NewPlayout(8000)
	audio := pattern(1000, 1) // 6.25 frames
	for off := 0; off < len(audio); off += 333 {
		p.Push(audio[off:min(off+333, len(audio))])
	}
	require.Empty(t, p.Mark("end"))
	var out []byte
	var due []string
	buf := make([]byte, FrameBytes)
	for range 7 {
		f, isAudio, d := p.Next(buf)
		require.True(t, isAudio)
		out = append(out, f...)
		due = append(due, d...)
		if len(out) < 7*FrameBytes {
			require.Empty(t, d, "the mark is due only with the last frame")
		}
	}
	require.Equal(t, []string{"end"}, due)
	require.Equal(t, audio, out[:1000])
	require.Equal(t, bytes.Repeat([]byte{ulawSilence}, 7*FrameBytes-1000), out[1000:], "the partial frame is padded")
	f, isAudio, d := p.Next(buf)
	require.False(t, isAudio)
	require.Empty(t, d)
	require.Equal(t, bytes.Repeat([]byte{ulawSilence}, FrameBytes), f)
	st := p.Stats()
	require.EqualValues(t, 7, st.Played)
	require.EqualValues(t, 1, st.Silent)
}

// A partial frame with no mark after it waits one tick for the rest.
func TestPlayoutHoldsPartialFrameOneTick(t *testing.T) {
	p := NewPlayout(8000)
	p.Push(pattern(100, 1))
	buf := make([]byte, FrameBytes)
	_, isAudio, _ := p.Next(buf)
	require.False(t, isAudio, "held back: the rest may be coming")
	p.Push(pattern(60, 101))
	f, isAudio, _ := p.Next(buf)
	require.True(t, isAudio)
	require.Equal(t, append(pattern(100, 1), pattern(60, 101)...), f)

	p.Push(pattern(10, 1))
	_, isAudio, _ = p.Next(buf)
	require.False(t, isAudio)
	_, isAudio, _ = p.Next(buf)
	require.True(t, isAudio, "held one tick only")
}

// Beyond the bound the oldest audio goes, whole frames, and is counted;
// the newest is kept.
func TestPlayoutBoundDropsOldest(t *testing.T) {
	p := NewPlayout(10 * FrameBytes)
	p.Mark("before") // due at once: nothing queued
	p.Push(pattern(8*FrameBytes, 0))
	p.Mark("mid")
	dropped, due := p.Push(pattern(4*FrameBytes, 50))
	require.Equal(t, 2, dropped)
	require.Equal(t, []string{"before"}, due, "due: nothing was before it; mid's audio is not all dropped")
	require.Equal(t, 10*FrameBytes, p.Queued())
	dropped, due = p.Push(pattern(9*FrameBytes, 90))
	require.Equal(t, 9, dropped)
	require.Equal(t, []string{"mid"}, due, "its audio was dropped: it is due now")
	buf := make([]byte, FrameBytes)
	var last []byte
	for p.Queued() > 0 {
		f, _, _ := p.Next(buf)
		last = append([]byte(nil), f...)
	}
	require.Equal(t, pattern(9*FrameBytes, 90)[8*FrameBytes:], last, "the newest audio is kept")
	require.EqualValues(t, 11, p.Stats().Dropped)
	require.Equal(t, 10*FrameBytes, p.Stats().MaxQueued)
}

// Clear drops the queue at once and hands back its marks.
func TestPlayoutClear(t *testing.T) {
	p := NewPlayout(8000)
	p.Push(pattern(5*FrameBytes, 0))
	p.Mark("a")
	p.Push(pattern(FrameBytes, 0))
	p.Mark("b")
	require.Equal(t, []string{"a", "b"}, p.Clear())
	require.Zero(t, p.Queued())
	_, isAudio, due := p.Next(make([]byte, FrameBytes))
	require.False(t, isAudio)
	require.Empty(t, due)
	require.EqualValues(t, 6, p.Stats().Cleared)
}

// Marks beyond the bound are due at once, oldest first.
func TestPlayoutBoundsMarks(t *testing.T) {
	p := NewPlayout(8000)
	p.Push(pattern(FrameBytes, 0))
	var due []string
	for i := range maxMarks + 3 {
		due = append(due, p.Mark(string(rune('a'+i%26)))...)
	}
	require.Len(t, due, 3)
}
