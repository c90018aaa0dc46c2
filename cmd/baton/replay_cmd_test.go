package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/cmd/baton/internal/replay"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// TestReplayCommandEscapesControlCharacters runs `baton replay` over an
// export of a call whose callee number is a terminal escape sequence (as
// ingress published it before issue 14): the text output holds no ESC or
// BEL byte, and shows the sequence escaped.
func TestReplayCommandEscapesControlCharacters(t *testing.T) {
	const owned = "\x1b[2J\x1b]0;owned\a"
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	var recs []replay.Record
	for i, m := range []proto.Message{
		&batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "call-1"}, CallerNumber: "+15550199", CalleeNumber: owned},
		&batonv1.HandoffRequested{CallId: "call-1", RequestId: "r1", Reason: owned},
		&batonv1.CallEnded{CallId: "call-1", EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE", Reason: owned},
	} {
		ev, err := events.New("baton/test", "call-1", m, at.Add(time.Duration(i)*time.Second))
		require.NoError(t, err)
		rec, err := events.Encode("baton.calls", ev)
		require.NoError(t, err)
		recs = append(recs, replay.Record{Topic: rec.Topic, Offset: int64(i), Key: rec.Key, Value: rec.Value,
			Headers: rec.Headers, Timestamp: rec.Timestamp})
	}
	var export bytes.Buffer
	require.NoError(t, replay.WriteNDJSON(&export, recs))
	file := filepath.Join(t.TempDir(), "call.ndjson")
	require.NoError(t, os.WriteFile(file, export.Bytes(), 0o600))

	var c cli
	var out, errOut bytes.Buffer
	p, err := newParser(&c, &out, &errOut, func(int) { t.Fatal("exit called") })
	require.NoError(t, err)
	kctx, err := p.Parse([]string{"replay", "--call", "call-1", "--from-file", file})
	require.NoError(t, err)
	kctx.BindTo(t.Context(), (*context.Context)(nil))
	require.NoError(t, kctx.Run(&streams{out: &out, err: &errOut}))

	got := out.String()
	require.NotContains(t, got, "\x1b", "ESC reached the terminal")
	require.NotContains(t, got, "\a", "BEL reached the terminal")
	require.Contains(t, got, `call started: +15550199 -> \x1b[2J\x1b]0;owned\a`)
	require.Contains(t, got, `handoff requested: \x1b[2J\x1b]0;owned\a`, "the ladder's note")
	require.Empty(t, errOut.String())
}
