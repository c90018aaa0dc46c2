package server

import (
	"net/netip"

	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
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
	ap, t, err := sipx.SignalledHop(d)
	if err != nil {
		return fallback, d.GetTransport(), false
	}
	ip := ap.Addr()
	if ip != source.Addr().Unmap() && (ip.IsUnspecified() || ip.IsMulticast() || !table.Lists(trunk, ip)) {
		return fallback, d.GetTransport(), false
	}
	return ap.String(), sipx.TransportOf(t), true
}
