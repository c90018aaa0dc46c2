package handoff

import (
	"encoding/json"
	"regexp"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// selectAgent records the router's choice of c's voice-AI agent and
// queues its AgentSelected decision (published on the calls topic, where
// ingress reads it before dialling). Choosing the agent already chosen
// decides nothing, and once the pre-call answer chose, rules do not
// override it. c must be mutable.
func (f *Fold) selectAgent(c *call, ev events.Event, agent, source string) {
	if agent == "" || c.agent == agent || c.agentByPrecall && source != sourcePrecall {
		return
	}
	c.agent, c.agentByPrecall = agent, source == sourcePrecall
	f.agentPicks = append(f.agentPicks, Decision{
		ID:  CommandID(c.id, ev.ID+"/agent"),
		Msg: &batonv1.AgentSelected{CallId: c.id, Agent: agent, Source: source},
	})
}

// sourcePrecall is AgentSelected.source for the pre-call answer's choice.
const sourcePrecall = "precall"

// precallAgent is the pre-call answer's "agent", a top-level string of
// its JSON object; empty when it has none.
func precallAgent(dataJSON string) string {
	var top struct {
		Agent string `json:"agent"`
	}
	if json.Unmarshal([]byte(dataJSON), &top) != nil || !ValidAgentName(top.Agent) {
		return ""
	}
	return top.Agent
}

// agentName is an agent name as ingress's config allows it.
var agentName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ValidAgentName reports whether name could name one of ingress's agents
// (what a rule's agent action and a pre-call answer may choose).
func ValidAgentName(name string) bool { return agentName.MatchString(name) }
