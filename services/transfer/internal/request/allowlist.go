package request

import (
	"fmt"

	"github.com/baton-voice/baton/pkg/sipx"
)

// ErrRouteNotAllowed means a command's route matches no pattern of
// transfer's route allowlist.
var ErrRouteNotAllowed = sipx.ErrRouteNotAllowed

// Allowlist is the routes transfer dials (REFER's Refer-To, a new leg's
// INVITE), checked again in transfer whatever the router decided: anyone
// who can write to the handoffs topic could otherwise place calls to any
// number (issue 14, item 11). Patterns have the router's allowlist.routes
// syntax (sipx.RoutePattern). A nil *Allowlist allows every route.
type Allowlist struct {
	patterns []sipx.RoutePattern
}

// NewAllowlist compiles patterns; an invalid one is an error naming it.
func NewAllowlist(patterns []string) (*Allowlist, error) {
	a := &Allowlist{}
	for i, src := range patterns {
		p, err := sipx.NewRoutePattern(src)
		if err != nil {
			return nil, fmt.Errorf("route pattern %d %q: %w", i, src, err)
		}
		a.patterns = append(a.patterns, p)
	}
	return a, nil
}

// Check returns nil when route matches a pattern (or a is nil), else an
// error wrapping ErrRouteNotAllowed (sipx.MatchRoute).
func (a *Allowlist) Check(route string) error {
	if a == nil {
		return nil
	}
	return sipx.MatchRoute(a.patterns, route)
}
