package sipx

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
)

// ErrRouteNotAllowed means a route matches no pattern of an allowlist,
// or has a form no allowlist admits.
var ErrRouteNotAllowed = errors.New("route not allowed")

// RoutePattern is one pattern of a transfer-target allowlist (the
// router's allowlist.routes, transfer's routes.allow): "re:<regexp>" is a
// regular expression that must match the whole route; anything else is a
// glob (path.Match syntax: '*' any run of characters except '/', '?' one
// character, [class]).
type RoutePattern struct {
	src string
	re  *regexp.Regexp // nil: a glob
}

// NewRoutePattern compiles src.
func NewRoutePattern(src string) (RoutePattern, error) {
	if expr, ok := strings.CutPrefix(src, "re:"); ok {
		re, err := regexp.Compile("^(?:" + expr + ")$")
		if err != nil {
			return RoutePattern{}, err
		}
		return RoutePattern{src: src, re: re}, nil
	}
	if strings.TrimSpace(src) == "" {
		return RoutePattern{}, errors.New("empty pattern")
	}
	if _, err := path.Match(src, ""); err != nil {
		return RoutePattern{}, err
	}
	return RoutePattern{src: src}, nil
}

// Match reports whether route matches the pattern.
func (p RoutePattern) Match(route string) bool {
	if p.re != nil {
		return p.re.MatchString(route)
	}
	ok, _ := path.Match(p.src, route)
	return ok
}

// String returns the pattern as configured.
func (p RoutePattern) String() string { return p.src }

// MatchRoute returns nil when route matches one of patterns, else an
// ErrRouteNotAllowed. A glob's '*' matches ';' and '@' too, so a route
// with a second '@' ("sip:x@evil.example;a=@pbx.example.com" matches
// "sip:*@pbx.example.com") or a maddr parameter (which redirects the
// request) is refused whatever the patterns: no valid route has either
// (RFC 3261 25.1 escapes '@' in a user part or a parameter).
func MatchRoute(patterns []RoutePattern, route string) error {
	if n := strings.Count(route, "@"); n > 1 {
		return fmt.Errorf("%w: %q has %d '@': the host a pattern names could hide in a parameter", ErrRouteNotAllowed, route, n)
	}
	if strings.Contains(strings.ToLower(route), ";maddr=") {
		return fmt.Errorf("%w: %q has a maddr parameter, which redirects the request", ErrRouteNotAllowed, route)
	}
	for _, p := range patterns {
		if p.Match(route) {
			return nil
		}
	}
	return fmt.Errorf("%w: %q matches none of %d patterns", ErrRouteNotAllowed, route, len(patterns))
}
