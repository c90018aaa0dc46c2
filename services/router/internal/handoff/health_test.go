package handoff

import (
	"testing"

	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
)

const healthPartitions = 4

// healthOf is the copy of a DestinationHealth written to the partition
// of callID (or, with other, to another partition).
func healthOf(callID, dest string, up, other bool) *batonv1.DestinationHealth {
	p := kafka.PartitionFor([]byte(callID), healthPartitions)
	if other {
		p = (p + 1) % healthPartitions
	}
	return &batonv1.DestinationHealth{Destination: dest, Up: up, Status: 503, Partition: p, Partitions: healthPartitions}
}

// skipTable is fallbackTable (a → b → c, default d) with a and b opted in
// to skip_when_down.
func skipTable(t *testing.T) *Table {
	t.Helper()
	table := fallbackTable(t, 5, EndHangup)
	for _, name := range []string{"a", "b"} {
		d := table.Destinations[name]
		d.SkipWhenDown = true
		table.Destinations[name] = d
	}
	return table
}

func request(t *testing.T, f *Fold, callID, dest string) []Decision {
	t.Helper()
	f.Apply(t.Context(), event(t, callID, started(callID, nil)))
	return f.Apply(t.Context(), event(t, callID, &batonv1.HandoffRequested{Destination: dest, RequestId: "r-" + callID}))
}

// TestSkipWhenDown: a destination opted in to skip_when_down that the
// call's partition of the calls topic says is down is passed over for
// the next of its fallbacks (the command names it in skipped); health
// written to another partition does not count; when every candidate is
// down the handoff is refused destination_down; a destination not opted
// in is used whatever its health.
func TestSkipWhenDown(t *testing.T) {
	f := New(skipTable(t), discard())
	f.Apply(t.Context(), event(t, "health", healthOf("c1", "a", false, false)))
	cmd := one(t, request(t, f, "c1", "a"))
	require.Equal(t, "b", cmd.GetDestination())
	require.Equal(t, []string{"a"}, cmd.GetSkipped())
	require.Equal(t, uint32(1), cmd.GetAttempt())

	f = New(skipTable(t), discard())
	f.Apply(t.Context(), event(t, "health", healthOf("c1", "a", false, true)))
	cmd = one(t, request(t, f, "c1", "a"))
	require.Equal(t, "a", cmd.GetDestination(), "down in another partition: not this call's log")
	require.Empty(t, cmd.GetSkipped())

	f = New(skipTable(t), discard())
	f.Apply(t.Context(), event(t, "health", healthOf("c1", "a", false, false)))
	f.Apply(t.Context(), event(t, "health", healthOf("c1", "b", false, false)))
	cmd = one(t, request(t, f, "c1", "a"))
	require.Equal(t, "c", cmd.GetDestination(), "c does not opt in")
	require.Equal(t, []string{"a", "b"}, cmd.GetSkipped())

	table := skipTable(t)
	for _, name := range []string{"c", "d"} {
		d := table.Destinations[name]
		d.SkipWhenDown = true
		table.Destinations[name] = d
	}
	f = New(table, discard())
	for _, name := range []string{"a", "b", "c", "d"} {
		f.Apply(t.Context(), event(t, "health", healthOf("c1", name, false, false)))
	}
	r := refusal(t, request(t, f, "c1", "a"))
	require.Equal(t, RefusedDestinationDown, r.GetReasonCode())
	require.Contains(t, r.GetDetail(), "a, b, c, d")

	// Up again: used again.
	f = New(skipTable(t), discard())
	f.Apply(t.Context(), event(t, "health", healthOf("c1", "a", false, false)))
	f.Apply(t.Context(), event(t, "health", healthOf("c1", "a", true, false)))
	require.Equal(t, "a", one(t, request(t, f, "c1", "a")).GetDestination())
}

// TestFallbackSkipsADestinationDown: a destination that went down after
// the handoff began is skipped by the fallback, and the fallback command
// names it.
func TestFallbackSkipsADestinationDown(t *testing.T) {
	f := New(skipTable(t), discard())
	cmd := one(t, request(t, f, "c1", "a"))
	require.Equal(t, "a", cmd.GetDestination())
	f.Apply(t.Context(), event(t, "health", healthOf("c1", "b", false, false)))
	next := one(t, f.Apply(t.Context(), event(t, "c1", outcome(cmd, failed, 503))))
	require.Equal(t, "c", next.GetDestination())
	require.Equal(t, uint32(2), next.GetAttempt())
	require.Equal(t, []string{"b"}, next.GetSkipped())
}

// TestHealthRollsBack: health folded in a batch that rolls back is gone;
// a committed one stays.
func TestHealthRollsBack(t *testing.T) {
	f := New(skipTable(t), discard())
	f.Apply(t.Context(), event(t, "health", healthOf("c1", "a", false, false)))
	f.Rollback()
	require.Equal(t, "a", one(t, request(t, f, "c1", "a")).GetDestination())

	f = New(skipTable(t), discard())
	f.Apply(t.Context(), event(t, "health", healthOf("c1", "a", false, false)))
	f.Commit()
	f.Apply(t.Context(), event(t, "health", healthOf("c1", "a", true, false)))
	f.Rollback()
	require.Equal(t, "b", one(t, request(t, f, "c1", "a")).GetDestination(), "the committed down stays")

	// A copy without a partition is ignored, not a crash.
	f.Apply(t.Context(), event(t, "health", &batonv1.DestinationHealth{Destination: "b", Partitions: 0}))
}
