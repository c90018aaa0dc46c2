package sipx

import (
	"errors"
	"testing"
)

func TestMatchRoute(t *testing.T) {
	var patterns []RoutePattern
	for _, src := range []string{"sip:*@pbx.example.com", `re:tel:\+1555[0-9]{7}`} {
		p, err := NewRoutePattern(src)
		if err != nil {
			t.Fatal(err)
		}
		patterns = append(patterns, p)
	}
	for route, ok := range map[string]bool{
		"sip:bob@pbx.example.com":                 true,
		"tel:+15551234567":                        true,
		"tel:+155512345678":                       false, // the regexp matches whole routes
		"sip:bob@evil.example.com":                false,
		"sip:x@evil.example;a=@pbx.example.com":   false, // a second '@'
		"sip:bob@pbx.example.com;maddr=10.0.0.1":  false,
		"sip:bob@pbx.example.com;MADDR=10.0.0.1":  false,
		"sip:bob@pbx.example.com;transport=tcp":   false, // the glob names no parameters
		"sip:bob@pbx.example.com/../evil.example": false, // '*' stops at '/'
	} {
		err := MatchRoute(patterns, route)
		if ok != (err == nil) || (err != nil && !errors.Is(err, ErrRouteNotAllowed)) {
			t.Errorf("MatchRoute(%q) = %v, want allowed %v", route, err, ok)
		}
	}
	for _, bad := range []string{"", "  ", "re:(", "sip:[*@x"} {
		if _, err := NewRoutePattern(bad); err == nil {
			t.Errorf("NewRoutePattern(%q) accepted", bad)
		}
	}
}
