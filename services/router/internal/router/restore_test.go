package router

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// TestRestartKnowsLiveCalls: a call starts under one router instance,
// which stops; the next instance is asked for a handoff of that call.
// Before, it had never seen the call, logged "handoff requested for an
// unknown call; skipped" and decided nothing. Now it rebuilds the state of
// the partitions it is assigned from the log first, and decides.
func TestRestartKnowsLiveCalls(t *testing.T) {
	h := newHarness(t)
	stopA := h.start("router-a")
	started := h.callStarted("call-1")
	started.Time = time.Now() // the record timestamp: inside the restore's lookback
	h.publish(started)
	committed := h.consumer(kgo.ReadCommitted())
	first := next(t, committed, 1)
	_, cmd := decodeCommand(t, first[0])
	require.Equal(t, "call-1", cmd.GetCallId(), "the rule handed the call off at its start")
	stopA()

	h.start("router-b")
	req, err := events.New("baton/api", "call-1", &batonv1.HandoffRequested{RequestId: "r2", Destination: "support"}, time.Now())
	require.NoError(t, err)
	h.publish(req)

	recs := next(t, committed, 1)
	require.Equal(t, "call-1", string(recs[0].Key))
	ev, err := events.Decode(recs[0])
	require.NoError(t, err)
	require.Contains(t, []string{events.TypeHandoffCommand, events.TypeHandoffRefused}, ev.Type,
		"the new instance decided on a call it learnt from the log")
}
