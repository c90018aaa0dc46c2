package handoff

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// sinkRecorder keeps the transitions a fold commits.
type sinkRecorder struct{ got []Transition }

func (s *sinkRecorder) Transitions(ts []Transition) { s.got = append(s.got, ts...) }

func (s *sinkRecorder) steps() []string {
	var out []string
	for _, t := range s.got {
		out = append(out, t.Type+" "+t.ID)
	}
	return out
}

// TestTransitionsOfAReferHandoff: a REFER handoff from request to the
// call's end gives requested, command_issued, accepted, progress,
// succeeded, call_ended, each with the id of its source event, heard by
// the sink only when its batch commits; a rolled-back batch's are never
// heard. The same log folded again gives the same sequence.
func TestTransitionsOfAReferHandoff(t *testing.T) {
	ctx := t.Context()
	var log []events.Event
	fold := func(sink *sinkRecorder, commitEach bool) *Fold {
		f := New(testTable(t), discard()).WithSink(sink).WithHistory(4)
		for _, ev := range log {
			f.Apply(ctx, ev)
			if commitEach {
				f.Commit()
			}
		}
		f.Commit()
		return f
	}
	sink := &sinkRecorder{}
	f := New(testTable(t), discard()).WithSink(sink).WithHistory(4)
	apply := func(ev events.Event) []Decision {
		log = append(log, ev)
		ds := f.Apply(ctx, ev)
		f.Commit()
		return ds
	}
	apply(event(t, "c1", started("c1", nil)))
	req := event(t, "c1", &batonv1.HandoffRequested{RequestId: "r1", Destination: "support", AfterMark: "bye", MarkWait: "played"})
	cmd := one(t, apply(req))
	// An aborted batch: never heard.
	f.Apply(ctx, event(t, "c1", outcome(cmd, failed, 500)))
	f.Rollback()
	acc := event(t, "c1", outcome(cmd, accepted, 202))
	apply(acc)
	ring := event(t, "c1", outcome(cmd, batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS, 180))
	apply(ring)
	ok := event(t, "c1", outcome(cmd, batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200))
	apply(ok)
	v, _, _ := f.View("c1")
	require.Len(t, v.Transitions, 4, "the history keeps the last WithHistory")
	require.Equal(t, TransitionCommandIssued, v.Transitions[0].Type)
	end := event(t, "c1", &batonv1.CallEnded{CallId: "c1"})
	apply(end)

	want := []string{
		"requested " + req.ID, "command_issued " + cmd.GetCommandId(), "accepted " + acc.ID,
		"progress " + ring.ID, "succeeded " + ok.ID, "call_ended " + end.ID,
	}
	require.Equal(t, want, sink.steps())
	for i, tr := range sink.got {
		require.Equal(t, uint32(i+1), tr.Seq)
		require.Equal(t, "c1", tr.CallID)
	}
	require.Equal(t, "bye", sink.got[0].AfterMark)
	require.Equal(t, "played", sink.got[0].MarkWait)
	require.Equal(t, "REFER", sink.got[1].Method)
	require.Equal(t, int32(180), sink.got[3].SipCode)

	// A replay of the log, batched differently, gives the same sequence.
	again := &sinkRecorder{}
	fold(again, false)
	require.Equal(t, sink.got, again.got)
}

// TestTransitionsOfAFailedTransferReturnedToTheAgent: the last failure
// under on_all_failed: return_to_agent gives failed, then
// returned_to_agent (id: the outcome's, with ":returned"); a refusal gives
// refused with its code.
func TestTransitionsOfAFailedTransferReturnedToTheAgent(t *testing.T) {
	sink := &sinkRecorder{}
	f := New(fallbackTable(t, 1, EndReturnToAgent), discard()).WithSink(sink)
	ctx := t.Context()
	f.Apply(ctx, event(t, "c1", started("c1", nil)))
	req := event(t, "c1", &batonv1.HandoffRequested{RequestId: "r1", Destination: "b"})
	cmd := one(t, f.Apply(ctx, req))
	fail := event(t, "c1", outcome(cmd, failed, 486))
	require.Empty(t, f.Apply(ctx, fail))
	bad := event(t, "c1", &batonv1.HandoffRequested{RequestId: "r2", Destination: "nowhere"})
	ds := f.Apply(ctx, bad)
	f.Commit()
	require.Equal(t, []string{
		"requested " + req.ID, "command_issued " + cmd.GetCommandId(), "failed " + fail.ID,
		"returned_to_agent " + fail.ID + ":returned", "requested " + bad.ID, "refused " + ds[0].ID,
	}, sink.steps())
	require.Equal(t, int32(486), sink.got[2].SipCode)
	require.Equal(t, int32(486), sink.got[3].SipCode)
	require.Equal(t, RefusedUnknownDestination, sink.got[5].Code)
}
