// Package numbers derives caller and callee numbers from SIP URIs. Today a
// number is the URI's user part as received; normalisation to E.164 (and
// the choice of P-Asserted-Identity or Diversion as the source) replaces
// Normalize later without touching its callers.
package numbers

import "github.com/emiago/sipgo/sip"

// FromURI returns the number of u: normalised, and raw as in the URI.
func FromURI(u sip.Uri) (number, raw string) {
	raw = u.User
	return Normalize(raw), raw
}

// Normalize turns a raw user part into Baton's number form. It is the
// identity for now.
func Normalize(raw string) string { return raw }
