package request

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
)

// ErrRouteNotAllowed means a command's route matches no pattern of
// transfer's route allowlist.
var ErrRouteNotAllowed = errors.New("route not allowed")

// Allowlist is the routes transfer dials (REFER's Refer-To, a new leg's
// INVITE), checked again in transfer whatever the router decided: anyone
// who can write to the handoffs topic could otherwise place calls to any
// number (issue 14, item 11). Patterns are the router's allowlist.routes
// syntax: a glob ("sip:*@pbx.example.com", path.Match: '*' is any run of
// characters but '/', '?' one character, [class]) or "re:" and a regular
// expression that must match the whole route. A glob's '*' matches ';'
// and '@' too, so a route with a second '@' ("sip:x@evil.example;a=@
// pbx.example.com" matches "sip:*@pbx.example.com") or a maddr parameter
// (which redirects the request) is refused whatever the patterns: no
// valid route has either (RFC 3261 25.1 escapes '@' in a user part or a
// parameter). A nil *Allowlist allows every route.
type Allowlist struct {
	patterns []routePattern
}

type routePattern struct {
	src string
	re  *regexp.Regexp // nil: a glob
}

// NewAllowlist compiles patterns; an invalid one is an error naming it.
func NewAllowlist(patterns []string) (*Allowlist, error) {
	a := &Allowlist{}
	for i, src := range patterns {
		if expr, ok := strings.CutPrefix(src, "re:"); ok {
			re, err := regexp.Compile("^(?:" + expr + ")$")
			if err != nil {
				return nil, fmt.Errorf("route pattern %d %q: %w", i, src, err)
			}
			a.patterns = append(a.patterns, routePattern{src: src, re: re})
			continue
		}
		if strings.TrimSpace(src) == "" {
			return nil, fmt.Errorf("route pattern %d: empty", i)
		}
		if _, err := path.Match(src, ""); err != nil {
			return nil, fmt.Errorf("route pattern %d %q: %w", i, src, err)
		}
		a.patterns = append(a.patterns, routePattern{src: src})
	}
	return a, nil
}

// Check returns nil when route matches a pattern (or a is nil), else
// ErrRouteNotAllowed.
func (a *Allowlist) Check(route string) error {
	if a == nil {
		return nil
	}
	if n := strings.Count(route, "@"); n > 1 {
		return fmt.Errorf("%w: %q has %d '@': the host a pattern names could hide in a parameter", ErrRouteNotAllowed, route, n)
	}
	if strings.Contains(strings.ToLower(route), ";maddr=") {
		return fmt.Errorf("%w: %q has a maddr parameter, which redirects the request", ErrRouteNotAllowed, route)
	}
	for _, p := range a.patterns {
		if p.re != nil {
			if p.re.MatchString(route) {
				return nil
			}
			continue
		}
		if ok, _ := path.Match(p.src, route); ok {
			return nil
		}
	}
	return fmt.Errorf("%w: %q matches none of the %d patterns of transfer's route allowlist", ErrRouteNotAllowed, route, len(a.patterns))
}
