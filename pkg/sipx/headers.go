// Package sipx holds SIP rules Baton applies on top of sipgo: which custom
// header names and values are allowed, how X- headers become call
// variables, how headers ride inside a Refer-To URI, and how a
// message/sipfrag body reads.
package sipx

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// MaxHeaderLine is the longest header line (name, ": ", value) Baton sends
// without flagging it; many middleboxes truncate beyond it.
const MaxHeaderLine = 1024

// Sentinel errors for header validation.
var (
	ErrHeaderName  = errors.New("invalid custom header name")
	ErrHeaderValue = errors.New("invalid header value")
	ErrHeaderLine  = errors.New("header line too long")
	// ErrReferTarget means a Refer-To target is not a bare sip: or sips:
	// URI (wrong scheme, URI headers of its own, brackets, spaces or
	// control characters).
	ErrReferTarget = errors.New("invalid refer-to target")
)

var customName = regexp.MustCompile(`^X-[A-Za-z0-9\-_]+$`)

// IsCustom reports whether name is a custom X- header (any case).
func IsCustom(name string) bool {
	return len(name) > 2 && (name[0] == 'X' || name[0] == 'x') && name[1] == '-'
}

// StripPrefix turns X-Customer-Id into Customer-Id; ok is false for names
// that are not X- headers.
func StripPrefix(name string) (string, bool) {
	if !IsCustom(name) {
		return "", false
	}
	return name[2:], true
}

// ValidateCustom checks a custom header Baton is about to send: the name
// matches ^X-[A-Za-z0-9\-_]+$, the value holds no CR, LF or NUL (which
// would let it inject a header), and the line fits MaxHeaderLine.
func ValidateCustom(name, value string) error {
	if !customName.MatchString(name) {
		return fmt.Errorf("%w: %q (want X- followed by letters, digits, '-' or '_')", ErrHeaderName, name)
	}
	if err := ValidateValue(value); err != nil {
		return fmt.Errorf("header %s: %w", name, err)
	}
	if n := LineLen(name, value); n > MaxHeaderLine {
		return fmt.Errorf("header %s: %w: %d bytes, limit %d", name, ErrHeaderLine, n, MaxHeaderLine)
	}
	return nil
}

// ValidateValue rejects values that contain CR, LF or NUL.
func ValidateValue(value string) error {
	if i := strings.IndexAny(value, "\r\n\x00"); i >= 0 {
		return fmt.Errorf("%w: control character %q at byte %d", ErrHeaderValue, value[i], i)
	}
	return nil
}

// HasControl reports whether s holds an ASCII control character (CR, LF,
// NUL, TAB, DEL and the rest).
func HasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// LineLen is the length of the header line "name: value".
func LineLen(name, value string) int { return len(name) + 2 + len(value) }

// Header is a name and a value.
type Header struct {
	Name  string
	Value string
}

// ReferTo builds a Refer-To value: target with headers embedded as escaped
// URI headers (RFC 3261 19.1.1), in angle brackets. The target must be a
// sip: or sips: URI without headers of its own.
func ReferTo(target string, headers []Header) (string, error) {
	scheme, _, _ := strings.Cut(target, ":")
	if s := strings.ToLower(scheme); s != "sip" && s != "sips" {
		return "", fmt.Errorf("%w: %q: scheme %q cannot carry headers, want sip or sips", ErrReferTarget, target, scheme)
	}
	if strings.ContainsAny(target, "?<> ") || HasControl(target) {
		return "", fmt.Errorf("%w: %q: target must be a bare URI without headers", ErrReferTarget, target)
	}
	var b strings.Builder
	b.WriteString("<")
	b.WriteString(target)
	for i, h := range headers {
		if err := ValidateCustom(h.Name, h.Value); err != nil {
			return "", fmt.Errorf("refer-to: %w", err)
		}
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(escapeHeader(h.Name))
		b.WriteByte('=')
		b.WriteString(escapeHeader(h.Value))
	}
	b.WriteString(">")
	return b.String(), nil
}

// escapeHeader escapes a URI header name or value: RFC 3261 hname/hvalue
// allow unreserved characters and a few marks; everything else is %XX.
func escapeHeader(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) || strings.IndexByte("[]/?:+$", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("-_.!~*'()", c) >= 0
}

// ReferToHeaders returns the headers embedded in a Refer-To value, unescaped.
func ReferToHeaders(referTo string) ([]Header, error) {
	v := strings.TrimSpace(referTo)
	v = strings.TrimPrefix(v, "<")
	if i := strings.IndexByte(v, '>'); i >= 0 {
		v = v[:i]
	}
	_, query, ok := strings.Cut(v, "?")
	if !ok {
		return nil, nil
	}
	var out []Header
	for _, pair := range strings.Split(query, "&") {
		n, val, _ := strings.Cut(pair, "=")
		name, err := url.PathUnescape(n)
		if err != nil {
			return nil, fmt.Errorf("refer-to header name %q: %w", n, err)
		}
		value, err := url.PathUnescape(val)
		if err != nil {
			return nil, fmt.Errorf("refer-to header %s value: %w", name, err)
		}
		out = append(out, Header{Name: name, Value: value})
	}
	return out, nil
}

// Sipfrag is the status line of a message/sipfrag body (RFC 3420).
type Sipfrag struct {
	Status int
	Reason string
}

// ParseSipfrag reads the status line at the start of a sipfrag body, such
// as "SIP/2.0 200 OK". Bodies that do not start with a status line are errors.
func ParseSipfrag(body []byte) (Sipfrag, error) {
	line, _, _ := strings.Cut(string(body), "\n")
	line = strings.TrimRight(line, "\r")
	rest, ok := strings.CutPrefix(line, "SIP/2.0 ")
	if !ok {
		return Sipfrag{}, fmt.Errorf("sipfrag %q: not a SIP/2.0 status line", truncate(line, 64))
	}
	code, reason, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if err != nil || len(code) != 3 || status < 100 || status > 699 {
		return Sipfrag{}, fmt.Errorf("sipfrag %q: bad status code %q", truncate(line, 64), truncate(code, 16))
	}
	return Sipfrag{Status: status, Reason: reason}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
