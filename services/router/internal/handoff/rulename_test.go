package handoff

import (
	"testing"

	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// TestDecisionsCarryTheirRule: the rule that chose a destination is on the
// command (when the call starts, and for a request without destination,
// whatever its reason), on the fallbacks of that handoff and on a refusal;
// a destination the agent named or the default carries none.
func TestDecisionsCarryTheirRule(t *testing.T) {
	billing := Rule{Name: "billing", When: when(t, `reason == 'billing_dispute'`), Destination: "support"}
	gold := Rule{Name: "gold", When: when(t, `variables.tier == 'gold'`), Destination: "sales"}

	f, _ := newFold(t, gold, billing)
	cmd := one(t, f.Apply(t.Context(), event(t, "c1", started("c1", map[string]string{"Tier": "gold"}))))
	require.Equal(t, "gold", cmd.GetRule(), "at call start")

	f.Apply(t.Context(), event(t, "c2", started("c2", nil)))
	cmd = one(t, f.Apply(t.Context(), event(t, "c2", &batonv1.HandoffRequested{Reason: "billing_dispute"})))
	require.Equal(t, "billing", cmd.GetRule(), "a request the rules decided keeps its reason and names the rule")
	require.Equal(t, "billing_dispute", cmd.GetReason())

	f.Apply(t.Context(), event(t, "c3", started("c3", nil)))
	cmd = one(t, f.Apply(t.Context(), event(t, "c3", &batonv1.HandoffRequested{Reason: "other"})))
	require.Equal(t, "support", cmd.GetDestination())
	require.Empty(t, cmd.GetRule(), "the default is no rule's choice")

	f.Apply(t.Context(), event(t, "c4", started("c4", nil)))
	cmd = one(t, f.Apply(t.Context(), event(t, "c4", &batonv1.HandoffRequested{Destination: "sales", Reason: "billing_dispute"})))
	require.Empty(t, cmd.GetRule(), "the agent named the destination")

	// A rule whose destination is refused names the rule on the refusal.
	table := testTable(t, Rule{Name: "to-nowhere", Destination: "nowhere"})
	f = New(table, discard())
	r := refusal(t, f.Apply(t.Context(), event(t, "c5", started("c5", nil))))
	require.Equal(t, RefusedUnknownDestination, r.GetReasonCode())
	require.Equal(t, "to-nowhere", r.GetRule())

	// Fallbacks carry the rule of the handoff they continue.
	ft := fallbackTable(t, 5, EndHangup)
	ft.Rules = []Rule{{Name: "to-a", Destination: "a"}}
	f = New(ft, discard())
	cmd = one(t, f.Apply(t.Context(), event(t, "c6", started("c6", nil))))
	require.Equal(t, "to-a", cmd.GetRule())
	next := one(t, f.Apply(t.Context(), event(t, "c6", outcome(cmd, failed, 486))))
	require.Equal(t, "b", next.GetDestination())
	require.Equal(t, uint32(2), next.GetAttempt())
	require.Equal(t, "to-a", next.GetRule())
}
