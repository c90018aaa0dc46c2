// Package handoff folds a call's facts into per-call state and decides the
// handoff commands: which destination, which method, and the X- headers
// rendered from the call's variables; on a failed transfer, the fallback.
package handoff

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/router/internal/rules"
	"github.com/baton-voice/baton/services/router/internal/template"
)

// Header is a header a destination sends, with its value template.
type Header struct {
	Name  string
	Value *template.Template
}

// MissingPolicy is what a destination does when a header template names a
// variable the call does not have.
type MissingPolicy int

// Missing-variable policies.
const (
	// MissingEmpty renders the variable as "" and logs it.
	MissingEmpty MissingPolicy = iota
	// MissingRefuse refuses the handoff (HandoffRefused, missing_variable).
	MissingRefuse
)

// Encryption is the media and signalling protection of an INVITE leg.
type Encryption string

// Encryptions.
const (
	EncryptionTLSSRTP Encryption = "tls_srtp"
	EncryptionUDPRTP  Encryption = "udp_rtp"
)

// Destination is a validated handoff destination.
type Destination struct {
	Name          string
	Method        batonv1.Method
	Route         string
	Headers       []Header // sorted by name
	AnswerTimeout time.Duration
	// Encryption applies to INVITE only; empty for REFER and BYE.
	Encryption Encryption
	// Whisper is the audio played to the destination before bridging
	// (INVITE only); empty for none.
	Whisper string
	// ContextIn is where a REFER carries the headers (refer_to, headers,
	// both; empty is refer_to); REFER only.
	ContextIn string
	// WhisperHosts are the hosts a handoff's own whisper_url may name
	// (exact, or *.domain for the hosts below it); empty refuses any.
	WhisperHosts []string
	// Fallback names the destinations tried, in order, after this one fails.
	Fallback  []string
	OnMissing MissingPolicy
	// SkipWhenDown passes the destination over while transfer's health
	// checks say it is down (DestinationHealth, decision 0016): its
	// fallbacks, then the default, are tried instead.
	SkipWhenDown bool
}

// header finds the destination's header named name, ignoring case.
func (d Destination) header(name string) (Header, bool) {
	for _, h := range d.Headers {
		if strings.EqualFold(h.Name, name) {
			return h, true
		}
	}
	return Header{}, false
}

// Condition is a compiled rule condition (see package rules).
type Condition interface {
	Match(in *rules.Input) (bool, error)
}

// Rule is a routing rule. Rules are tried in order when a call starts (those
// not marked AfterPreCall), when its pre-call data is folded (those marked)
// and when a handoff request names no destination (all). A matching rule applies its
// set actions, then hands off at once when it names a destination;
// otherwise evaluation stops (the call is left to the agent) unless
// Continue is set.
type Rule struct {
	Name string
	// When is the condition; nil matches every call.
	When Condition
	// SetVariables and SetState are written to the call when the rule matches.
	SetVariables map[string]string
	SetState     map[string]string
	// Destination, when set, is handed off to at once.
	Destination string
	// Agent, when set, chooses the call's voice-AI agent (AgentSelected).
	Agent string
	// Continue goes on to the next rule after a match without a handoff.
	Continue bool
	// AfterPreCall moves the rule from the call-start pass to the pass
	// that runs when the call's pre-call data is folded (after: precall).
	AfterPreCall bool
}

// EndPolicy is what happens when every destination of a handoff failed.
type EndPolicy int

// End policies.
const (
	// EndHangup ends the call: a BYE command.
	EndHangup EndPolicy = iota
	// EndReturnToAgent leaves the call with the agent; nothing is sent.
	EndReturnToAgent
)

// Table is what the router knows from its configuration. A Table is never
// changed once built; a reload builds a new one.
type Table struct {
	Destinations map[string]Destination
	// Default names the destination used when a request names none.
	Default string
	// Rules are tried in order.
	Rules []Rule
	// AllowedRoutes are the patterns a request may name a route by, beside
	// the configured destinations.
	AllowedRoutes []sipx.RoutePattern
	// MaxAttempts bounds the commands of one handoff, fallbacks included.
	MaxAttempts uint32
	// MaxHandoffs bounds the handoffs one call may start; 0 is no bound.
	MaxHandoffs uint32
	// MaxStateKeys and MaxStateBytes bound a call's state (written by the
	// agent and by rules): its keys, and the bytes of its keys and values
	// together. An agent write (CallStateChanged) that would grow the
	// state past either is not applied. 0 is no bound.
	MaxStateKeys  int
	MaxStateBytes int
	// DeniedNumbers are number prefixes (route.NumberPrefix) no ad-hoc
	// route may dial, whatever pattern admits it.
	DeniedNumbers []string
	// OnAllFailed is what happens when no destination is left.
	OnAllFailed EndPolicy
	// AdHocAnswerTimeout is the answer timeout of an allowlisted route.
	AdHocAnswerTimeout time.Duration
}

// Current returns t itself: a fixed table is its own source.
func (t *Table) Current() *Table { return t }

// destination finds a destination by name: exactly, else ignoring case.
func (t *Table) destination(name string) (Destination, bool) {
	if d, ok := t.Destinations[name]; ok {
		return d, true
	}
	for n, d := range t.Destinations {
		if strings.EqualFold(n, name) {
			return d, true
		}
	}
	return Destination{}, false
}

// routeAllowed reports whether an ad-hoc route matches the allowlist
// (sipx.MatchRoute, which also refuses a second '@' and maddr).
func (t *Table) routeAllowed(route string) bool {
	return sipx.MatchRoute(t.AllowedRoutes, route) == nil
}

// Allows reports whether a handoff may target target (a destination
// name, or a route the allowlist admits); when not, it returns the
// refusal code and why. The empty target (rules, then the default) is
// always allowed.
func (t *Table) Allows(target string) (ok bool, code, detail string) {
	if target == "" {
		return true, "", ""
	}
	_, code, detail = resolve(t, target)
	return code == "", code, detail
}

// Source gives the table decisions use. A reloading source returns the
// newest valid table; a decision loads it once and uses that snapshot.
type Source interface {
	Current() *Table
}

// CommandID is the deterministic id of the command that trigger (an event
// id) caused for a call: the first 32 hex digits of
// sha256(callID + "/" + triggerID). A replayed trigger gives the same id,
// so downstream recognises the duplicate.
func CommandID(callID, triggerID string) string {
	sum := sha256.Sum256([]byte(callID + "/" + triggerID))
	return hex.EncodeToString(sum[:])[:32]
}
