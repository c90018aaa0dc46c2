package agent

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/pcm"
)

func TestParseBot(t *testing.T) {
	audio := []byte{1, 2, 3}
	m, err := parseBot([]byte(`{"event":"media","streamSid":"MZ1","media":{"payload":"`+base64.StdEncoding.EncodeToString(audio)+`"}}`), "MZ1")
	require.NoError(t, err)
	require.Equal(t, botMessage{event: "media", audio: audio}, m)
	m, err = parseBot([]byte(`{"event":"mark","mark":{"name":"greeting"}}`), "MZ1")
	require.NoError(t, err, "streamSid may be left out")
	require.Equal(t, "greeting", m.mark)
	m, err = parseBot([]byte(`{"event":"clear","streamSid":"MZ1"}`), "MZ1")
	require.NoError(t, err)
	require.Equal(t, "clear", m.event)

	bad := map[string]error{
		`{"event":"media"`:  errBadJSON,
		`[1,2]`:             errBadJSON,
		`{"event":"dance"}`: errBadEvent,
		`{"event":"media","media":{"payload":"%%%"}}`: errBadPayload,
		`{"event":"media"}`:                           errBadPayload,
		`{"event":"mark","mark":{"name":""}}`:         errBadMark,
		`{"event":"clear","streamSid":"MZ-other"}`:    errBadStream,
	}
	for in, want := range bad {
		_, err := parseBot([]byte(in), "MZ1")
		require.ErrorIs(t, err, want, in)
	}
}

// The media message rendered by hand is the protocol's JSON, with its
// numbers as strings of digits.
func TestAppendMedia(t *testing.T) {
	b := appendMedia(nil, 7, 5, 80, []byte{0xff, 0}, "MZabc")
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	require.Equal(t, map[string]any{"event": "media", "sequenceNumber": "7", "streamSid": "MZabc",
		"media": map[string]any{"track": "inbound", "chunk": "5", "timestamp": "80", "payload": "/wA="}}, m)
}

func FuzzParseBot(f *testing.F) {
	f.Add([]byte(`{"event":"media","media":{"payload":"AAEC"}}`))
	f.Add([]byte(`{"event":"mark","mark":{"name":"x"}}`))
	f.Add([]byte(`{"event":"clear"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseBot(b, "MZ1")
		if err == nil && m.event != "media" && m.event != "mark" && m.event != "clear" {
			t.Fatalf("accepted event %q", m.event)
		}
	})
}

// L16 at 16 kHz and back is the same audio at 8 kHz, within the error
// of the interpolation and of G.711.
func TestL16RoundTrip(t *testing.T) {
	u := make([]byte, FrameBytes)
	for i := range u {
		u[i] = pcm.ULaw(int16(8000 * math.Sin(2*math.Pi*440*float64(i)/8000)))
	}
	l := ulawToL16x2(u)
	require.Len(t, l, 4*FrameBytes)
	back := l16x2ToUlaw(l)
	require.Len(t, back, FrameBytes)
	for i := range u {
		d := math.Abs(float64(pcm.DecodeULaw(back[i])) - float64(pcm.DecodeULaw(u[i])))
		require.Less(t, d, 1200.0, "sample %d", i)
	}
}
