package handoff

import (
	"maps"
	"slices"
	"strings"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// maxTombstones bounds how many ended calls View remembers as ended (an
// older one reads as unknown).
const maxTombstones = 10_000

// CallView is the committed state of a call, as the agent API shows it.
type CallView struct {
	CallID       string
	CallerNumber string
	CalleeNumber string
	// SipHeaders maps a lower-cased header name to its values in order.
	SipHeaders map[string][]string
	// Variables are the call's variables: stripped X- headers overlaid with
	// those rules set.
	Variables map[string]string
	State     map[string]string
	// Results is the pre-call webhook's JSON object (nil: none). It is
	// shared: callers must not change it.
	Results map[string]any
	// PreCallError says why the call has no pre-call data, when its fetch
	// failed.
	PreCallError string
	Handoff      HandoffView
	// Handoffs is how many handoffs the call started
	// (max_handoffs_per_call bounds it).
	Handoffs uint32
	// MarksPlayed are the names of the agent's marks played out, the last
	// MaxMarks, oldest first.
	MarksPlayed []string
	// AgentStream is set while the call's agent stream is connected.
	AgentStream bool
	// Transitions are the call's last transitions, oldest first, when the
	// fold keeps them (WithHistory).
	Transitions []Transition
}

// HandoffView is where a call's handoff stands.
type HandoffView struct {
	Status      Status
	RequestID   string
	CommandID   string
	Destination string
	Route       string
	Method      string
	Reason      string
	Attempt     uint32
	// SipCode is the final SIP status of the last outcome (0: none yet).
	SipCode   int32
	SipReason string
	Detail    string
	// RefusedCode is the HandoffRefused reason code when Status is refused.
	RefusedCode string
	// Ending is set when every destination failed and the call is being
	// hung up (on_all_failed: hangup).
	Ending bool
}

// View returns the committed state of a call. ended is true for a call
// that ended (and is still remembered); found is false for both an unknown
// and an ended call. It is safe to call from any goroutine.
func (f *Fold) View(id string) (v CallView, found, ended bool) {
	f.mu.RLock()
	c := f.view[id]
	ended = c == nil && f.ended.has(id)
	f.mu.RUnlock()
	if c == nil {
		return CallView{}, false, ended
	}
	// c is never changed once visible here, so it is read unlocked.
	v = CallView{
		CallID:       c.id,
		CallerNumber: c.callerNumber,
		CalleeNumber: c.calleeNumber,
		SipHeaders:   maps.Clone(c.headerIndex),
		Variables:    maps.Clone(c.variables),
		State:        maps.Clone(c.state),
		Results:      c.results(),
		Handoff:      HandoffView{Status: StatusNone},
		Handoffs:     c.handoffs,
		MarksPlayed:  slices.Clone(c.marks),
		AgentStream:  c.agentStream,
		Transitions:  slices.Clone(c.transitions),
	}
	if c.precall != nil {
		v.PreCallError = c.precall.err
	}
	if v.Variables == nil {
		v.Variables = map[string]string{}
	}
	maps.Copy(v.Variables, c.setVariables)
	if v.State == nil {
		v.State = map[string]string{}
	}
	if h := c.handoff; h != nil {
		v.Handoff = HandoffView{
			Status: h.status, RequestID: h.requestID, CommandID: h.commandID, Destination: h.destination,
			Route: h.route, Reason: h.reason, Attempt: h.attempt, SipCode: h.sipCode, SipReason: h.sipReason,
			Detail: h.detail, RefusedCode: h.refusedCode, Ending: h.ending,
		}
		if h.method != batonv1.Method_METHOD_UNSPECIFIED {
			v.Handoff.Method = strings.TrimPrefix(h.method.String(), "METHOD_")
		}
	}
	return v, true, false
}

// tombstones remembers the last n ended calls, oldest forgotten first.
type tombstones struct {
	ids  map[string]struct{}
	ring []string
	next int
}

func newTombstones(n int) *tombstones {
	return &tombstones{ids: map[string]struct{}{}, ring: make([]string, n)}
}

func (t *tombstones) add(id string) {
	if _, ok := t.ids[id]; ok {
		return
	}
	if old := t.ring[t.next]; old != "" {
		delete(t.ids, old)
	}
	t.ring[t.next] = id
	t.ids[id] = struct{}{}
	t.next = (t.next + 1) % len(t.ring)
}

func (t *tombstones) has(id string) bool {
	_, ok := t.ids[id]
	return ok
}
