// Package request builds the in-dialog requests transfer sends on Baton's
// behalf (REFER, BYE) from the dialog snapshot a command carries. It only
// builds: nothing here touches the network.
package request

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
)

// MaxForwards is the Max-Forwards of every request (RFC 3261 8.1.1.6).
const MaxForwards = sipx.MaxForwards

// ErrDialog means the snapshot cannot produce a valid request.
var ErrDialog = sipx.ErrDialog

// CSeqsPerAttempt is the block of CSeq numbers each attempt of a handoff
// owns in the caller's dialog: its request, the same request sent again
// with the next number (a REFER answered 481 early, at most 10 times),
// and the request that ends the attempt (the agent leg's BYE after a
// REFER, the caller's BYE after a warm transfer's re-INVITE).
const CSeqsPerAttempt = 16

// CSeq is the CSeq number of a command's request: the dialog's next local
// CSeq for the first attempt, CSeqsPerAttempt more for every later one,
// so a fallback's request is above every number an earlier attempt used
// (a far end refuses a CSeq lower than one it has seen, RFC 3261 12.2.2).
func CSeq(d *batonv1.Dialog, attempt uint32) (uint32, error) {
	if attempt < 1 {
		attempt = 1
	}
	n := uint64(d.GetNextLocalCseq()) + (uint64(attempt)-1)*CSeqsPerAttempt
	if n >= 1<<31 { // RFC 3261 8.1.1.5: less than 2**31
		return 0, fmt.Errorf("%w: cseq %d + attempt %d overflows", ErrDialog, d.GetNextLocalCseq(), attempt)
	}
	return uint32(n), nil
}

// InDialog builds method inside the dialog d (RFC 3261 12.2.1.1):
// Request-URI = remote target, From = local URI with the local tag, To =
// remote URI with the remote tag, the dialog's Call-ID, CSeq per CSeq,
// Route = the route set in order (loose routing), Contact = the ingress
// Contact, Max-Forwards 70. The transport is the one the call came in
// over (d.Transport) unless the URI the request goes to (the first route,
// else the remote target) names one; the Via is added when it is sent.
func InDialog(method sip.RequestMethod, d *batonv1.Dialog, attempt uint32) (*sip.Request, error) {
	cseq, err := CSeq(d, attempt)
	if err != nil {
		return nil, err
	}
	return InDialogCSeq(method, d, cseq)
}

// InDialogCSeq is InDialog with an explicit CSeq number, for the requests
// that follow a command's first one (the BYE after a REFER, the BYE after
// a re-INVITE). It is sipx.InDialog, the rule ingress's BYE shares.
func InDialogCSeq(method sip.RequestMethod, d *batonv1.Dialog, cseq uint32) (*sip.Request, error) {
	return sipx.InDialog(method, d, cseq)
}

// Where a REFER carries the handoff's headers (HandoffCommand.context_in).
const (
	ContextReferTo = "refer_to" // in the Refer-To URI (the default)
	ContextHeaders = "headers"  // as the REFER's own headers
	ContextBoth    = "both"
)

// Refer builds the REFER of a blind transfer: InDialog plus Refer-To
// (route, with the headers embedded as sipx.ReferTo does unless context
// says headers only) and Referred-By (the local URI); with context headers
// or both, the headers are also the REFER's own. Headers are validated by
// sipx; an invalid one is an error and nothing is built.
func Refer(d *batonv1.Dialog, attempt uint32, route string, headers []*batonv1.SipHeader, context string) (*sip.Request, error) {
	hs := make([]sipx.Header, 0, len(headers))
	for _, h := range headers {
		if err := sipx.ValidateCustom(h.GetName(), h.GetValue()); err != nil {
			return nil, err
		}
		hs = append(hs, sipx.Header{Name: h.GetName(), Value: h.GetValue()})
	}
	inURI := hs
	switch context {
	case "", ContextReferTo, ContextBoth:
	case ContextHeaders:
		inURI = nil
	default:
		return nil, fmt.Errorf("context_in %q: want %s, %s or %s", context, ContextReferTo, ContextHeaders, ContextBoth)
	}
	referTo, err := sipx.ReferTo(route, inURI)
	if err != nil {
		return nil, err
	}
	req, err := InDialog(sip.REFER, d, attempt)
	if err != nil {
		return nil, err
	}
	req.AppendHeader(sip.NewHeader("Refer-To", referTo))
	req.AppendHeader(sip.NewHeader("Referred-By", "<"+req.From().Address.String()+">"))
	if context == ContextHeaders || context == ContextBoth {
		for _, h := range hs {
			req.AppendHeader(sip.NewHeader(h.Name, h.Value))
		}
	}
	req.SetBody(nil)
	return req, nil
}

// Bye builds the BYE that ends the agent leg, carrying the command's
// custom headers; each is validated with sipx.ValidateCustom first.
func Bye(d *batonv1.Dialog, attempt uint32, headers []*batonv1.SipHeader) (*sip.Request, error) {
	for _, h := range headers {
		if err := sipx.ValidateCustom(h.GetName(), h.GetValue()); err != nil {
			return nil, err
		}
	}
	req, err := InDialog(sip.BYE, d, attempt)
	if err != nil {
		return nil, err
	}
	for _, h := range headers {
		req.AppendHeader(sip.NewHeader(h.GetName(), h.GetValue()))
	}
	req.SetBody(nil)
	return req, nil
}

// parseURI is sipx.ParseURI.
func parseURI(field, v string) (sip.Uri, error) { return sipx.ParseURI(field, v) }

// Caller-id policies of a new leg's From.
const (
	// CallerIDCaller presents the caller's number (the From user of the
	// caller's dialog): the destination sees who is calling.
	CallerIDCaller = "caller"
	// CallerIDCallee presents the number the caller dialled.
	CallerIDCallee = "callee"
	// CallerIDFixed presents a configured number.
	CallerIDFixed = "fixed"
)

// CallerID says what the From of a new leg shows.
type CallerID struct {
	Policy      string
	Number      string // for CallerIDFixed
	DisplayName string
	// Host is the From host: Baton's own address.
	Host string
}

// LegOptions says how a new leg reaches its route.
type LegOptions struct {
	// TLS sends the leg's signalling over TLS (encryption tls_srtp); a
	// sips: route needs it.
	TLS bool
	// TrunkHost (host or host:port) is where tel: and extension routes go:
	// tel:+15551234567 becomes sip:+15551234567@TrunkHost;user=phone and
	// 1234 becomes sip:1234@TrunkHost. Empty refuses such routes.
	TrunkHost string
}

// NewLeg builds the INVITE of a warm transfer's new leg to route (a sip:
// or sips: URI, a tel: URI or an extension through opts.TrunkHost), with
// the command's custom headers (validated) and the SDP offer. Call-ID,
// CSeq and Via are added when it is sent; the transport is TLS when
// opts.TLS, else the route's transport parameter (udp or tcp), else UDP.
func NewLeg(route string, opts LegOptions, d *batonv1.Dialog, cid CallerID, headers []*batonv1.SipHeader, offer string) (*sip.Request, error) {
	target, err := Target(route, opts)
	if err != nil {
		return nil, err
	}
	for _, h := range headers {
		if err := sipx.ValidateCustom(h.GetName(), h.GetValue()); err != nil {
			return nil, err
		}
	}
	user, err := callerUser(d, cid)
	if err != nil {
		return nil, err
	}
	req := sip.NewRequest(sip.INVITE, target)
	transport, err := sipx.URITransport(target, "UDP")
	if err != nil {
		return nil, err
	}
	if opts.TLS {
		transport = "TLS"
	}
	req.SetTransport(transport)
	fromScheme := "sip"
	if target.IsEncrypted() {
		fromScheme = "sips"
	}
	from := &sip.FromHeader{DisplayName: cid.DisplayName, Address: sip.Uri{Scheme: fromScheme, User: user, Host: cid.Host},
		Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(16))
	to := &sip.ToHeader{Address: sip.Uri{Scheme: target.Scheme, User: target.User, Host: target.Host, Port: target.Port},
		Params: sip.NewParams()}
	if v, ok := target.UriParams.Get("user"); ok {
		to.Address.UriParams = sip.NewParams()
		to.Address.UriParams.Add("user", v)
	}
	maxFwd := sip.MaxForwardsHeader(MaxForwards)
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&maxFwd)
	for _, h := range headers {
		req.AppendHeader(sip.NewHeader(h.GetName(), h.GetValue()))
	}
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(offer))
	return req, nil
}

// WithSDP adds an SDP body to an in-dialog request (the re-INVITE).
func WithSDP(req *sip.Request, body string) *sip.Request {
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(body))
	return req
}

// Target is the Request-URI of a new leg to route. sip: and sips: routes
// are kept as configured (a sips: route needs opts.TLS; a transport=
// parameter must match the leg's transport); tel: routes and extensions go
// to opts.TrunkHost, the number or extension unchanged (DESIGN: never
// rewrite a number into something the carrier rejects).
func Target(route string, opts LegOptions) (sip.Uri, error) {
	r := strings.TrimSpace(route)
	scheme, rest, ok := strings.Cut(r, ":")
	switch s := strings.ToLower(scheme); {
	case r == "":
		return sip.Uri{}, fmt.Errorf("%w: empty route", ErrRoute)
	case s == "tel" && ok:
		if opts.TrunkHost == "" {
			return sip.Uri{}, fmt.Errorf("%w: route %q is a tel: URI: set invite.trunk_host to dial it through a trunk", ErrRoute, route)
		}
		if strings.Contains(rest, ";") {
			return sip.Uri{}, fmt.Errorf("%w: route %q: tel: parameters are not supported", ErrRoute, route)
		}
		if !telNumber.MatchString(rest) {
			return sip.Uri{}, fmt.Errorf("%w: route %q: not a tel: number", ErrRoute, route)
		}
		u, err := trunkURI(rest, opts.TrunkHost)
		if err != nil {
			return sip.Uri{}, err
		}
		u.UriParams = sip.NewParams()
		u.UriParams.Add("user", "phone")
		return u, nil
	case !ok || s != "sip" && s != "sips":
		if opts.TrunkHost == "" {
			return sip.Uri{}, fmt.Errorf("%w: route %q is an extension: set invite.trunk_host to dial it through a trunk", ErrRoute, route)
		}
		if !extension.MatchString(r) {
			return sip.Uri{}, fmt.Errorf("%w: route %q is neither a SIP URI nor an extension", ErrRoute, route)
		}
		return trunkURI(r, opts.TrunkHost)
	case s == "sips" && !opts.TLS:
		return sip.Uri{}, fmt.Errorf("%w: route %q needs TLS: encryption %q contradicts it", ErrRoute, route, "udp_rtp")
	case strings.ContainsAny(r, "?<>\" \t"):
		// URI headers in a Request-URI would be sent as headers by some
		// far ends (RFC 3261 19.1.5 forbids them there).
		return sip.Uri{}, fmt.Errorf("%w: route %q: a bare URI without headers, brackets, quotes or spaces", ErrRoute, route)
	}
	u, err := parseURI("route", r)
	if err != nil {
		return sip.Uri{}, fmt.Errorf("%w: %w", ErrRoute, err)
	}
	if u.Headers != nil && u.Headers.Length() > 0 {
		return sip.Uri{}, fmt.Errorf("%w: route %q: URI headers are not allowed", ErrRoute, route)
	}
	t, ok := u.UriParams.Get("transport")
	t = strings.ToLower(t)
	switch {
	case !ok:
	case opts.TLS && t != "tls":
		return sip.Uri{}, fmt.Errorf("%w: route %q: transport %s, but encryption tls_srtp sends this leg over TLS", ErrRoute, route, t)
	case !opts.TLS && t != "udp" && t != "tcp":
		return sip.Uri{}, fmt.Errorf("%w: route %q: transport %s: want udp or tcp (or encryption tls_srtp for tls)", ErrRoute, route, t)
	}
	return u, nil
}

var (
	// telNumber is a global or local number with RFC 3966 visual separators.
	telNumber = regexp.MustCompile(`^\+?[0-9*#A-Fa-f][0-9*#A-Fa-f().-]*$`)
	// extension is what custom telephony dials: digits, letters, * and #.
	extension = regexp.MustCompile(`^[0-9A-Za-z*#+][0-9A-Za-z*#+._-]*$`)
)

// trunkURI is sip:user@trunk (sips: over TLS is not implied: the trunk's
// URI stays sip:, the transport says TLS).
func trunkURI(user, trunk string) (sip.Uri, error) {
	host, portStr, err := net.SplitHostPort(trunk)
	if err != nil {
		host, portStr = trunk, ""
	}
	// '#' is not allowed unescaped in a SIP user part (RFC 3261 25.1).
	u := sip.Uri{Scheme: "sip", User: strings.ReplaceAll(user, "#", "%23"), Host: host}
	if portStr != "" {
		p, err := strconv.Atoi(portStr)
		if err != nil || p < 1 || p > 65535 {
			return sip.Uri{}, fmt.Errorf("%w: trunk %q: bad port", ErrRoute, trunk)
		}
		u.Port = p
	}
	return u, nil
}

// ErrRoute means a destination route cannot be dialled.
var ErrRoute = errors.New("route not supported")

func callerUser(d *batonv1.Dialog, cid CallerID) (string, error) {
	var v string
	switch cid.Policy {
	case CallerIDFixed:
		v = cid.Number
	case CallerIDCallee:
		u, err := parseURI("local_uri", d.GetLocalUri())
		if err != nil {
			return "", err
		}
		v = u.User
	default:
		u, err := parseURI("remote_uri", d.GetRemoteUri())
		if err != nil {
			return "", err
		}
		v = u.User
	}
	if v == "" {
		return "anonymous", nil
	}
	if err := sipx.ValidateValue(v); err != nil || strings.ContainsAny(v, "<>@;:\" ") {
		return "", fmt.Errorf("%w: caller id %q", ErrDialog, v)
	}
	return v, nil
}
