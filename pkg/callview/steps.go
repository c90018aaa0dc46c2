package callview

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// Step is one decoded record of the call.
type Step struct {
	Record Record
	Event  events.Event
	// Err is set when the record does not decode; such steps are shown,
	// never dropped.
	Err error
}

// Time is the event's time, or the record's when it did not decode.
func (s Step) Time() time.Time {
	if s.Err != nil {
		return s.Record.Timestamp
	}
	return s.Event.Time
}

// Steps decodes records and orders them by event time; records of equal
// time keep their topic order (calls, handoffs, transfers) and offset.
func Steps(recs []Record) []Step {
	steps := make([]Step, 0, len(recs))
	for _, r := range recs {
		ev, err := events.Decode(&kgo.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
			Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp})
		steps = append(steps, Step{Record: r, Event: ev, Err: err})
	}
	sort.SliceStable(steps, func(i, j int) bool {
		ti, tj := steps[i].Time(), steps[j].Time()
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		if steps[i].Record.Topic != steps[j].Record.Topic {
			return topicRank(steps[i].Record.Topic) < topicRank(steps[j].Record.Topic)
		}
		return steps[i].Record.Offset < steps[j].Record.Offset
	})
	return steps
}

func topicRank(topic string) int {
	switch {
	case strings.Contains(topic, "calls"):
		return 0
	case strings.Contains(topic, "handoffs"):
		return 1
	default:
		return 2
	}
}

// Summary is one line saying what a step means.
func (s Step) Summary() string {
	if s.Err != nil {
		return "undecodable record: " + s.Err.Error()
	}
	switch m := s.Event.Data.(type) {
	case *batonv1.CallStarted:
		var vars []string
		for _, k := range slices.Sorted(maps.Keys(m.GetVariables())) {
			vars = append(vars, k+"="+m.GetVariables()[k])
		}
		started := "call started"
		if m.GetDirection() == batonv1.CallDirection_CALL_DIRECTION_OUTBOUND {
			started = "outbound call answered"
		}
		return fmt.Sprintf("%s: %s -> %s from %s (trunk %s) vars [%s]", started, m.GetCallerNumber(), m.GetCalleeNumber(),
			m.GetSourceAddress(), m.GetTrunk(), strings.Join(vars, " "))
	case *batonv1.OutboundCallRequested:
		var hs []string
		for _, h := range m.GetHeaders() {
			hs = append(hs, h.GetName()+"="+h.GetValue())
		}
		return fmt.Sprintf("outbound call requested by %s: %s -> %s (trunk %s, agent %q, answer timeout %v) headers [%s]",
			m.GetRequestedBy(), m.GetFrom(), m.GetTo(), m.GetTrunk(), m.GetAgent(), m.GetAnswerTimeout().AsDuration(), strings.Join(hs, " "))
	case *batonv1.OutboundCallProgress:
		out := "outbound call " + strings.ToLower(strings.TrimPrefix(m.GetStatus().String(), "OUTBOUND_STATUS_"))
		if m.GetSipCode() != 0 {
			out += fmt.Sprintf(" SIP %d %s", m.GetSipCode(), m.GetSipReason())
		}
		if m.GetDetail() != "" {
			out += " (" + m.GetDetail() + ")"
		}
		return out
	case *batonv1.CallEnded:
		return fmt.Sprintf("call ended by %s with %s %s", partyName(m.GetEndedBy()), m.GetMethod(), m.GetReason())
	case *batonv1.NotifyReceived:
		return fmt.Sprintf("NOTIFY %s (%s): sipfrag %d %s", m.GetEvent(), m.GetSubscriptionState(), m.GetSipfragStatus(), m.GetSipfragReason())
	case *batonv1.HandoffRequested:
		out := fmt.Sprintf("handoff requested by %s: destination %q reason %q utterance %q", m.GetRequestedBy(), m.GetDestination(), m.GetReason(), m.GetUtterance())
		if m.GetAfterMark() != "" {
			out += fmt.Sprintf(" after mark %q (%s)", m.GetAfterMark(), m.GetMarkWait())
		}
		return out
	case *batonv1.AgentConnected:
		return fmt.Sprintf("agent connected: stream %s to %s (%s, from %s) in %d ms", m.GetStreamSid(), m.GetUrl(), m.GetFormat(),
			m.GetSource(), m.GetConnectMs())
	case *batonv1.AgentMarkPlayed:
		return fmt.Sprintf("agent mark %q played to the caller", m.GetName())
	case *batonv1.AgentDisconnected:
		st := m.GetStats()
		out := fmt.Sprintf("agent disconnected: %s, action %s; frames out %d in %d played %d late %d dropped %d cleared %d, "+
			"deepest queue %d ms, marks %d, bad messages %d", m.GetReason(), m.GetAction(), st.GetFramesOut(), st.GetFramesIn(),
			st.GetFramesPlayed(), st.GetLate(), st.GetDropped(), st.GetCleared(), st.GetMaxQueueMs(), st.GetMarks(), st.GetBadMessages())
		if m.GetDetail() != "" {
			out += " (" + m.GetDetail() + ")"
		}
		return out
	case *batonv1.CallEvicted:
		return fmt.Sprintf("call evicted by %s: %s after %d s without an event", m.GetEvictedBy(), m.GetReason(), m.GetIdleMs()/1000)
	case *batonv1.DtmfReceived:
		return fmt.Sprintf("digit %s (%s, %d ms)", m.GetDigit(), m.GetSource(), m.GetDurationMs())
	case *batonv1.InboundReferReceived:
		out := fmt.Sprintf("far end REFERred the call to %s (%s, referred by %q)", m.GetReferTo(), m.GetReferId(), m.GetReferredBy())
		if len(m.GetStrippedHeaders()) > 0 {
			out += "; embedded headers dropped: " + strings.Join(m.GetStrippedHeaders(), ", ")
		}
		return out
	case *batonv1.HandoffCommand:
		var hs []string
		for _, h := range m.GetHeaders() {
			hs = append(hs, h.GetName()+"="+h.GetValue())
		}
		return fmt.Sprintf("command %s: %s to %s (%s) attempt %d, reason %q, headers [%s]", short(m.GetCommandId()),
			methodName(m.GetMethod()), m.GetDestination(), m.GetRoute(), m.GetAttempt(), m.GetReason(), strings.Join(hs, " "))
	case *batonv1.ReferRefusalLearned:
		return fmt.Sprintf("trunk %s refuses REFER (SIP %d %s): fallback until %s", m.GetTrunk(), m.GetSipCode(),
			m.GetSipReason(), m.GetUntil().AsTime().UTC().Format(time.RFC3339))
	case *batonv1.TransferOutcome:
		out := fmt.Sprintf("outcome of %s: %s %s", short(m.GetCommandId()), statusName(m.GetStatus()), methodName(m.GetMethod()))
		if m.GetSipCode() != 0 {
			out += fmt.Sprintf(" SIP %d %s", m.GetSipCode(), m.GetSipReason())
		}
		if m.GetDetail() != "" {
			out += " (" + m.GetDetail() + ")"
		}
		return out
	default:
		return s.Event.Type
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func partyName(p batonv1.Party) string {
	switch p {
	case batonv1.Party_PARTY_REMOTE:
		return "remote"
	case batonv1.Party_PARTY_BATON:
		return "baton"
	default:
		return "unknown"
	}
}

func methodName(m batonv1.Method) string {
	return strings.TrimPrefix(m.String(), "METHOD_")
}

func statusName(s batonv1.OutcomeStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "OUTCOME_STATUS_"))
}
