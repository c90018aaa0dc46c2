package handoff

import (
	"net/url"
	"strings"
)

// RefusedWhisperNotAllowed refuses a handoff whose whisper_url the
// destination does not allow (not an INVITE destination, or a host not in
// its whisper_hosts).
const RefusedWhisperNotAllowed = "whisper_not_allowed"

// WhisperHostAllowed reports whether u is an http(s) URL whose host one
// of patterns admits: the host itself, or *.domain for any host below
// domain (not domain itself). Hosts compare without case.
func WhisperHostAllowed(patterns []string, u string) bool {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.User != nil {
		return false
	}
	host := strings.ToLower(p.Hostname())
	if host == "" {
		return false
	}
	for _, pat := range patterns {
		pat = strings.ToLower(pat)
		if suffix, ok := strings.CutPrefix(pat, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if host == pat {
			return true
		}
	}
	return false
}
