package handoff

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

func TestWhisperHostAllowed(t *testing.T) {
	hosts := []string{"tts.example.com", "*.voice.example.net", "10.0.0.7"}
	for u, want := range map[string]bool{
		"https://tts.example.com/a.wav":          true,
		"http://TTS.example.com:8443/a.wav":      true,
		"https://eu.voice.example.net/x":         true,
		"https://voice.example.net/x":            false, // *.domain is below it, not itself
		"https://evil-tts.example.com/a.wav":     false,
		"https://tts.example.com.evil.org/a.wav": false,
		"http://10.0.0.7/a.wav":                  true,
		"ftp://tts.example.com/a.wav":            false,
		"https://u:p@tts.example.com/a.wav":      false,
		"not a url":                              false,
	} {
		require.Equal(t, want, WhisperHostAllowed(hosts, u), u)
	}
	require.False(t, WhisperHostAllowed(nil, "https://tts.example.com/a.wav"), "no hosts: none allowed")
}

// A handoff's own whisper URL reaches the command where its destination
// allows the host, and is refused (whisper_not_allowed) where it does
// not, or where the destination is not a warm transfer.
func TestHandoffWhisperURL(t *testing.T) {
	f, _ := newFold(t)
	table := testTable(t)
	sales := table.Destinations["sales"]
	sales.WhisperHosts = []string{"tts.example.com"}
	table.Destinations["sales"] = sales
	f = New(table, f.logger)
	require.Empty(t, f.Apply(t.Context(), event(t, "c1", started("c1", nil))))
	cmds := commands(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{CallId: "c1", Destination: "sales",
		WhisperUrl: "https://tts.example.com/summary.wav"})))
	require.Len(t, cmds, 1)
	require.Equal(t, "https://tts.example.com/summary.wav", cmds[0].GetWhisper())

	for _, tc := range []struct{ dest, url string }{
		{"sales", "https://elsewhere.example.org/summary.wav"},
		{"support", "https://tts.example.com/summary.wav"}, // REFER: no whisper leg
	} {
		g := New(table, f.logger)
		require.Empty(t, g.Apply(t.Context(), event(t, "c2", started("c2", nil))))
		r := refusal(t, g.Apply(t.Context(), event(t, "c2", &batonv1.HandoffRequested{CallId: "c2", Destination: tc.dest, WhisperUrl: tc.url})))
		require.Equal(t, RefusedWhisperNotAllowed, r.GetReasonCode(), tc.dest)
	}
}

// A REFER destination's context_in rides in its commands, so transfer
// puts the headers where that SBC or transferee reads them.
func TestReferCommandCarriesContextIn(t *testing.T) {
	table := testTable(t)
	support := table.Destinations["support"]
	support.ContextIn = "both"
	table.Destinations["support"] = support
	f := New(table, slog.New(slog.DiscardHandler))
	require.Empty(t, f.Apply(t.Context(), event(t, "c1", started("c1", nil))))
	cmds := commands(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{CallId: "c1", Destination: "support"})))
	require.Len(t, cmds, 1)
	require.Equal(t, "both", cmds[0].GetContextIn())
}
