package router

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// AgentSelected is a fact of the call for ingress: it goes to the calls
// topic; commands stay on the handoffs topic.
func TestAgentSelectedGoesToTheCallsTopic(t *testing.T) {
	r := &Router{topic: "baton.handoffs", callsTopic: "baton.calls", logger: discardLogger()}
	trigger, err := events.New("baton/ingress", "c1", &batonv1.CallStarted{}, time.Now())
	require.NoError(t, err)
	rec, err := r.encode("", trigger, handoff.Decision{ID: "d1", Msg: &batonv1.AgentSelected{CallId: "c1", Agent: "bot"}})
	require.NoError(t, err)
	require.Equal(t, "baton.calls", rec.Topic)
	rec, err = r.encode("", trigger, handoff.Decision{ID: "d2", Msg: &batonv1.HandoffCommand{CommandId: "d2", CallId: "c1"}})
	require.NoError(t, err)
	require.Equal(t, "baton.handoffs", rec.Topic)
}
