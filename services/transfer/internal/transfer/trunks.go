package transfer

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/services/transfer/internal/request"
	"github.com/baton-voice/baton/services/transfer/internal/sipauth"
)

// Trunk is an SBC or carrier transfer sends requests to, recognised by
// the address a request goes to (its next hop): the REFERs and BYEs in
// the caller's dialog, and a new leg dialled through it.
type Trunk struct {
	Name string
	// Networks and Hosts match the next hop: an address within a
	// network, or a host name equal (case-insensitive) to one of Hosts.
	Networks []netip.Prefix
	Hosts    []string
	// Auth, when set, answers the trunk's digest challenges.
	Auth *sipauth.Credentials
	// ReferRefusalTTL is how long a REFER refused by this trunk (405,
	// 501, 603) is remembered: handoffs whose destination has a
	// refer_fallback then skip the REFER. 0 remembers nothing.
	ReferRefusalTTL time.Duration
}

// Destination is transfer's own settings of a router destination, by
// name.
type Destination struct {
	// ReferFallback is what a refused REFER falls back to:
	// FallbackInvite, FallbackBye or "" (none: the REFER's failure is the
	// outcome and the router's fallback list applies).
	ReferFallback string
	// Auth, when set, answers the challenges of the new leg's INVITE to
	// this destination (ahead of the trunk's).
	Auth *sipauth.Credentials
	// ReleaseBridge, ReleaseReplaces, has a warm transfer to this
	// destination leave the media path ReleaseDelay after BRIDGED (a
	// REFER with Replaces to the caller's side, release.go); "" keeps
	// the bridge.
	ReleaseBridge string
	ReleaseDelay  time.Duration
}

// ReleaseBridge values.
const ReleaseReplaces = "replaces"

// ReferFallback values.
const (
	FallbackInvite = "invite"
	FallbackBye    = "bye"
)

// matches reports whether host (an IP address or a name) is this trunk.
func (t *Trunk) matches(host string) bool {
	host = strings.Trim(host, "[]")
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		for _, n := range t.Networks {
			if n.Contains(a) {
				return true
			}
		}
		return false
	}
	for _, h := range t.Hosts {
		if strings.EqualFold(h, host) {
			return true
		}
	}
	return false
}

// trunkOf is the trunk a request goes to, or nil.
func (d *deps) trunkOf(req *sip.Request) *Trunk {
	host := nextHopHost(req)
	for i := range d.trunks {
		if d.trunks[i].matches(host) {
			return &d.trunks[i]
		}
	}
	return nil
}

// nextHopHost is the host a request is sent to: its destination when
// set, else the first Route, else the Request-URI.
func nextHopHost(req *sip.Request) string {
	if dst := req.Destination(); dst != "" {
		if h, _, err := net.SplitHostPort(dst); err == nil {
			return h
		}
		return dst
	}
	if r := req.Route(); r != nil {
		return r.Address.Host
	}
	return req.Recipient.Host
}

// destination is transfer's settings for the command's destination.
func (e *execution) destination() Destination {
	return e.destinations[strings.ToLower(e.cmd.GetDestination())]
}

// credentialsFor are the credentials that answer a challenge to req: the
// destination's for a new leg (newLeg), then the trunk's the request goes
// to.
func (e *execution) credentialsFor(req *sip.Request, newLeg bool) (sipauth.Credentials, bool) {
	if newLeg {
		if a := e.destination().Auth; a != nil {
			return *a, true
		}
	}
	if t := e.trunkOf(req); t != nil && t.Auth != nil {
		return *t.Auth, true
	}
	return sipauth.Credentials{}, false
}

// do sends req in a client transaction and answers the digest challenges
// of the trunk it goes to: a 401/407 is answered (Authorization or
// Proxy-Authorization) and the request sent again with the next CSeq,
// once, and once more for a stale nonce (sipauth.Session). req keeps the
// CSeq of the last one sent: what follows in the dialog counts from it.
func (e *execution) do(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	res, err := e.sip.Do(ctx, req)
	var s *sipauth.Session
	for err == nil && sipauth.Challenged(res) {
		if s == nil {
			creds, ok := e.credentialsFor(req, false)
			if !ok {
				e.log.WarnContext(ctx, "request challenged: no credentials for its trunk", "method", req.Method.String(),
					"sip_code", res.StatusCode, "next_hop", nextHopHost(req))
				return res, nil
			}
			s = sipauth.NewSession(creds)
		}
		if !e.answerChallenge(ctx, s, req, res) {
			return res, nil
		}
		res, err = e.sip.Do(ctx, req)
	}
	return res, err
}

// answerChallenge puts the answer to res's challenge in req and readies
// it to be sent again (CSeq + 1, a new Via). It returns false when the
// challenge is not answered (logged, counted).
func (e *execution) answerChallenge(ctx context.Context, s *sipauth.Session, req *sip.Request, res *sip.Response) bool {
	method := req.Method.String()
	cseq := req.CSeq().SeqNo + 1
	if cseq >= 1<<31 {
		e.log.WarnContext(ctx, "challenge not answered: cseq overflows", "method", method)
		return false
	}
	if req.CallID() != nil && req.CallID().Value() == e.cmd.GetDialog().GetCallId() && !e.cseqLeft(cseq) {
		e.log.WarnContext(ctx, "challenge not answered: no CSeq left in the attempt's block", "method", method, "cseq", cseq)
		return false
	}
	a, err := s.Answer(req, res)
	if err != nil {
		result := AuthUnsupported
		if errors.Is(err, sipauth.ErrRejected) {
			result = AuthRejected
		}
		e.metrics.auth(method, result)
		e.log.WarnContext(ctx, "digest challenge not answered", "method", method, "sip_code", res.StatusCode, "err", err)
		return false
	}
	result := AuthAnswered
	if a.Stale {
		result = AuthStale
	}
	e.metrics.auth(method, result)
	e.log.InfoContext(ctx, "answering digest challenge", "method", method, "sip_code", res.StatusCode,
		"header", a.Header, "realm", a.Realm, "algorithm", a.Algorithm, "stale", a.Stale, "cseq", cseq)
	req.CSeq().SeqNo = cseq
	req.RemoveHeader("Via")
	return true
}

// Results of a digest challenge: the result label of
// baton_transfer_auth_challenges_total.
const (
	AuthAnswered    = "answered"
	AuthStale       = "stale_retried"
	AuthRejected    = "rejected"
	AuthUnsupported = "unsupported"
)

// cseqLeft reports whether a request in the caller's dialog may take
// cseq: it stays inside the attempt's block of request.CSeqsPerAttempt
// numbers with one left for the agent leg's BYE, so the router's next
// attempt in the dialog never follows a higher CSeq.
func (e *execution) cseqLeft(cseq uint32) bool {
	first, err := request.CSeq(e.cmd.GetDialog(), e.cmd.GetAttempt())
	if err != nil {
		return false
	}
	return cseq <= first+request.CSeqsPerAttempt-2
}
