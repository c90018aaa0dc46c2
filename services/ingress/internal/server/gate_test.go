package server

import (
	"bytes"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestQuietHandlerDropsPacketsAndLimits(t *testing.T) {
	var out bytes.Buffer
	lim := &rateLog{perSecond: 2}
	log := slog.New(quietHandler{next: slog.NewTextHandler(&out, nil), lim: lim})
	for range 5 {
		log.Error("failed to parse", "data", "INVITE sip:secret@example.com SIP/2.0", "error", "bad")
	}
	require.NotContains(t, out.String(), "secret", "the raw packet reached the log")
	require.Equal(t, 2, bytes.Count(out.Bytes(), []byte("failed to parse")), out.String())
	log.Info("plain", "k", "v")
	require.Contains(t, out.String(), "k=v")
}

func TestAdmissionRemembersDecisions(t *testing.T) {
	var active atomic.Int64
	a := newAdmission(2, 1, &active)
	now := time.Unix(1000, 0)
	v, fresh := a.decide("a", now)
	require.Equal(t, admitted, v)
	require.True(t, fresh)
	v, fresh = a.decide("b", now)
	require.Equal(t, overRate, v)
	require.True(t, fresh)
	v, fresh = a.decide("a", now) // retransmission: same verdict, not fresh
	require.Equal(t, admitted, v)
	require.False(t, fresh)
	v, _ = a.decide("c", now.Add(time.Second)) // a token came back
	require.Equal(t, admitted, v)
	active.Store(2)
	v, _ = a.decide("d", now.Add(10*time.Second))
	require.Equal(t, overCalls, v)

	// The memory is bounded: a flood of distinct keys never grows it.
	for i := range 10 * len(a.ring) {
		a.decide(string(rune(i)), now)
	}
	require.LessOrEqual(t, len(a.seen), len(a.ring))
}
