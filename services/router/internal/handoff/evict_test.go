package handoff

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// eventAt is an event with its time set.
func eventAt(t testing.TB, callID string, msg proto.Message, when time.Time) events.Event {
	t.Helper()
	ev := event(t, callID, msg)
	ev.Time = when
	return ev
}

// TestIdleCallsAreFoundAndEvictedByEvent: Idle names the calls with no
// event for the limit (any event counts, not only handoff ones); folding
// CallEvicted forgets the call, which then reads as unknown (not ended),
// and a later handoff request for it decides nothing.
func TestIdleCallsAreFoundAndEvictedByEvent(t *testing.T) {
	f, logs := newFold(t)
	ctx := t.Context()
	f.Apply(ctx, eventAt(t, "old", started("old", nil), at))
	f.Apply(ctx, eventAt(t, "busy", started("busy", nil), at))
	f.Apply(ctx, eventAt(t, "busy", &batonv1.AgentMarkPlayed{CallId: "busy", Name: "m"}, at.Add(3*time.Hour)))
	f.Commit()

	now := at.Add(5 * time.Hour)
	idle := f.Idle(now, 4*time.Hour)
	require.Equal(t, []IdleCall{{ID: "old", LastEvent: at, Idle: 5 * time.Hour}}, idle, "busy had an event 2h ago")
	require.Empty(t, f.Idle(at.Add(4*time.Hour-time.Millisecond), 4*time.Hour))

	f.Apply(ctx, eventAt(t, "old", &batonv1.CallEvicted{CallId: "old", Reason: EvictedIdle, IdleMs: idle[0].Idle.Milliseconds(), EvictedBy: "r1"}, now))
	f.Commit()
	_, found, ended := f.View("old")
	require.False(t, found)
	require.False(t, ended, "an evicted call is unknown, not ended")
	require.Equal(t, 1, f.Held())
	require.Contains(t, logs.String(), `"msg":"call evicted"`)

	ds := f.Apply(ctx, eventAt(t, "old", &batonv1.HandoffRequested{RequestId: "r", Destination: "support"}, now))
	require.Empty(t, ds)
	require.Contains(t, logs.String(), "handoff requested for an unknown call; skipped")
}

// TestEvictionOvertakenByAnEventKeepsTheCall: when the log holds an event
// of the call after the idle period the owner measured (it raced the
// eviction), every fold keeps the call.
func TestEvictionOvertakenByAnEventKeepsTheCall(t *testing.T) {
	f, _ := newFold(t)
	ctx := t.Context()
	f.Apply(ctx, eventAt(t, "c1", started("c1", nil), at))
	f.Apply(ctx, eventAt(t, "c1", &batonv1.CallStateChanged{CallId: "c1", Set: map[string]string{"a": "b"}}, at.Add(5*time.Hour)))
	f.Apply(ctx, eventAt(t, "c1", &batonv1.CallEvicted{CallId: "c1", Reason: EvictedIdle, IdleMs: (5 * time.Hour).Milliseconds()}, at.Add(5*time.Hour+time.Second)))
	f.Commit()
	_, found, _ := f.View("c1")
	require.True(t, found)
}

// TestEvictionRollsBack: a CallEvicted in an aborted batch leaves the
// call live.
func TestEvictionRollsBack(t *testing.T) {
	f, _ := newFold(t)
	ctx := t.Context()
	f.Apply(ctx, eventAt(t, "c1", started("c1", nil), at))
	f.Commit()
	f.Apply(ctx, eventAt(t, "c1", &batonv1.CallEvicted{CallId: "c1", IdleMs: (5 * time.Hour).Milliseconds()}, at.Add(5*time.Hour)))
	f.Rollback()
	f.Commit()
	_, found, _ := f.View("c1")
	require.True(t, found)
	require.Len(t, f.Idle(at.Add(5*time.Hour), 4*time.Hour), 1)
}

// TestMaxCallsBoundsTheFold: beyond max_calls a new call is not held,
// counted and logged once; once a call ends a new one is held again.
func TestMaxCallsBoundsTheFold(t *testing.T) {
	f, logs := newFold(t)
	f.WithMaxCalls(3)
	ctx := t.Context()
	for i := range 5 {
		id := fmt.Sprintf("c%d", i)
		f.Apply(ctx, event(t, id, started(id, nil)))
	}
	f.Commit()
	require.Equal(t, 3, f.Held())
	require.Equal(t, int64(2), f.Dropped())
	_, found, _ := f.View("c4")
	require.False(t, found)
	require.Equal(t, 1, strings.Count(logs.String(), `"msg":"call bound reached`), "logged once, not per call")

	f.Apply(ctx, event(t, "c0", &batonv1.CallEnded{CallId: "c0"}))
	f.Apply(ctx, event(t, "c5", started("c5", nil)))
	f.Commit()
	_, found, _ = f.View("c5")
	require.True(t, found)
	require.Contains(t, logs.String(), "call bound no longer reached")
}
