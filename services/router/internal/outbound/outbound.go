// Package outbound is the router's policy for calls Baton places for an
// agent (POST /v1/calls): per trunk, which numbers and URIs may be dialled
// (an allowlist of patterns, and number prefixes that are never dialled,
// for toll fraud), which caller ids may be presented, the X- headers the
// INVITE carries (templates rendered from the request's variables, checked
// like a handoff's), the answer timeout and a rate cap. Admit decides a
// request; what it admits becomes an OutboundCallRequested that ingress
// places (docs/decisions/0018-outbound-calls.md).
package outbound

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/router/internal/handoff"
	"github.com/baton-voice/baton/services/router/internal/route"
	"github.com/baton-voice/baton/services/router/internal/template"
)

// Refusal codes (Refusal.Code, the problem document's code).
const (
	CodeUnknownTrunk       = "unknown_trunk"
	CodeInvalidTo          = "invalid_to"
	CodeNumberDenied       = "number_denied"
	CodeNotAllowed         = "number_not_allowed"
	CodeCallerIDNotAllowed = "caller_id_not_allowed"
	CodeInvalidHeader      = "invalid_header"
	CodeMissingVariable    = "missing_variable"
	CodeInvalidTimeout     = "invalid_answer_timeout"
	CodeRateLimited        = "rate_limited"
)

// Refusal is a request the policy refuses: Status is the HTTP status the
// API answers (400, 403, 404, 422 or 429), Code a machine code, Detail
// words for a person. RetryAfter is set for CodeRateLimited.
type Refusal struct {
	Status     int
	Code       string
	Detail     string
	RetryAfter time.Duration
}

func (r *Refusal) Error() string { return r.Code + ": " + r.Detail }

func refuse(status int, code, format string, args ...any) *Refusal {
	return &Refusal{Status: status, Code: code, Detail: fmt.Sprintf(format, args...)}
}

// Trunk is one trunk's outbound policy.
type Trunk struct {
	Name string
	// Allow are the patterns (sipx.RoutePattern: globs or re:) a
	// request's to must match; none allows nothing.
	Allow []sipx.RoutePattern
	// Deny are normalised number prefixes (route.NumberPrefix) never
	// dialled, whatever Allow says.
	Deny []string
	// CallerIDs are the caller ids the trunk may present; the first is
	// the default.
	CallerIDs []string
	// Headers are the X- headers of the INVITE, sorted by name.
	Headers []handoff.Header
	// RefuseMissing refuses a request whose headers name a variable it
	// lacks; otherwise the variable renders empty.
	RefuseMissing bool
	// AnswerTimeout is the default and the longest answer timeout.
	AnswerTimeout time.Duration
	// Rate is the most calls per second the trunk places from this router
	// instance, Burst how many may go at once; Rate 0 is no cap.
	Rate  float64
	Burst int
}

// MinAnswerTimeout is the shortest answer timeout a request may ask for.
const MinAnswerTimeout = time.Second

// Policy decides outbound requests. It is safe for concurrent use.
type Policy struct {
	trunks map[string]Trunk
	mu     sync.Mutex
	limits map[string]*rate.Limiter
}

// New returns the policy of trunks; names must be unique (the router's
// config validates them).
func New(trunks []Trunk) (*Policy, error) {
	p := &Policy{trunks: map[string]Trunk{}, limits: map[string]*rate.Limiter{}}
	for _, t := range trunks {
		if _, dup := p.trunks[t.Name]; dup {
			return nil, fmt.Errorf("outbound trunk %q listed twice", t.Name)
		}
		if t.AnswerTimeout < MinAnswerTimeout {
			return nil, fmt.Errorf("outbound trunk %q: answer timeout %v under %v", t.Name, t.AnswerTimeout, MinAnswerTimeout)
		}
		p.trunks[t.Name] = t
		if t.Rate > 0 {
			p.limits[t.Name] = rate.NewLimiter(rate.Limit(t.Rate), max(t.Burst, 1))
		}
	}
	return p, nil
}

// Request is what an agent asks for.
type Request struct {
	CallID string
	Trunk  string
	To     string
	// From is a caller id of the trunk's; empty is its first.
	From      string
	Variables map[string]string
	// AnswerTimeout is 0 (the trunk's) or MinAnswerTimeout up to it.
	AnswerTimeout time.Duration
}

// Admitted is a request the policy let through.
type Admitted struct {
	To, From      string
	Headers       []*batonv1.SipHeader
	AnswerTimeout time.Duration
}

// number is a plain number: an optional '+' and 3 to 20 digits.
var number = regexp.MustCompile(`^\+?[0-9]{3,20}$`)

// Admit checks req against its trunk's policy at now and, when it passes,
// takes one call from the trunk's rate cap. A refused request takes
// nothing.
func (p *Policy) Admit(req Request, now time.Time) (Admitted, error) {
	t, ok := p.trunks[req.Trunk]
	if !ok {
		return Admitted{}, refuse(404, CodeUnknownTrunk, "no outbound trunk %q", req.Trunk)
	}
	to := strings.TrimSpace(req.To)
	if !number.MatchString(to) {
		if err := route.AdHoc(to); err != nil || !strings.Contains(to, ":") {
			return Admitted{}, refuse(400, CodeInvalidTo, "to %q: want a number (+15551234567) or a sip:, sips: or tel: URI", req.To)
		}
	}
	if prefix, denied := route.Denied(to, t.Deny); denied {
		return Admitted{}, refuse(403, CodeNumberDenied, "to %q dials a denied number prefix %q (trunk %s)", to, prefix, t.Name)
	}
	if err := sipx.MatchRoute(t.Allow, to); err != nil {
		return Admitted{}, refuse(403, CodeNotAllowed, "to %q is not in trunk %s's outbound allowlist", to, t.Name)
	}
	from := req.From
	switch {
	case from == "" && len(t.CallerIDs) > 0:
		from = t.CallerIDs[0]
	case !contains(t.CallerIDs, from):
		return Admitted{}, refuse(403, CodeCallerIDNotAllowed, "caller id %q is not one of trunk %s's caller ids", req.From, t.Name)
	}
	timeout := req.AnswerTimeout
	if timeout == 0 {
		timeout = t.AnswerTimeout
	}
	if timeout < MinAnswerTimeout || timeout > t.AnswerTimeout {
		return Admitted{}, refuse(400, CodeInvalidTimeout, "answer timeout %v: want %v to %v (trunk %s)",
			timeout, MinAnswerTimeout, t.AnswerTimeout, t.Name)
	}
	headers, err := render(t, req, to, from)
	if err != nil {
		return Admitted{}, err
	}
	if err := p.take(t.Name, now); err != nil {
		return Admitted{}, err
	}
	return Admitted{To: to, From: from, Headers: headers, AnswerTimeout: timeout}, nil
}

// render renders the trunk's headers from the request's variables and the
// call's system variables, and checks each rendered value as a handoff's
// (sipx.ValidateCustom).
func render(t Trunk, req Request, to, from string) ([]*batonv1.SipHeader, error) {
	scope := template.Call{
		System: map[string]string{
			"call_id": req.CallID, "caller_number": from, "callee_number": to,
			"from_phone_number": from, "to_phone_number": to,
		},
		Agent: req.Variables,
	}.Scope()
	out := make([]*batonv1.SipHeader, 0, len(t.Headers))
	var missing []string
	for _, h := range t.Headers {
		v, miss := h.Value.Render(scope)
		missing = append(missing, miss...)
		if err := sipx.ValidateCustom(h.Name, v); err != nil {
			return nil, refuse(422, CodeInvalidHeader, "header %s: %v", h.Name, err)
		}
		out = append(out, &batonv1.SipHeader{Name: h.Name, Value: v})
	}
	if len(missing) > 0 && t.RefuseMissing {
		return nil, refuse(422, CodeMissingVariable, "missing variables: %s", strings.Join(missing, ", "))
	}
	return out, nil
}

// take spends one call of the trunk's rate cap at now.
func (p *Policy) take(trunk string, now time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	lim := p.limits[trunk]
	if lim == nil {
		return nil
	}
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return &Refusal{Status: 429, Code: CodeRateLimited, RetryAfter: d,
			Detail: fmt.Sprintf("trunk %s places at most %g calls per second (burst %d); retry in %v",
				trunk, float64(lim.Limit()), lim.Burst(), d.Round(time.Millisecond))}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// AsRefusal returns err's Refusal, if it is one.
func AsRefusal(err error) (*Refusal, bool) {
	var r *Refusal
	ok := errors.As(err, &r)
	return r, ok
}
