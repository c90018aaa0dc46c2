// Package handoff folds a call's facts into per-call state and decides the
// handoff commands: which destination, which method, and the X- headers
// rendered from the call's variables.
package handoff

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/template"
)

// Header is a header a destination sends, with its value template.
type Header struct {
	Name  string
	Value *template.Template
}

// Destination is a validated handoff destination.
type Destination struct {
	Name          string
	Method        batonv1.Method
	Route         string
	Headers       []Header // sorted by name
	AnswerTimeout time.Duration
}

// Rule is a routing rule. A rule without a condition matches every call
// when its CallStarted arrives; conditions come later.
type Rule struct {
	Name        string
	Destination string
}

// Table is what the router knows from its configuration.
type Table struct {
	Destinations map[string]Destination
	// Default names the destination used when a request names none.
	Default string
	// Rules are tried in order; the first match decides.
	Rules []Rule
}

// destination finds a destination by name: exactly, else ignoring case.
func (t Table) destination(name string) (Destination, bool) {
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

// CommandID is the deterministic id of the command that trigger (an event
// id) caused for a call: the first 32 hex digits of
// sha256(callID + "/" + triggerID). A replayed trigger gives the same id,
// so downstream recognises the duplicate.
func CommandID(callID, triggerID string) string {
	sum := sha256.Sum256([]byte(callID + "/" + triggerID))
	return hex.EncodeToString(sum[:])[:32]
}
