package request

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
)

// ErrNextHop means an in-dialog request would go to an address transfer
// does not send SIP to: a host name, or a loopback, link-local, private
// or otherwise special address outside the configured peers.
var ErrNextHop = sipx.ErrNextHop

// Peers is where in-dialog requests (REFER, BYE, re-INVITE) may go beyond
// public addresses. The next hop of such a request comes from the caller's
// Record-Route and Contact, which whoever placed the call wrote: without
// this check a caller could make transfer open a connection to any
// listener it can reach (a service on loopback, the pod network) and
// write a REFER there (issue 14, item 3).
type Peers struct {
	// Networks are the ranges of the SBCs and trunks transfer talks to: a
	// next hop in one is allowed on any port, even when it is loopback,
	// private or link-local.
	Networks []netip.Prefix
	// Hosts are single peers allowed the same way: the exact address and
	// port, or any port of the address when the port is 0.
	Hosts []netip.AddrPort
}

// NextHop is where the in-dialog requests of d are sent when no next hop
// was decided by ingress (sipx.SignalledHop): a host name is ErrNextHop,
// and no name a caller wrote is ever looked up; a dialog that does not
// parse is ErrDialog.
func NextHop(d *batonv1.Dialog) (netip.AddrPort, error) {
	if d == nil {
		return netip.AddrPort{}, fmt.Errorf("%w: the command has no dialog", ErrDialog)
	}
	hop, _, err := sipx.SignalledHop(d)
	return hop, err
}

// Check returns the next hop of d's in-dialog requests (NextHop) when
// they may go there: a public unicast address; the exact address and
// port the INVITE came from (d.RemoteAddress, the SBC that sent it); or
// an address within Networks or Hosts. Anything else, loopback,
// link-local, private, shared (CGNAT), unspecified, multicast or
// reserved, is ErrNextHop.
//
// A dialog whose next_hop ingress decided (sipx.DecidedHop) goes there: ingress
// took the caller's hop only when the call's trunk lists it or the INVITE
// came from it, which transfer, knowing no trunks, cannot check again (a
// writer who could forge next_hop could forge remote_address as well).
func (p Peers) Check(d *batonv1.Dialog) (netip.AddrPort, error) {
	if d.GetNextHop() != "" {
		return sipx.DecidedHop(d)
	}
	hop, err := NextHop(d)
	if err != nil {
		return hop, err
	}
	kind := special(hop.Addr())
	if kind == "" || p.allows(hop) {
		return hop, nil
	}
	source := "unknown"
	if src, err := netip.ParseAddrPort(strings.TrimSpace(d.GetRemoteAddress())); err == nil {
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if src == hop {
			return hop, nil
		}
		source = src.String()
	}
	return hop, fmt.Errorf("%w: %s is a %s address, outside the configured peer networks and not the address the INVITE came from (%s)",
		ErrNextHop, hop, kind, source)
}

// allows reports whether hop is within Networks or Hosts.
func (p Peers) allows(hop netip.AddrPort) bool {
	for _, n := range p.Networks {
		if n.Contains(hop.Addr()) {
			return true
		}
	}
	for _, h := range p.Hosts {
		if h.Addr().Unmap() == hop.Addr() && (h.Port() == 0 || h.Port() == hop.Port()) {
			return true
		}
	}
	return false
}

// reserved are ranges netip has no predicate for that no SIP peer on the
// internet uses.
var reserved = []struct {
	prefix netip.Prefix
	kind   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this-network"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (CGNAT)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("64:ff9b::/96"), "NAT64"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "NAT64"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
}

// special names what kind of non-public address ip is; "" for a public
// unicast address.
func special(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return "invalid"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsLinkLocalUnicast():
		return "link-local"
	case ip.IsMulticast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast"
	case ip.IsPrivate():
		return "private"
	}
	for _, r := range reserved {
		if r.prefix.Contains(ip) {
			return r.kind
		}
	}
	return ""
}

// PeerHost is the peer a configured host[:port] names (the trunk host):
// ok is false when it is a name rather than an IP address.
func PeerHost(hostport string) (netip.AddrPort, bool) {
	host, port, err := splitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, false
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), port), true
}

// splitHostPort splits host[:port] (an IPv6 host in brackets); port 0
// when there is none.
func splitHostPort(s string) (string, uint16, error) {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().String(), ap.Port(), nil
	}
	host := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if i := strings.LastIndexByte(s, ':'); i >= 0 && strings.Count(s, ":") == 1 {
		p, err := strconv.ParseUint(s[i+1:], 10, 16)
		if err != nil {
			return "", 0, fmt.Errorf("port of %q: %w", s, err)
		}
		return s[:i], uint16(p), nil
	}
	return host, 0, nil
}
