package config

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/router/internal/handoff"
	"github.com/baton-voice/baton/services/router/internal/outbound"
	"github.com/baton-voice/baton/services/router/internal/route"
	"github.com/baton-voice/baton/services/router/internal/template"
)

// Outbound is the policy of outbound calls (POST /v1/calls), per trunk.
// It is read at start; a reload does not change it.
type Outbound struct {
	Trunks []OutboundTrunk `yaml:"trunks"`
}

// OutboundTrunk is one trunk's outbound policy. Its name is also an
// outbound trunk of ingress's config (outbound.trunks), which says where
// the INVITE goes and caps the calls up at once.
type OutboundTrunk struct {
	Name string `yaml:"name"`
	// Allow are the patterns a request's to must match, as in
	// allowlist.routes: a glob ("+1555*", "sip:*@pbx.example.com") or
	// "re:" and a regular expression. Empty allows nothing.
	Allow []string `yaml:"allow"`
	// DenyNumbers are number prefixes never dialled through the trunk,
	// on top of allowlist.deny_numbers (premium rate, international).
	DenyNumbers []string `yaml:"deny_numbers"`
	// CallerIDs are the caller ids (From) the trunk may present; the
	// first is the default. At least one.
	CallerIDs []string `yaml:"caller_ids"`
	// Headers maps an X- header name to its value template, rendered from
	// the request's variables ({name} or $name) and call_id,
	// caller_number, callee_number.
	Headers map[string]string `yaml:"headers"`
	// OnMissingVariable is empty (render "") or refuse (422).
	OnMissingVariable string `yaml:"on_missing_variable"`
	// AnswerTimeout is the default and the longest answer timeout a
	// request may ask for; 0 is DefaultAnswerTimeout.
	AnswerTimeout time.Duration `yaml:"answer_timeout"`
	// MaxCallsPerSecond caps the calls each router instance places
	// through the trunk (0: no cap); Burst is how many may go at once
	// (default: MaxCallsPerSecond rounded up, at least 1).
	MaxCallsPerSecond float64 `yaml:"max_calls_per_second"`
	Burst             int     `yaml:"burst"`
}

// Bounds of outbound trunks.
const (
	MaxOutboundCallsPerSecond = 10_000
	MaxOutboundBurst          = 10_000
)

func (c *Config) validateOutbound() []error {
	var errs []error
	seen := map[string]bool{}
	globalDeny, _ := c.denyNumbers()
	for i, t := range c.Outbound.Trunks {
		path := fmt.Sprintf("outbound.trunks[%d]", i)
		switch {
		case !destinationName.MatchString(t.Name):
			errs = append(errs, pkgconfig.Errorf(path+".name", "%q: want letters, digits, '_', '.' or '-'", t.Name))
		case seen[t.Name]:
			errs = append(errs, pkgconfig.Errorf(path+".name", "%q is listed twice", t.Name))
		}
		seen[t.Name] = true
		if len(t.Allow) == 0 {
			errs = append(errs, pkgconfig.Errorf(path+".allow", "at least one pattern: an outbound trunk with no allowlist dials nothing"))
		}
		for j, p := range t.Allow {
			if _, err := sipx.NewRoutePattern(p); err != nil {
				errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("%s.allow[%d]", path, j), "%q: %v", p, err))
			}
		}
		for j, p := range t.DenyNumbers {
			if _, err := route.NumberPrefix(p); err != nil {
				errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("%s.deny_numbers[%d]", path, j), "%v", err))
			}
		}
		if len(t.CallerIDs) == 0 {
			errs = append(errs, pkgconfig.Errorf(path+".caller_ids", "at least one caller id"))
		}
		for j, id := range t.CallerIDs {
			if _, err := route.Parse(id); err != nil || len(id) > route.MaxAdHoc {
				errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("%s.caller_ids[%d]", path, j), "%q: want a number or a sip:/tel: URI", id))
			} else if p, denied := route.Denied(id, globalDeny); denied {
				errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("%s.caller_ids[%d]", path, j), "%q is a denied number (%q)", id, p))
			}
		}
		errs = append(errs, validateHeaders(path, t.Headers)...)
		if m := t.OnMissingVariable; m != "" && m != OnMissingEmpty && m != OnMissingRefuse {
			errs = append(errs, pkgconfig.Errorf(path+".on_missing_variable", "%q: want %s or %s", m, OnMissingEmpty, OnMissingRefuse))
		}
		if d := t.AnswerTimeout; d != 0 && (d < outbound.MinAnswerTimeout || d > MaxAnswerTimeout) {
			errs = append(errs, pkgconfig.Errorf(path+".answer_timeout", "%v: want %v to %v", d, outbound.MinAnswerTimeout, MaxAnswerTimeout))
		}
		if r := t.MaxCallsPerSecond; r < 0 || r > MaxOutboundCallsPerSecond {
			errs = append(errs, pkgconfig.Errorf(path+".max_calls_per_second", "%g: want 0 (no cap) to %d", r, MaxOutboundCallsPerSecond))
		}
		if b := t.Burst; b < 0 || b > MaxOutboundBurst {
			errs = append(errs, pkgconfig.Errorf(path+".burst", "%d: want 0 (default) to %d", b, MaxOutboundBurst))
		}
	}
	return errs
}

// OutboundPolicy builds the outbound policy of a validated config.
func (c *Config) OutboundPolicy() (*outbound.Policy, error) {
	globalDeny, errs := c.denyNumbers()
	if len(errs) > 0 {
		return nil, errs[0]
	}
	var trunks []outbound.Trunk
	for i, t := range c.Outbound.Trunks {
		path := fmt.Sprintf("outbound.trunks[%d]", i)
		ot := outbound.Trunk{
			Name: t.Name, CallerIDs: slices.Clone(t.CallerIDs), Deny: slices.Clone(globalDeny),
			RefuseMissing: t.OnMissingVariable == OnMissingRefuse, AnswerTimeout: cmp.Or(t.AnswerTimeout, DefaultAnswerTimeout),
			Rate: t.MaxCallsPerSecond, Burst: t.Burst,
		}
		if ot.Burst == 0 {
			ot.Burst = max(1, int(t.MaxCallsPerSecond+0.999))
		}
		for j, p := range t.Allow {
			pat, err := sipx.NewRoutePattern(p)
			if err != nil {
				return nil, fmt.Errorf("%s.allow[%d]: %w", path, j, err)
			}
			ot.Allow = append(ot.Allow, pat)
		}
		for j, p := range t.DenyNumbers {
			n, err := route.NumberPrefix(p)
			if err != nil {
				return nil, fmt.Errorf("%s.deny_numbers[%d]: %w", path, j, err)
			}
			ot.Deny = append(ot.Deny, n)
		}
		for _, name := range slices.Sorted(maps.Keys(t.Headers)) {
			tpl, err := template.Parse(t.Headers[name])
			if err != nil {
				return nil, fmt.Errorf("%s.headers.%s: %w", path, name, err)
			}
			ot.Headers = append(ot.Headers, handoff.Header{Name: name, Value: tpl})
		}
		trunks = append(trunks, ot)
	}
	return outbound.New(trunks)
}
