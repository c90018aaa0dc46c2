package whisper

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// hostLabels is a DNS host name in lower case: labels of letters, digits
// and inner hyphens, joined by dots.
var hostLabels = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)

// CheckHostPattern says whether p is a valid invite.whisper.allow_hosts
// entry: an exact host (a DNS name or an IP address) or "*." and a DNS
// name of at least two labels ("*.cdn.example.com" matches any host below
// cdn.example.com, not cdn.example.com itself). Ports are not part of a
// pattern: an allowed host is allowed on any port.
func CheckHostPattern(p string) error {
	if p != strings.ToLower(p) {
		return errors.New("want lower case")
	}
	if suffix, ok := strings.CutPrefix(p, "*."); ok {
		if !isDNSName(suffix) {
			return errors.New(`want "*." and a host name`)
		}
		if !strings.Contains(suffix, ".") {
			return fmt.Errorf("*.%s matches a whole top-level domain: name the domain", suffix)
		}
		return nil
	}
	if a, err := netip.ParseAddr(p); err == nil {
		if a.Zone() != "" {
			return errors.New("want an IP address without a zone")
		}
		return nil
	}
	if !isDNSName(p) {
		return errors.New(`want a host name, an IP address or "*." and a host name`)
	}
	return nil
}

// isDNSName is a host name whose last label is not all digits (so that
// "10.0.1" is not taken for a name).
func isDNSName(s string) bool {
	if !hostLabels.MatchString(s) {
		return false
	}
	last := s[strings.LastIndexByte(s, '.')+1:]
	return strings.Trim(last, "0123456789") != ""
}

// hostAllowlist matches URL hosts against allow_hosts patterns.
type hostAllowlist struct {
	exact map[string]bool
	// suffixes are the "*." patterns without their "*" (".example.com").
	suffixes []string
}

func newHostAllowlist(patterns []string) (hostAllowlist, error) {
	l := hostAllowlist{exact: make(map[string]bool)}
	var errs []error
	for i, p := range patterns {
		if err := CheckHostPattern(p); err != nil {
			errs = append(errs, fmt.Errorf("allow_hosts[%d] %q: %w", i, p, err))
			continue
		}
		if suffix, ok := strings.CutPrefix(p, "*"); ok {
			l.suffixes = append(l.suffixes, suffix)
			continue
		}
		if a, err := netip.ParseAddr(p); err == nil {
			p = a.Unmap().String() // the form url.Hostname gives for it
		}
		l.exact[p] = true
	}
	return l, errors.Join(errs...)
}

func (l hostAllowlist) empty() bool { return len(l.exact) == 0 && len(l.suffixes) == 0 }

// allows says whether a URL's host (url.URL.Hostname: no port, no
// brackets) is allowed.
func (l hostAllowlist) allows(host string) bool {
	host = strings.ToLower(host)
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return false
		}
		return l.exact[a.Unmap().String()]
	}
	if l.exact[host] {
		return true
	}
	for _, s := range l.suffixes {
		if len(host) > len(s) && strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}
