package handoff

import (
	"slices"
	"strings"
	"time"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// Transition types: the steps of a call's handoff pushed to agents
// (server-sent events, webhooks).
const (
	// TransitionRequested: a HandoffRequested was folded for a live call.
	TransitionRequested = "requested"
	// TransitionRefused: the router refused it (HandoffRefused): Code says why.
	TransitionRefused = "refused"
	// TransitionCommandIssued: the router issued a HandoffCommand (a first
	// attempt, a fallback, or the BYE of on_all_failed: hangup).
	TransitionCommandIssued = "command_issued"
	// TransitionAccepted: transfer's outcome ACCEPTED (the REFER's 202).
	TransitionAccepted = "accepted"
	// TransitionProgress: PROGRESS, RINGING or ANSWERED (Status says which).
	TransitionProgress = "progress"
	// TransitionSucceeded: SUCCEEDED, or BRIDGED for a warm transfer.
	TransitionSucceeded = "succeeded"
	// TransitionFailed: FAILED, with the SIP code and reason.
	TransitionFailed = "failed"
	// TransitionReturnedToAgent: every destination failed and the call
	// stays with the agent (on_all_failed: return_to_agent).
	TransitionReturnedToAgent = "returned_to_agent"
	// TransitionCallEnded: the call ended (CallEnded).
	TransitionCallEnded = "call_ended"
	// TransitionCallEvicted: the call was evicted (CallEvicted).
	TransitionCallEvicted = "call_evicted"
)

// TransitionTypes lists every transition type, in the order of a handoff.
var TransitionTypes = []string{
	TransitionRequested, TransitionRefused, TransitionCommandIssued, TransitionAccepted, TransitionProgress,
	TransitionSucceeded, TransitionFailed, TransitionReturnedToAgent, TransitionCallEnded, TransitionCallEvicted,
}

// returnedSuffix makes the id of a returned_to_agent transition, which
// shares its source event (the last failed outcome) with a failed one.
const returnedSuffix = ":returned"

// Transition is one step of a call's handoff, derived from one event of
// the log, so every fold of the same log derives the same ones in the
// same order.
type Transition struct {
	// ID is the CloudEvents id of the event it comes from: the
	// HandoffRequested, HandoffRefused, HandoffCommand, TransferOutcome,
	// CallEnded or CallEvicted; for returned_to_agent, the failed
	// outcome's id with ":returned" added.
	ID     string
	CallID string
	// Seq numbers a call's transitions from 1, in the order folded.
	Seq  uint32
	Type string
	// Time is the source event's time.
	Time        time.Time
	RequestID   string
	CommandID   string
	Destination string
	// Method is REFER, INVITE or BYE.
	Method  string
	Attempt uint32
	// Status is the transfer outcome's status (accepted, progress,
	// ringing, answered, succeeded, bridged, failed), when it comes from one.
	Status    string
	SipCode   int32
	SipReason string
	// Code is the refusal's reason code, or the reason of an eviction.
	Code   string
	Detail string
	// AfterMark and MarkWait are the request's (requested only).
	AfterMark string
	MarkWait  string
}

// Sink hears a fold's transitions once the batch they belong to commits,
// in order. It is called by Commit, on the folding goroutine: it must
// not block.
type Sink interface {
	Transitions(ts []Transition)
}

// WithSink makes s hear the fold's committed transitions. It returns f,
// and must be called before any Apply.
func (f *Fold) WithSink(s Sink) *Fold {
	f.sink = s
	return f
}

// WithHistory keeps each call's last n transitions in its state, for
// View (a stream resumed with Last-Event-ID); 0 (the default) keeps none.
// It returns f, and must be called before any Apply.
func (f *Fold) WithHistory(n int) *Fold {
	f.history = n
	return f
}

// CommitSince is Commit, except that the sink hears only the transitions
// whose source event is at since or later: a restore re-folds history
// whose transitions were pushed when first folded, and pushes again only
// those of the last moments, which the instance before may not have.
func (f *Fold) CommitSince(since time.Time) {
	f.pending = slices.DeleteFunc(f.pending, func(t Transition) bool { return t.Time.Before(since) })
	f.Commit()
}

// emit records a transition of c, which must be mutable (or just removed:
// then it is not kept in the history).
func (f *Fold) emit(c *call, kept bool, t Transition) {
	c.seq++
	t.Seq, t.CallID = c.seq, c.id
	if kept && f.history > 0 {
		keep := c.transitions
		if len(keep) >= f.history {
			keep = keep[len(keep)-f.history+1:]
		}
		ts := make([]Transition, 0, len(keep)+1)
		c.transitions = append(append(ts, keep...), t)
	}
	if f.sink != nil {
		f.pending = append(f.pending, t)
	}
}

func (f *Fold) emitRequested(c *call, ev events.Event, msg *batonv1.HandoffRequested) {
	f.emit(c, true, Transition{ID: ev.ID, Type: TransitionRequested, Time: ev.Time, RequestID: msg.GetRequestId(),
		Destination: printable(msg.GetDestination()), Code: msg.GetReason(), AfterMark: msg.GetAfterMark(), MarkWait: msg.GetMarkWait()})
}

// emitDecision records the transition of a decision the fold made for c.
func (f *Fold) emitDecision(id string, ev events.Event, d Decision) {
	c := f.calls[id]
	if c == nil {
		return
	}
	c = f.mutable(id)
	switch m := d.Msg.(type) {
	case *batonv1.HandoffCommand:
		f.emit(c, true, Transition{ID: d.ID, Type: TransitionCommandIssued, Time: ev.Time, RequestID: m.GetRequestId(),
			CommandID: m.GetCommandId(), Destination: m.GetDestination(), Method: methodName(m.GetMethod()),
			Attempt: m.GetAttempt(), Code: m.GetReason()})
	case *batonv1.HandoffRefused:
		f.emit(c, true, Transition{ID: d.ID, Type: TransitionRefused, Time: ev.Time, RequestID: m.GetRequestId(),
			Destination: m.GetDestination(), Code: m.GetReasonCode(), Detail: m.GetDetail()})
	}
}

// emitOutcome records the transition of a transfer outcome of c's current
// command; c must be mutable.
func (f *Fold) emitOutcome(c *call, ev events.Event, msg *batonv1.TransferOutcome) {
	typ := ""
	switch msg.GetStatus() {
	case batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED:
		typ = TransitionAccepted
	case batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS, batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING,
		batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED:
		typ = TransitionProgress
	case batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED:
		typ = TransitionSucceeded
	case batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED:
		typ = TransitionFailed
	default:
		return // ENDED: the call's own end says it
	}
	h := c.handoff
	f.emit(c, true, Transition{ID: ev.ID, Type: typ, Time: ev.Time, RequestID: h.requestID, CommandID: msg.GetCommandId(),
		Destination: msg.GetDestination(), Method: methodName(msg.GetMethod()), Attempt: h.attempt,
		Status:  strings.ToLower(strings.TrimPrefix(msg.GetStatus().String(), "OUTCOME_STATUS_")),
		SipCode: msg.GetSipCode(), SipReason: msg.GetSipReason(), Detail: msg.GetDetail()})
}

func (f *Fold) emitReturned(c *call, ev events.Event) {
	h := c.handoff
	f.emit(c, true, Transition{ID: ev.ID + returnedSuffix, Type: TransitionReturnedToAgent, Time: ev.Time,
		RequestID: h.requestID, CommandID: h.commandID, Destination: h.destination, Method: methodName(h.method),
		Attempt: h.attempt, SipCode: h.sipCode, SipReason: h.sipReason, Detail: h.detail})
}

// emitGone records the end (call_ended) or eviction (call_evicted) of c,
// just removed from the fold.
func (f *Fold) emitGone(c *call, typ string, ev events.Event, code string) {
	gone := *c // the committed value is never changed
	f.emit(&gone, false, Transition{ID: ev.ID, Type: typ, Time: ev.Time, Code: code})
}

func methodName(m batonv1.Method) string {
	if m == batonv1.Method_METHOD_UNSPECIFIED {
		return ""
	}
	return strings.TrimPrefix(m.String(), "METHOD_")
}
