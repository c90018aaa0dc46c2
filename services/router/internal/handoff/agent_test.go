package handoff

import (
	"testing"

	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// agentPicks returns the AgentSelected decisions among ds.
func agentPicks(ds []Decision) []*batonv1.AgentSelected {
	var out []*batonv1.AgentSelected
	for _, d := range ds {
		if a, ok := d.Msg.(*batonv1.AgentSelected); ok {
			out = append(out, a)
		}
	}
	return out
}

// A rule's agent action and the pre-call answer's "agent" choose the
// call's agent: each is an AgentSelected decision, the pre-call answer
// overriding the rule, the same choice twice deciding nothing.
func TestAgentSelectedByRuleThenPreCall(t *testing.T) {
	f, _ := newFold(t,
		Rule{Name: "vip", When: nil, Agent: "vip-bot", Continue: true},
		Rule{Name: "late", Agent: "vip-bot", AfterPreCall: true})
	picks := agentPicks(f.Apply(t.Context(), event(t, "c1", started("c1", nil))))
	require.Equal(t, []*batonv1.AgentSelected{{CallId: "c1", Agent: "vip-bot", Source: "rule:vip"}}, picks)
	f.Commit()

	ds := f.Apply(t.Context(), event(t, "c1", &batonv1.PreCallData{CallId: "c1", DataJson: `{"agent":"billing-bot","data":{}}`}))
	picks = agentPicks(ds)
	require.Len(t, picks, 1, "the answer's agent; the precall rule does not override it")
	require.Equal(t, "billing-bot", picks[0].GetAgent())
	require.Equal(t, "precall", picks[0].GetSource())
	require.NotEqual(t, ds[0].ID, CommandID("c1", "x"), "a deterministic id of its own")
}

// A pre-call answer without an agent, or with a name ingress could not
// hold, chooses nothing.
func TestPreCallAgentMustBeAName(t *testing.T) {
	for _, data := range []string{`{"data":{}}`, `{"agent":""}`, `{"agent":"a b"}`, `{"agent":42}`, `{"agent":"` + string(make([]byte, 65)) + `"}`} {
		f, _ := newFold(t)
		f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
		require.Empty(t, agentPicks(f.Apply(t.Context(), event(t, "c1", &batonv1.PreCallData{CallId: "c1", DataJson: data}))), data)
	}
}
