package sipx

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/emiago/sipgo/sip"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// MaxForwards is the Max-Forwards of every request Baton sends (RFC 3261
// 8.1.1.6).
const MaxForwards = 70

// ErrDialog means a dialog snapshot cannot produce a valid request.
var ErrDialog = errors.New("unusable dialog snapshot")

// ErrNextHop means an in-dialog request would go where Baton does not send
// SIP: a host name (no name a caller wrote is ever looked up), or an
// address the caller's trunk or the service's peers do not allow.
var ErrNextHop = errors.New("next hop not allowed")

// tokenPattern is RFC 3261 token (a tag).
var tokenPattern = regexp.MustCompile("^[A-Za-z0-9.!%*_+`'~-]+$")

// InDialog builds method inside dialog d (RFC 3261 12.2.1.1), the one rule
// ingress's BYE and transfer's REFER, BYE and re-INVITE share:
// Request-URI = remote target, Route = the route set in order (loose
// routing only: a strict router is refused), From = local URI with the
// local tag, To = remote URI with the remote tag, the dialog's Call-ID,
// CSeq cseq, Max-Forwards 70, Contact = the local contact when there is
// one. It goes where ingress decided when the call started
// (Dialog.next_hop, DecidedHop) over next_hop_transport; without one (a
// snapshot from before it existed) to the first route or the remote
// target, over the transport the URI names or the call came in over. The
// caller adds Via (sipgo adds one when it sends) and anything else.
//
// Every field is checked before it is used: no CR, LF or NUL (ValidateValue),
// tags that are tokens, a Call-ID without spaces or control characters,
// sip or sips URIs with a host.
func InDialog(method sip.RequestMethod, d *batonv1.Dialog, cseq uint32) (*sip.Request, error) {
	if cseq >= 1<<31 { // RFC 3261 8.1.1.5: less than 2**31
		return nil, fmt.Errorf("%w: cseq %d overflows", ErrDialog, cseq)
	}
	if d == nil {
		return nil, fmt.Errorf("%w: no dialog", ErrDialog)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"call_id", d.GetCallId()}, {"local_tag", d.GetLocalTag()}, {"remote_tag", d.GetRemoteTag()},
		{"local_uri", d.GetLocalUri()}, {"remote_uri", d.GetRemoteUri()}, {"remote_target", d.GetRemoteTarget()},
	} {
		if strings.TrimSpace(f.v) == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: missing %s", ErrDialog, strings.Join(missing, ", "))
	}
	for _, f := range []struct{ name, v string }{
		{"call_id", d.GetCallId()}, {"local_tag", d.GetLocalTag()}, {"remote_tag", d.GetRemoteTag()},
		{"local_contact", d.GetLocalContact()},
	} {
		if err := ValidateValue(f.v); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrDialog, f.name, err)
		}
	}
	// A tag is a token (RFC 3261 25.1): nothing in it may add a parameter
	// to From or To. A Call-ID is taken as the far end wrote it (some are
	// not RFC words), but never with a space or a control character.
	if strings.ContainsFunc(d.GetCallId(), func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, fmt.Errorf("%w: call_id %q: spaces or control characters", ErrDialog, d.GetCallId())
	}
	for _, f := range []struct{ name, v string }{{"local_tag", d.GetLocalTag()}, {"remote_tag", d.GetRemoteTag()}} {
		if !tokenPattern.MatchString(f.v) {
			return nil, fmt.Errorf("%w: %s %q: not a token", ErrDialog, f.name, f.v)
		}
	}
	target, err := ParseURI("remote_target", d.GetRemoteTarget())
	if err != nil {
		return nil, err
	}
	local, err := ParseURI("local_uri", d.GetLocalUri())
	if err != nil {
		return nil, err
	}
	remote, err := ParseURI("remote_uri", d.GetRemoteUri())
	if err != nil {
		return nil, err
	}
	req := sip.NewRequest(method, target)
	for i, r := range d.GetRouteSet() {
		u, err := ParseURI(fmt.Sprintf("route_set[%d]", i), r)
		if err != nil {
			return nil, err
		}
		req.AppendHeader(&sip.RouteHeader{Address: u})
	}
	_, transport, err := SignalledHop(d)
	if err != nil && !errors.Is(err, ErrNextHop) {
		return nil, err // a dialog error; a name is fine when next_hop says where to go
	}
	if d.GetNextHop() != "" {
		hop, err := DecidedHop(d)
		if err != nil {
			return nil, err
		}
		req.SetDestination(hop.String())
		if transport, err = DialogTransport(d.GetNextHopTransport()); err != nil {
			return nil, err
		}
	}
	req.SetTransport(transport)
	from := &sip.FromHeader{Address: local, Params: sip.NewParams()}
	from.Params.Add("tag", d.GetLocalTag())
	to := &sip.ToHeader{Address: remote, Params: sip.NewParams()}
	to.Params.Add("tag", d.GetRemoteTag())
	callID := sip.CallIDHeader(d.GetCallId())
	maxFwd := sip.MaxForwardsHeader(MaxForwards)
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: method})
	req.AppendHeader(&maxFwd)
	if c := strings.TrimSpace(d.GetLocalContact()); c != "" {
		contact := &sip.ContactHeader{}
		if _, err := sip.ParseAddressValue(c, &contact.Address, &contact.Params); err != nil {
			return nil, fmt.Errorf("%w: local_contact %q: %w", ErrDialog, c, err)
		}
		req.AppendHeader(contact)
	}
	req.SetBody(nil)
	return req, nil
}

// SignalledHop is where RFC 3261 12.2.1.1 sends d's in-dialog requests:
// the first route (which must be a loose router, ;lr), else the remote
// target, at the port its URI names or its transport's default, with the
// transport the URI names (sips: is TLS) or the call came in over. Its
// host must be an IP literal: a name is ErrNextHop (with the transport,
// so a request with a decided next hop can still be built). A caller
// wrote every part of it; ingress checks it against the trunk once, when
// the call starts (Dialog.next_hop).
func SignalledHop(d *batonv1.Dialog) (netip.AddrPort, string, error) {
	field, raw := "remote_target", d.GetRemoteTarget()
	if rs := d.GetRouteSet(); len(rs) > 0 {
		field, raw = "route_set[0]", rs[0]
	}
	u, err := ParseURI(field, raw)
	if err != nil {
		return netip.AddrPort{}, "", err
	}
	if field != "remote_target" && !u.UriParams.Has("lr") {
		// A strict router would need the Request-URI rewritten
		// (RFC 3261 12.2.1.1); no SBC Baton meets does that.
		return netip.AddrPort{}, "", fmt.Errorf("%w: route_set[0] %q is a strict router (no ;lr), not supported", ErrDialog, raw)
	}
	transport, err := DialogTransport(d.GetTransport())
	if err != nil {
		return netip.AddrPort{}, "", err
	}
	if transport, err = URITransport(u, transport); err != nil {
		return netip.AddrPort{}, "", err
	}
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(u.Host, "["), "]"))
	if err != nil || ip.Zone() != "" {
		return netip.AddrPort{}, transport, fmt.Errorf("%w: %s host %q is not an IP address: no name a caller wrote is looked up",
			ErrNextHop, field, u.Host)
	}
	port := u.Port
	if port == 0 {
		port = sip.DefaultPort(transport)
	}
	if port < 1 || port > 65535 {
		return netip.AddrPort{}, transport, fmt.Errorf("%w: %s port %d", ErrDialog, field, u.Port)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)), transport, nil
}

// DecidedHop is the next hop ingress decided for d's in-dialog requests
// (Dialog.next_hop): an IP literal and port, never unspecified or
// multicast.
func DecidedHop(d *batonv1.Dialog) (netip.AddrPort, error) {
	hop, err := netip.ParseAddrPort(strings.TrimSpace(d.GetNextHop()))
	if err != nil || hop.Addr().Zone() != "" || hop.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: next_hop %q is not an IP address and port", ErrNextHop, d.GetNextHop())
	}
	hop = netip.AddrPortFrom(hop.Addr().Unmap(), hop.Port())
	if hop.Addr().IsUnspecified() || hop.Addr().IsMulticast() {
		return netip.AddrPort{}, fmt.Errorf("%w: next_hop %s", ErrNextHop, hop)
	}
	return hop, nil
}

// DialogTransport names t as sipgo does; unspecified is UDP.
func DialogTransport(t batonv1.Transport) (string, error) {
	switch t {
	case batonv1.Transport_TRANSPORT_UNSPECIFIED, batonv1.Transport_TRANSPORT_UDP:
		return "UDP", nil
	case batonv1.Transport_TRANSPORT_TCP:
		return "TCP", nil
	case batonv1.Transport_TRANSPORT_TLS:
		return "TLS", nil
	}
	return "", fmt.Errorf("%w: transport %s is not supported", ErrDialog, t)
}

// TransportOf is the inverse of DialogTransport.
func TransportOf(t string) batonv1.Transport {
	switch strings.ToUpper(t) {
	case "TCP":
		return batonv1.Transport_TRANSPORT_TCP
	case "TLS":
		return batonv1.Transport_TRANSPORT_TLS
	}
	return batonv1.Transport_TRANSPORT_UDP
}

// URITransport is the transport of a request sent to u (RFC 3263 4.1): its
// transport parameter, TLS for a sips: URI, else def.
func URITransport(u sip.Uri, def string) (string, error) {
	t, ok := u.UriParams.Get("transport")
	switch {
	case ok:
		t = strings.ToUpper(t)
		if t != "UDP" && t != "TCP" && t != "TLS" {
			return "", fmt.Errorf("%w: %s: transport %s is not supported (udp, tcp, tls)", ErrDialog, u.String(), t)
		}
		if u.IsEncrypted() && t != "TLS" {
			return "", fmt.Errorf("%w: %s: a sips: URI over %s", ErrDialog, u.String(), t)
		}
		return t, nil
	case u.IsEncrypted():
		return "TLS", nil
	}
	return def, nil
}

// ParseURI reads a sip or sips URI given bare (sip:a@b;lr) or as a
// name-addr (<sip:a@b;lr>, "Name" <sip:a@b>); header parameters after '>'
// are dropped. field names it in errors (ErrDialog).
func ParseURI(field, s string) (sip.Uri, error) {
	v := strings.TrimSpace(s)
	if err := ValidateValue(v); err != nil {
		return sip.Uri{}, fmt.Errorf("%w: %s: %w", ErrDialog, field, err)
	}
	if i := strings.IndexByte(v, '<'); i >= 0 {
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return sip.Uri{}, fmt.Errorf("%w: %s %q: unclosed '<'", ErrDialog, field, s)
		}
		v = v[i+1 : i+j]
	}
	if strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '<' || r == '>' || r == '"' }) {
		return sip.Uri{}, fmt.Errorf("%w: %s %q: spaces, quotes, brackets or control characters in the URI", ErrDialog, field, s)
	}
	var u sip.Uri
	if err := sip.ParseUri(v, &u); err != nil {
		return sip.Uri{}, fmt.Errorf("%w: %s %q: %w", ErrDialog, field, s, err)
	}
	if u.Host == "" || u.Wildcard {
		return sip.Uri{}, fmt.Errorf("%w: %s %q: no host", ErrDialog, field, s)
	}
	if sc := strings.ToLower(u.Scheme); sc != "sip" && sc != "sips" {
		return sip.Uri{}, fmt.Errorf("%w: %s %q: scheme %q, want sip or sips", ErrDialog, field, s, u.Scheme)
	}
	return u, nil
}
