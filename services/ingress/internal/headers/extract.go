// Package headers turns the headers of an inbound SIP request into what a
// CallStarted carries: every header in received order, one entry per value,
// with long lines flagged, and the custom X- headers as call variables.
package headers

import (
	"errors"
	"regexp"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
)

// ErrVariableName is why a custom header with a bad name was not made a variable.
var ErrVariableName = errors.New("custom header name does not match ^X-[A-Za-z0-9\\-_]+$")

// Result is what Extract found.
type Result struct {
	// Headers are all headers in received order, compact names expanded.
	Headers []*batonv1.SipHeader
	// Oversized counts header lines longer than sipx.MaxHeaderLine.
	Oversized uint32
	// Variables are the X- headers, prefix stripped, first value wins.
	Variables map[string]string
	// Skipped are the X- headers that did not become variables.
	Skipped []Skipped
}

// Skipped is a custom header left out of the variables, and why.
type Skipped struct {
	Name string
	Err  error
}

// customName is sipx's rule for custom header names, with the prefix in any
// case: inbound headers arrive as the carrier spelled them.
var customName = regexp.MustCompile(`^[Xx]-[A-Za-z0-9\-_]+$`)

// Extract reads hs, the headers of a parsed request in received order.
func Extract(hs []sip.Header) Result {
	r := Result{
		Headers:   make([]*batonv1.SipHeader, 0, len(hs)),
		Variables: map[string]string{},
	}
	// seen holds lowercase variable names: SIP header names are
	// case-insensitive, so X-Foo and x-foo are one variable.
	seen := map[string]bool{}
	for _, h := range hs {
		name := LongName(h.Name())
		value := h.Value()
		oversized := sipx.LineLen(name, value) > sipx.MaxHeaderLine
		if oversized {
			r.Oversized++
		}
		r.Headers = append(r.Headers, &batonv1.SipHeader{Name: name, Value: value, Oversized: oversized})

		if !sipx.IsCustom(name) {
			continue
		}
		if !customName.MatchString(name) {
			r.Skipped = append(r.Skipped, Skipped{Name: name, Err: ErrVariableName})
			continue
		}
		if err := sipx.ValidateValue(value); err != nil {
			r.Skipped = append(r.Skipped, Skipped{Name: name, Err: err})
			continue
		}
		key, _ := sipx.StripPrefix(name)
		if seen[strings.ToLower(key)] {
			continue
		}
		seen[strings.ToLower(key)] = true
		r.Variables[key] = value
	}
	return r
}

// LongName expands the compact form of a header name (RFC 3261 7.3.3 and
// the extensions that define one); other names are returned unchanged.
// sipgo already names the headers it parses (From, Via, ...) in long form;
// the rest keep the name as received.
func LongName(name string) string {
	if len(name) != 1 {
		return name
	}
	switch name[0] | 0x20 {
	case 'a':
		return "Accept-Contact"
	case 'b':
		return "Referred-By"
	case 'c':
		return "Content-Type"
	case 'e':
		return "Content-Encoding"
	case 'f':
		return "From"
	case 'i':
		return "Call-ID"
	case 'j':
		return "Reject-Contact"
	case 'k':
		return "Supported"
	case 'l':
		return "Content-Length"
	case 'm':
		return "Contact"
	case 'o':
		return "Event"
	case 'r':
		return "Refer-To"
	case 's':
		return "Subject"
	case 't':
		return "To"
	case 'u':
		return "Allow-Events"
	case 'v':
		return "Via"
	case 'x':
		return "Session-Expires"
	case 'y':
		return "Identity"
	}
	return name
}

// Value returns the first value of the header named name (long or
// compact form, any case), or "".
func Value(hs []sip.Header, name string) string {
	for _, h := range hs {
		if strings.EqualFold(LongName(h.Name()), name) {
			return h.Value()
		}
	}
	return ""
}
