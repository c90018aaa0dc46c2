// Package numbers derives a call's caller and callee numbers from the
// headers a trunk names (From, To, Request-URI, P-Asserted-Identity,
// Remote-Party-ID, Diversion) and normalises them to E.164 with
// github.com/nyaruka/phonenumbers. The raw user part is always kept; when
// a value is not a phone number (an extension, a name) the number is the
// raw value unchanged. A user part that holds control characters once
// percent-decoded (C0, DEL, C1) or is not UTF-8 is never a number: Pick
// refuses it, as if the source had none, and says so in Number.Refused.
package numbers

import (
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/emiago/sipgo/sip"
	"github.com/nyaruka/phonenumbers"
)

// Source names where a number is read from.
type Source string

// The sources a trunk may list.
const (
	From       Source = "from"
	To         Source = "to"
	RequestURI Source = "request_uri"
	PAI        Source = "pai"       // P-Asserted-Identity
	RPID       Source = "rpid"      // Remote-Party-ID
	Diversion  Source = "diversion" // the oldest Diversion entry: the number first dialled
)

// Sources lists every valid source.
var Sources = []Source{From, To, RequestURI, PAI, RPID, Diversion}

// Valid reports whether s is a known source.
func (s Source) Valid() bool {
	for _, v := range Sources {
		if s == v {
			return true
		}
	}
	return false
}

// Number is a number with the raw value it came from.
type Number struct {
	E164   string // normalised; the raw value when it is not a phone number
	Raw    string // the URI user part as received (percent-decoded)
	Source Source
	// Refused are the sources, in order, whose user part Pick refused
	// because it held control characters or was not UTF-8 (see Clean);
	// their values are never returned.
	Refused []Source
}

// Pick returns the number of the first source in order that yields a
// non-empty user part that Clean accepts; a source whose user part it
// refuses counts as one without a user part and is listed in Refused.
func Pick(req *sip.Request, sources []Source, region string) Number {
	var refused []Source
	for _, src := range sources {
		raw := userOf(req, src)
		if raw == "" {
			continue
		}
		if !Clean(raw) {
			refused = append(refused, src)
			continue
		}
		return Number{E164: Normalize(raw, region), Raw: raw, Source: src, Refused: refused}
	}
	return Number{Refused: refused}
}

// Clean reports whether a decoded user part may be a number: valid UTF-8
// without control characters (C0 including NUL, TAB, CR and LF, DEL, and
// C1), which would reach every terminal and log that shows the number, nor
// format characters (Cf: bidirectional overrides such as U+202E, which
// make a terminal show text in another order than it is, and zero-width
// characters), which no number has.
func Clean(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return false
		}
	}
	return true
}

func userOf(req *sip.Request, src Source) string {
	switch src {
	case From:
		if h := req.From(); h != nil {
			return User(h.Address.String())
		}
	case To:
		if h := req.To(); h != nil {
			return User(h.Address.String())
		}
	case RequestURI:
		return User(req.Recipient.String())
	case PAI, RPID:
		name := "P-Asserted-Identity"
		if src == RPID {
			name = "Remote-Party-ID"
		}
		for _, h := range req.GetHeaders(name) {
			for _, v := range splitComma(h.Value()) {
				if u := User(AddressURI(v)); u != "" {
					return u
				}
			}
		}
	case Diversion:
		var last string
		for _, h := range req.GetHeaders("Diversion") {
			for _, v := range splitComma(h.Value()) {
				if u := User(AddressURI(v)); u != "" {
					last = u
				}
			}
		}
		return last
	}
	return ""
}

// AddressURI returns the URI of a name-addr or addr-spec header value.
func AddressURI(v string) string {
	if lt := strings.IndexByte(v, '<'); lt >= 0 {
		if gt := strings.IndexByte(v[lt:], '>'); gt >= 0 {
			return v[lt+1 : lt+gt]
		}
		return ""
	}
	u, _, _ := strings.Cut(strings.TrimSpace(v), ";")
	return u
}

// User returns the user part of a sip:, sips: or tel: URI, percent-decoded,
// without user parameters (";npdi", ";isub=..."); "" for other schemes.
// Decoding may yield control characters: check the result with Clean.
func User(uri string) string {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(uri), ":")
	if !ok {
		return ""
	}
	var user string
	switch strings.ToLower(scheme) {
	case "sip", "sips":
		at := strings.IndexByte(rest, '@')
		if at < 0 {
			return ""
		}
		user = rest[:at]
		user, _, _ = strings.Cut(user, ":") // password
	case "tel":
		user = rest
	default:
		return ""
	}
	user, _, _ = strings.Cut(user, ";")
	if dec, err := url.PathUnescape(user); err == nil {
		user = dec
	}
	return user
}

// Normalize returns raw in E.164 when it is a phone number: "+" numbers
// are parsed as international, others as national numbers of region (an
// ISO 3166 code; empty means only "+" numbers are normalised). Values that
// are not possible numbers, such as extensions, come back unchanged.
func Normalize(raw, region string) string {
	s := strings.TrimSpace(raw)
	if s == "" || len(s) > 64 {
		return raw
	}
	international := strings.HasPrefix(s, "+")
	if !international && region == "" {
		return raw
	}
	if !international {
		region = strings.ToUpper(region)
	} else {
		region = "ZZ"
	}
	n, err := phonenumbers.Parse(s, region)
	if err != nil {
		return raw
	}
	if !international && !phonenumbers.IsPossibleNumber(n) {
		return raw
	}
	return phonenumbers.Format(n, phonenumbers.E164)
}

// ValidRegion reports whether region is a region phonenumbers knows.
func ValidRegion(region string) error {
	if region == "" || phonenumbers.GetSupportedRegions()[strings.ToUpper(region)] {
		return nil
	}
	return fmt.Errorf("unknown region %q, want an ISO 3166-1 alpha-2 code such as US or DE", region)
}

func splitComma(v string) []string {
	var out []string
	in, depth, start := false, 0, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"':
			in = !in
		case !in && c == '<':
			depth++
		case !in && c == '>':
			depth--
		case !in && depth == 0 && c == ',':
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}
