package callview

import (
	"fmt"
	"strings"
	"time"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// The lanes of the ladder, left to right: an Arrow's From and To.
const (
	LaneSBC = iota
	LaneIngress
	LaneRouter
	LaneTransfer
)

// Lanes names the lanes, left to right (index: LaneSBC and the others).
func Lanes() []string { return []string{"SBC", "ingress", "router", "transfer"} }

// Arrow is one message of the ladder. From == To is a note on a lane.
type Arrow struct {
	At       time.Time
	From, To int
	Label    string
}

// Ladder turns the call's facts, commands and outcomes into the SIP (and
// Kafka) messages they stand for. SIP that left no event (provisional
// responses, the ACK) is not invented.
func Ladder(steps []Step) []Arrow {
	var out []Arrow
	add := func(at time.Time, from, to int, label string) {
		out = append(out, Arrow{At: at, From: from, To: to, Label: label})
	}
	for _, s := range steps {
		if s.Err != nil {
			continue
		}
		at := s.Event.Time
		switch m := s.Event.Data.(type) {
		case *batonv1.CallStarted:
			label := "INVITE"
			if n := len(m.GetVariables()); n > 0 {
				label += fmt.Sprintf(" (%d X- headers)", n)
			}
			if m.GetDirection() == batonv1.CallDirection_CALL_DIRECTION_OUTBOUND {
				// Ingress placed it (decision 0018): the INVITE went out.
				add(at, LaneIngress, LaneSBC, label)
				add(at, LaneSBC, LaneIngress, "200 OK")
				add(at, LaneIngress, LaneRouter, "CallStarted (outbound)")
				break
			}
			add(at, LaneSBC, LaneIngress, label)
			add(at, LaneIngress, LaneRouter, "CallStarted")
			add(at, LaneIngress, LaneSBC, "200 OK")
		case *batonv1.HandoffRequested:
			add(at, LaneRouter, LaneRouter, "handoff requested: "+m.GetReason())
		case *batonv1.HandoffCommand:
			add(at, LaneRouter, LaneTransfer, methodName(m.GetMethod())+" -> "+m.GetDestination())
		case *batonv1.TransferOutcome:
			method := methodName(m.GetMethod())
			switch m.GetStatus() {
			case batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED:
				add(at, LaneTransfer, LaneSBC, method)
				add(at, LaneSBC, LaneTransfer, sipStatus(m.GetSipCode(), m.GetSipReason()))
			case batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED:
				if m.GetSipCode() >= 300 && !strings.Contains(m.GetDetail(), "NOTIFY") && !strings.Contains(m.GetDetail(), "sipfrag") {
					add(at, LaneTransfer, LaneSBC, method)
					add(at, LaneSBC, LaneTransfer, sipStatus(m.GetSipCode(), m.GetSipReason()))
				}
				add(at, LaneTransfer, LaneTransfer, "failed: "+m.GetDetail())
			case batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED:
				if m.GetMethod() == batonv1.Method_METHOD_BYE {
					add(at, LaneTransfer, LaneSBC, "BYE")
					add(at, LaneSBC, LaneTransfer, sipStatus(m.GetSipCode(), m.GetSipReason()))
				}
				add(at, LaneTransfer, LaneTransfer, fmt.Sprintf("succeeded (%d)", m.GetSipCode()))
			default:
				add(at, LaneTransfer, LaneTransfer, statusName(m.GetStatus()))
			}
		case *batonv1.AgentConnected:
			add(at, LaneIngress, LaneIngress, "agent stream open")
		case *batonv1.AgentMarkPlayed:
			add(at, LaneIngress, LaneIngress, "agent mark played: "+m.GetName())
		case *batonv1.AgentDisconnected:
			add(at, LaneIngress, LaneIngress, "agent stream ended: "+m.GetReason())
		case *batonv1.NotifyReceived:
			add(at, LaneSBC, LaneIngress, fmt.Sprintf("NOTIFY sipfrag %d", m.GetSipfragStatus()))
			add(at, LaneIngress, LaneSBC, "200 OK")
		case *batonv1.CallEnded:
			if m.GetEndedBy() == batonv1.Party_PARTY_BATON {
				continue // transfer's own BYE shows as its outcome
			}
			add(at, LaneSBC, LaneIngress, orDefault(m.GetMethod(), "BYE"))
			add(at, LaneIngress, LaneSBC, "200 OK")
		}
	}
	return out
}

func sipStatus(code int32, reason string) string {
	if code == 0 {
		return "(no response)"
	}
	return strings.TrimSpace(fmt.Sprintf("%d %s", code, reason))
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
