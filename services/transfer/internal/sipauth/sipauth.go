// Package sipauth answers SIP digest challenges (RFC 3261 22, RFC 8760,
// RFC 7616) for the requests transfer sends: a 401 with WWW-Authenticate
// or a 407 with Proxy-Authenticate is answered once with Authorization or
// Proxy-Authorization, and once more only when the new challenge says
// the nonce was stale. The digest itself (MD5, SHA-256, SHA-512-256,
// qop auth and auth-int) is github.com/icholy/digest's, the library
// sipgo uses; this package picks the challenge and keeps the policy.
package sipauth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// Credentials are one trunk's or destination's digest credentials.
type Credentials struct {
	Username string
	// Password never leaves this process: it is neither logged
	// (LogValue, String) nor put in an event.
	Password string
	// Realm, when set, is the only realm these credentials answer; a
	// challenge for another realm is not answered.
	Realm string
}

// String names the credentials without their password.
func (c Credentials) String() string {
	if c.Realm == "" {
		return c.Username
	}
	return c.Username + "@" + c.Realm
}

// LogValue keeps the password out of logs.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("username", c.Username), slog.String("realm", c.Realm))
}

// GoString keeps the password out of %#v.
func (c Credentials) GoString() string { return "sipauth.Credentials{" + c.String() + "}" }

// Errors of Answer.
var (
	// ErrNoChallenge: the response is not a 401/407 with a digest
	// challenge.
	ErrNoChallenge = errors.New("no digest challenge")
	// ErrUnsupported: no challenge has an algorithm and qop this package
	// can answer, or none is for the credentials' realm.
	ErrUnsupported = errors.New("no supported digest challenge")
	// ErrRejected: challenged again after an answer, with a nonce that
	// was not stale: the credentials were refused.
	ErrRejected = errors.New("credentials rejected")
)

// Challenged reports whether res asks for credentials: a 401 or a 407.
func Challenged(res *sip.Response) bool {
	return res != nil && (res.StatusCode == sip.StatusUnauthorized || res.StatusCode == sip.StatusProxyAuthRequired)
}

// Session answers the challenges of one request and its resends.
type Session struct {
	creds Credentials
	// answered counts the challenges answered; stale is set once a
	// stale nonce was retried.
	answered int
	stale    bool
}

// NewSession starts answering with creds.
func NewSession(creds Credentials) *Session { return &Session{creds: creds} }

// Answer adds to req the answer to res's challenge: Authorization for a
// 401, Proxy-Authorization for a 407, replacing an earlier one. The
// caller resends req in a new transaction (new Via branch, CSeq + 1). The
// first challenge is answered; a later one only when its nonce is stale
// (once), else ErrRejected.
func (s *Session) Answer(req *sip.Request, res *sip.Response) (Answered, error) {
	var chName, authName string
	switch res.StatusCode {
	case sip.StatusUnauthorized:
		chName, authName = "WWW-Authenticate", "Authorization"
	case sip.StatusProxyAuthRequired:
		chName, authName = "Proxy-Authenticate", "Proxy-Authorization"
	default:
		return Answered{}, fmt.Errorf("%w: status %d", ErrNoChallenge, res.StatusCode)
	}
	hdrs := res.GetHeaders(chName)
	if len(hdrs) == 0 {
		return Answered{}, fmt.Errorf("%w: %d without %s", ErrNoChallenge, res.StatusCode, chName)
	}
	chal, err := pick(hdrs, s.creds.Realm)
	if err != nil {
		return Answered{}, err
	}
	if s.answered > 0 {
		if !chal.Stale || s.stale {
			return Answered{}, fmt.Errorf("%w: challenged again for realm %q", ErrRejected, chal.Realm)
		}
		s.stale = true
	}
	body := req.Body()
	cred, err := digest.Digest(chal, digest.Options{
		Method:   req.Method.String(),
		URI:      req.Recipient.String(),
		Username: s.creds.Username,
		Password: s.creds.Password,
		GetBody:  func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
	})
	if err != nil {
		return Answered{}, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	s.answered++
	req.RemoveHeader(authName)
	req.AppendHeader(sip.NewHeader(authName, cred.String()))
	return Answered{Header: authName, Realm: chal.Realm, Algorithm: algorithmName(chal.Algorithm), Stale: s.stale}, nil
}

// Answered says what Answer sent, for logs and metrics (no secret).
type Answered struct {
	Header    string
	Realm     string
	Algorithm string
	// Stale: this answer retries a stale nonce.
	Stale bool
}

// rank orders the algorithms this package answers: RFC 8760 2.4 has the
// client take the strongest challenge it supports when a server offers
// several (SHA-512-256, SHA-256, MD5, in that order of preference).
func rank(alg string) int {
	switch algorithmName(alg) {
	case "SHA-512-256":
		return 3
	case "SHA-256":
		return 2
	case "MD5":
		return 1
	}
	return 0 // -sess variants, SHA-512 in SIP, unknown: not answered
}

func algorithmName(alg string) string {
	a := strings.ToUpper(strings.TrimSpace(alg))
	if a == "" {
		return "MD5"
	}
	return a
}

// pick parses every challenge header and returns the strongest one this
// package can answer, for realm when it is set.
func pick(hdrs []sip.Header, realm string) (*digest.Challenge, error) {
	var best *digest.Challenge
	var seen []string
	for _, h := range hdrs {
		chal, err := digest.ParseChallenge(strings.TrimSpace(h.Value()))
		if err != nil {
			seen = append(seen, "unparsable")
			continue
		}
		chal.Algorithm = algorithmName(chal.Algorithm)
		for i, q := range chal.QOP {
			chal.QOP[i] = strings.ToLower(strings.TrimSpace(q))
		}
		seen = append(seen, chal.Algorithm+" realm "+chal.Realm)
		if realm != "" && chal.Realm != realm {
			continue
		}
		if rank(chal.Algorithm) == 0 || !digest.CanDigest(chal) || chal.Nonce == "" {
			continue
		}
		if best == nil || rank(chal.Algorithm) > rank(best.Algorithm) {
			best = chal
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w: offered [%s]", ErrUnsupported, strings.Join(seen, ", "))
	}
	return best, nil
}
