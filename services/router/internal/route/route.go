// Package route reads the routes a handoff goes to: sip: and sips: URIs,
// tel: URIs and extensions. Parse classifies a configured route; AdHoc is
// the stricter check of a route an agent names directly (it must not be
// able to redirect the request or smuggle anything into it); Number is
// the number a route dials, which the deny list (premium-rate prefixes)
// is matched against.
package route

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/baton-voice/baton/pkg/sipx"
)

// Kind is what a route is.
type Kind string

// Route kinds.
const (
	SIP       Kind = "sip"
	Tel       Kind = "tel"
	Extension Kind = "extension"
)

// MaxAdHoc is the longest route an agent may name.
const MaxAdHoc = 256

// Error is a route this package refuses.
type Error struct{ msg string }

func (e *Error) Error() string { return e.msg }

func errorf(format string, args ...any) error { return &Error{msg: fmt.Sprintf(format, args...)} }

var (
	hostPattern      = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$|^\[[0-9A-Fa-f:.]+\]$`)
	userPattern      = regexp.MustCompile(`^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+$`)
	paramsPattern    = regexp.MustCompile(`^[A-Za-z0-9\-_.!~*'()%;=\[\]/:&+$]*$`)
	telPattern       = regexp.MustCompile(`^\+?[0-9\-.()]*[0-9][0-9\-.()]*$`)
	extensionPattern = regexp.MustCompile(`^\+?[0-9*#]{1,32}$`)
	// adHocUser is the user part of an ad-hoc SIP route: a number or a
	// name, escapes allowed; none of the separators RFC 3261 lets a user
	// part hold (';', '&', '=', ',', '$', '/', '?').
	adHocUser = regexp.MustCompile(`^[A-Za-z0-9\-_.!~*'()+%]+$`)
	// numberPrefix is a deny-list entry once visual separators are gone.
	numberPrefix = regexp.MustCompile(`^\+?[0-9*#]+$`)
)

// adHocParams are the only URI parameters an ad-hoc SIP route may carry,
// with their allowed values: nothing that redirects the request (maddr),
// changes its method or smuggles a value past a glob.
var adHocParams = map[string][]string{
	"user":      {"phone", "ip"},
	"transport": {"udp", "tcp", "tls"},
}

// Parse classifies a route: a sip: or sips: URI ([user@]host[:port]
// [;params], no URI headers), a tel: URI (tel:+15551234567, visual
// separators allowed) or an extension (digits, '*', '#', an optional
// leading '+'). Anything else is an error.
func Parse(route string) (Kind, error) {
	scheme, rest, hasScheme := strings.Cut(route, ":")
	switch s := strings.ToLower(scheme); {
	case hasScheme && (s == "sip" || s == "sips"):
		_, err := splitSIP(rest)
		return SIP, err
	case hasScheme && s == "tel":
		number, _, _ := strings.Cut(rest, ";")
		if !telPattern.MatchString(number) {
			return Tel, errorf("tel route %q: want tel:+15551234567", route)
		}
		return Tel, nil
	case !hasScheme && extensionPattern.MatchString(route):
		return Extension, nil
	}
	return "", errorf("unsupported route %q: want sip:user@host[:port], sips:user@host, tel:+number, or an extension of digits, '*' and '#'", route)
}

// sipParts are the pieces of a sip: or sips: URI after the scheme.
type sipParts struct {
	user, host, port, params string
}

// splitSIP checks and splits the part of a sip:/sips: URI after the
// scheme: [user@]host[:port][;params], without URI headers (those come
// from the destination's headers).
func splitSIP(rest string) (sipParts, error) {
	var p sipParts
	if strings.ContainsAny(rest, "?<>\" \t") || sipx.HasControl(rest) {
		return p, errorf("SIP route %q: must be a bare URI: no '?' headers, brackets, quotes, spaces or control characters", rest)
	}
	hostport := rest
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		p.user = rest[:at]
		if p.user == "" || !userPattern.MatchString(p.user) {
			return p, errorf("SIP route: bad user part %q", p.user)
		}
		hostport = rest[at+1:]
	}
	hostport, p.params, _ = strings.Cut(hostport, ";")
	if !paramsPattern.MatchString(p.params) {
		return p, errorf("SIP route: bad parameters %q", p.params)
	}
	p.host = hostport
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.HasSuffix(hostport, "]") {
		p.host, p.port = hostport[:i], hostport[i+1:]
		if n, err := strconv.Atoi(p.port); err != nil || n < 1 || n > 65535 {
			return p, errorf("SIP route: bad port %q", p.port)
		}
	}
	if p.host == "" || !hostPattern.MatchString(p.host) {
		return p, errorf("SIP route: bad host %q", p.host)
	}
	return p, nil
}

// AdHoc checks a route an agent names directly, before the allowlist is
// consulted: a valid route of at most MaxAdHoc bytes; a SIP URI has a
// plain user part (no password, no user parameters), only the parameters
// user=phone|ip and transport=udp|tcp|tls, and no URI headers; a tel: URI has
// no parameters. A glob such as "sip:*@pbx.example.com" then cannot be
// satisfied by a route that goes elsewhere ("sip:x@evil.example;a=@pbx.example.com").
func AdHoc(route string) error {
	if len(route) > MaxAdHoc {
		return errorf("%d bytes, at most %d", len(route), MaxAdHoc)
	}
	kind, err := Parse(route)
	if err != nil {
		return err
	}
	_, rest, _ := strings.Cut(route, ":")
	switch kind {
	case SIP:
		p, _ := splitSIP(rest) // Parse checked it
		if p.user != "" && !adHocUser.MatchString(p.user) {
			return errorf("%q: the user part may hold letters, digits, '+', escapes and marks only", route)
		}
		if p.params == "" {
			return nil
		}
		for _, kv := range strings.Split(p.params, ";") {
			k, v, _ := strings.Cut(kv, "=")
			allowed, ok := adHocParams[strings.ToLower(k)]
			if !ok || !containsFold(allowed, v) {
				return errorf("%q: parameter %q is not allowed on a route named by the agent", route, kv)
			}
		}
	case Tel:
		if strings.Contains(rest, ";") {
			return errorf("%q: tel: parameters are not allowed on a route named by the agent", route)
		}
	}
	return nil
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// Number is what a route dials, normalised for the deny list: the user
// part of a SIP URI (escapes decoded, user parameters cut), the number of
// a tel: URI or the extension, with the visual separators '-', '.', '(',
// ')' and spaces removed. ok is false when the route dials no user (a
// SIP URI without one) or does not parse.
func Number(route string) (string, bool) {
	kind, err := Parse(route)
	if err != nil {
		return "", false
	}
	_, rest, _ := strings.Cut(route, ":")
	var n string
	switch kind {
	case SIP:
		p, _ := splitSIP(rest)
		user, _, _ := strings.Cut(p.user, ";")
		if u, err := url.PathUnescape(user); err == nil {
			user = u
		}
		n = user
	case Tel:
		n, _, _ = strings.Cut(rest, ";")
	case Extension:
		n = route
	}
	n = stripSeparators(n)
	return n, n != ""
}

// NumberPrefix normalises a deny-list entry ("+44 9", "+1-900") and
// checks it: an optional '+', then digits, '*' and '#'.
func NumberPrefix(p string) (string, error) {
	n := stripSeparators(p)
	if !numberPrefix.MatchString(n) {
		return "", errorf("number prefix %q: want digits, '*' or '#', optionally after '+' (separators '-', '.', '(', ')' and spaces are ignored)", p)
	}
	return n, nil
}

// Denied returns the first of prefixes (normalised with NumberPrefix)
// that the number route dials starts with.
func Denied(route string, prefixes []string) (string, bool) {
	if len(prefixes) == 0 {
		return "", false
	}
	n, ok := Number(route)
	if !ok {
		return "", false
	}
	for _, p := range prefixes {
		if strings.HasPrefix(n, p) {
			return p, true
		}
	}
	return "", false
}

func stripSeparators(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '-', '.', '(', ')', ' ':
			return -1
		}
		return r
	}, s)
}
