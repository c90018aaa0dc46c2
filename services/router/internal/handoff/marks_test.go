package handoff

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// TestMarksAndAgentStreamAreFolded: the fold keeps the last MaxMarks
// marks played and whether the agent stream is connected; a rolled-back
// batch leaves the committed marks as they were, and Changed is closed by
// a Commit.
func TestMarksAndAgentStreamAreFolded(t *testing.T) {
	f, _ := newFold(t)
	ctx := t.Context()
	f.Apply(ctx, event(t, "c1", started("c1", nil)))
	f.Commit()
	require.Equal(t, MarkState{Found: true}, f.MarkState("c1", "m0"))

	f.Apply(ctx, event(t, "c1", &batonv1.AgentConnected{CallId: "c1", StreamSid: "MZ1"}))
	for i := range MaxMarks + 8 {
		f.Apply(ctx, event(t, "c1", &batonv1.AgentMarkPlayed{CallId: "c1", StreamSid: "MZ1", Name: fmt.Sprintf("m%d", i)}))
	}
	changed := f.Changed()
	f.Commit()
	<-changed // closed by the Commit; a Commit that did not close it would hang the test

	v, found, _ := f.View("c1")
	require.True(t, found)
	require.True(t, v.AgentStream)
	require.Len(t, v.MarksPlayed, MaxMarks, "bounded to the last MaxMarks")
	require.Equal(t, "m8", v.MarksPlayed[0], "the oldest forgotten first")
	require.Equal(t, fmt.Sprintf("m%d", MaxMarks+7), v.MarksPlayed[MaxMarks-1])
	require.Equal(t, MarkState{Found: true, Stream: true, Played: true}, f.MarkState("c1", "m8"))
	require.False(t, f.MarkState("c1", "m7").Played)

	// A batch rolled back changes nothing committed.
	f.Apply(ctx, event(t, "c1", &batonv1.AgentMarkPlayed{CallId: "c1", Name: "late"}))
	f.Apply(ctx, event(t, "c1", &batonv1.AgentDisconnected{CallId: "c1", Reason: "agent_closed"}))
	f.Rollback()
	f.Commit()
	require.Equal(t, MarkState{Found: true, Stream: true}, f.MarkState("c1", "late"))

	f.Apply(ctx, event(t, "c1", &batonv1.AgentDisconnected{CallId: "c1", Reason: "agent_closed"}))
	f.Commit()
	require.False(t, f.MarkState("c1", "m9").Stream)
	require.Equal(t, MarkState{}, f.MarkState("nope", "m9"), "an unknown call")
}
