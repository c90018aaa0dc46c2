package server

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/ingress/internal/trunks"
)

// nextHop decides where every in-dialog request of a call goes (ingress's
// BYE, transfer's REFER, BYE and re-INVITE), once, when the call starts.
// RFC 3261 12.2.1.1 sends them to the first Record-Route entry, or to the
// caller's Contact: both are text the caller wrote. A caller could point
// them at any socket (ingress's BYE reached a listener that never spoke
// to it; transfer opened TCP to an arbitrary port and wrote a REFER).
//
// The signalled hop is kept only when its host is an IP literal (no name
// from a caller is ever resolved) that the INVITE came from or that the
// call's trunk lists in its own ranges; otherwise requests go to the
// address the INVITE came from, over its transport, as a symmetric
// response would (RFC 3581). The Request-URI and Route headers are
// unchanged either way. signalled reports which was chosen.
func nextHop(d *batonv1.Dialog, table *trunks.Table, trunk *trunks.Trunk) (hop string, transport batonv1.Transport, signalled bool) {
	source, err := netip.ParseAddrPort(d.GetRemoteAddress())
	if err != nil {
		return "", d.GetTransport(), false
	}
	fallback := netip.AddrPortFrom(source.Addr().Unmap(), source.Port()).String()
	raw := d.GetRemoteTarget()
	if rs := d.GetRouteSet(); len(rs) > 0 {
		raw = rs[0]
	}
	u, err := parseURI("next hop", raw)
	if err != nil {
		return fallback, d.GetTransport(), false
	}
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(u.Host, "["), "]"))
	if err != nil || ip.Zone() != "" {
		return fallback, d.GetTransport(), false
	}
	ip = ip.Unmap()
	if ip != source.Addr().Unmap() && (ip.IsUnspecified() || ip.IsMulticast() || !table.Lists(trunk, ip)) {
		return fallback, d.GetTransport(), false
	}
	transport, ok := uriTransport(u, d.GetTransport())
	if !ok {
		return fallback, d.GetTransport(), false
	}
	port := u.Port
	if port == 0 {
		port = 5060
		if transport == batonv1.Transport_TRANSPORT_TLS {
			port = 5061
		}
	}
	if port < 1 || port > 65535 {
		return fallback, d.GetTransport(), false
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(port)), transport, true
}

// uriTransport is the transport a request to u uses: its transport
// parameter, TLS for a sips URI, else def; ok is false for a transport
// ingress does not speak.
func uriTransport(u sip.Uri, def batonv1.Transport) (batonv1.Transport, bool) {
	if u.IsEncrypted() {
		return batonv1.Transport_TRANSPORT_TLS, true
	}
	t, ok := u.UriParams.Get("transport")
	if !ok {
		return def, true
	}
	switch strings.ToLower(t) {
	case "udp":
		return batonv1.Transport_TRANSPORT_UDP, true
	case "tcp":
		return batonv1.Transport_TRANSPORT_TCP, true
	case "tls":
		return batonv1.Transport_TRANSPORT_TLS, true
	}
	return def, false
}

// sipTransport names t as sipgo does.
func sipTransport(t batonv1.Transport) string {
	switch t {
	case batonv1.Transport_TRANSPORT_TCP:
		return "TCP"
	case batonv1.Transport_TRANSPORT_TLS:
		return "TLS"
	}
	return "UDP"
}
