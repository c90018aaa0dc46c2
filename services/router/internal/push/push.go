// Package push tells agents how their calls' handoffs go without polling:
// a server-sent events stream per call (Hub, served by the agent API from
// the call view, on any instance) and webhooks (Webhooks, sent by the
// instance whose fold owns the call's partition). Both carry the
// transitions handoff.Fold derives from the log (handoff.Transition), so a
// replay of the log yields the same sequence, with the same ids.
package push

import (
	"time"

	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// Payload is the JSON of one transition: a webhook's body, an SSE event's
// data.
type Payload struct {
	// ID is the id of the event the transition comes from (SSE id,
	// Idempotency-Key).
	ID     string `json:"id"`
	CallID string `json:"call_id"`
	// Seq numbers the call's transitions from 1 in one fold's order.
	Seq         uint32    `json:"seq"`
	Type        string    `json:"type"`
	Time        time.Time `json:"time"`
	RequestID   string    `json:"request_id,omitempty"`
	CommandID   string    `json:"command_id,omitempty"`
	Destination string    `json:"destination,omitempty"`
	Method      string    `json:"method,omitempty"`
	Attempt     uint32    `json:"attempt,omitempty"`
	Status      string    `json:"status,omitempty"`
	SipCode     int32     `json:"sip_code,omitempty"`
	SipReason   string    `json:"sip_reason,omitempty"`
	Code        string    `json:"code,omitempty"`
	Detail      string    `json:"detail,omitempty"`
	AfterMark   string    `json:"after_mark,omitempty"`
	MarkWait    string    `json:"mark_wait,omitempty"`
}

// PayloadOf is the JSON form of t.
func PayloadOf(t handoff.Transition) Payload {
	return Payload{
		ID: t.ID, CallID: t.CallID, Seq: t.Seq, Type: t.Type, Time: t.Time.UTC(), RequestID: t.RequestID,
		CommandID: t.CommandID, Destination: t.Destination, Method: t.Method, Attempt: t.Attempt, Status: t.Status,
		SipCode: t.SipCode, SipReason: t.SipReason, Code: t.Code, Detail: t.Detail, AfterMark: t.AfterMark,
		MarkWait: t.MarkWait,
	}
}

// Final reports whether t is a call's last transition (it ended or was
// evicted): a stream of the call ends after it.
func Final(t handoff.Transition) bool {
	return t.Type == handoff.TransitionCallEnded || t.Type == handoff.TransitionCallEvicted
}
