package request

import (
	"net/netip"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// NextHop is where sipgo really sends the dialog's requests
// (Request.Destination): the first route, else the remote target, with
// the transport's default port.
func TestNextHopIsWhereTheRequestGoes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		transport batonv1.Transport
		routes    []string
		target    string
		want      string
	}{
		{"first route", batonv1.Transport_TRANSPORT_UDP, []string{"<sip:203.0.113.7:5080;lr>", "<sip:198.51.100.1;lr>"}, "sip:a@198.51.100.9", "203.0.113.7:5080"},
		{"remote target without routes", batonv1.Transport_TRANSPORT_UDP, nil, "sip:a@198.51.100.9:5099", "198.51.100.9:5099"},
		{"udp default port", batonv1.Transport_TRANSPORT_UDP, nil, "sip:a@198.51.100.9", "198.51.100.9:5060"},
		{"tcp default port", batonv1.Transport_TRANSPORT_TCP, []string{"<sip:203.0.113.7;lr>"}, "sip:a@198.51.100.9", "203.0.113.7:5060"},
		{"tls default port", batonv1.Transport_TRANSPORT_TLS, nil, "sip:a@198.51.100.9", "198.51.100.9:5061"},
		{"sips default port", batonv1.Transport_TRANSPORT_UDP, []string{"<sips:203.0.113.7;lr>"}, "sip:a@198.51.100.9", "203.0.113.7:5061"},
		{"route transport", batonv1.Transport_TRANSPORT_UDP, []string{"<sip:203.0.113.7;lr;transport=tls>"}, "sip:a@198.51.100.9", "203.0.113.7:5061"},
		{"ipv6", batonv1.Transport_TRANSPORT_UDP, []string{"<sip:[2001:db8::7]:5070;lr>"}, "sip:a@198.51.100.9", "[2001:db8::7]:5070"},
		{"mapped ipv4", batonv1.Transport_TRANSPORT_UDP, nil, "sip:a@[::ffff:198.51.100.9]:5070", "198.51.100.9:5070"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := dialog()
			d.Transport, d.RouteSet, d.RemoteTarget = tc.transport, tc.routes, tc.target
			hop, err := NextHop(d)
			require.NoError(t, err)
			require.Equal(t, tc.want, hop.String())
			req, err := InDialog(sip.BYE, d, 1)
			require.NoError(t, err)
			sent, err := netip.ParseAddrPort(req.Destination())
			require.NoError(t, err)
			require.Equal(t, hop, netip.AddrPortFrom(sent.Addr().Unmap(), sent.Port()), "the hop checked is the hop sipgo sends to")
		})
	}
}

// A next hop must be an IP address: a name would be looked up in DNS on
// the caller's say-so (and resolve anywhere), and numeric forms other
// than dotted quads are names to Go but addresses to some resolvers.
func TestNextHopRefusesNames(t *testing.T) {
	for _, host := range []string{"sbc.attacker.example", "localhost", "2130706433", "0x7f000001", "127.1", "[fe80::1%25eth0]"} {
		d := dialog()
		d.RouteSet = []string{"<sip:" + host + ";lr>"}
		_, err := NextHop(d)
		require.ErrorIs(t, err, ErrNextHop, host)
		_, err = Peers{Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}.Check(d)
		require.ErrorIs(t, err, ErrNextHop, "%s: no network admits a name", host)
	}
	d := dialog()
	d.RouteSet = []string{"<sip:p1.example.com>"} // no ;lr: a dialog error first
	_, err := NextHop(d)
	require.ErrorIs(t, err, ErrDialog)
	require.NotErrorIs(t, err, ErrNextHop)
}

func TestPeersCheck(t *testing.T) {
	peers := Peers{
		Networks: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("fd00:1::/64")},
		Hosts:    []netip.AddrPort{netip.MustParseAddrPort("192.168.7.7:5080"), netip.MustParseAddrPort("172.16.9.9:0")},
	}
	for _, tc := range []struct {
		hop    string
		source string
		ok     bool
	}{
		{hop: "203.0.113.10:5060", ok: true}, // public
		{hop: "[2001:4860::8]:5060", ok: true},
		{hop: "127.0.0.1:5060"},
		{hop: "127.8.8.8:5060"},
		{hop: "[::1]:5060"},
		{hop: "[::ffff:127.0.0.1]:5060"},
		{hop: "169.254.169.254:80"},
		{hop: "[fe80::1]:5060"},
		{hop: "10.1.2.3:5060"},
		{hop: "172.16.0.1:5060"},
		{hop: "192.168.1.1:5060"},
		{hop: "[fc00::1]:5060"},
		{hop: "100.64.0.1:5060"},
		{hop: "0.0.0.0:5060"},
		{hop: "0.1.2.3:5060"},
		{hop: "224.0.0.1:5060"},
		{hop: "255.255.255.255:5060"},
		{hop: "[ff02::1]:5060"},
		{hop: "[64:ff9b::a00:1]:5060"},
		{hop: "10.20.3.4:5060", ok: true},                                    // in a network
		{hop: "10.20.3.4:9999", ok: true},                                    // any port of it
		{hop: "10.21.3.4:5060"},                                              // just outside
		{hop: "[fd00:1::5]:5060", ok: true},                                  // v6 network
		{hop: "192.168.7.7:5080", ok: true},                                  // exact host
		{hop: "192.168.7.7:5081"},                                            // another port of it
		{hop: "172.16.9.9:1234", ok: true},                                   // host, any port
		{hop: "127.0.0.1:5070", source: "127.0.0.1:5070", ok: true},          // the INVITE's own source
		{hop: "127.0.0.1:5070", source: "[::ffff:127.0.0.1]:5070", ok: true}, // the same, mapped
		{hop: "127.0.0.1:6379", source: "127.0.0.1:5070"},                    // another port of the source
		{hop: "10.9.9.9:5060", source: "10.9.9.8:5060"},
	} {
		ap := netip.MustParseAddrPort(tc.hop)
		d := dialog()
		d.RouteSet = nil
		d.RemoteTarget = "sip:sbc@" + ap.String()
		d.RemoteAddress = tc.source
		hop, err := peers.Check(d)
		if tc.ok {
			require.NoError(t, err, tc.hop)
			require.Equal(t, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), hop)
			continue
		}
		require.ErrorIs(t, err, ErrNextHop, "%s from %q", tc.hop, tc.source)
		require.Contains(t, err.Error(), "not the address the INVITE came from", tc.hop)
	}
	// With nothing configured, only public addresses and the source.
	d := dialog()
	d.RouteSet = []string{"<sip:10.20.3.4;lr>"}
	_, err := Peers{}.Check(d)
	require.ErrorIs(t, err, ErrNextHop)
	d.RemoteAddress = "10.20.3.4:5060"
	_, err = Peers{}.Check(d)
	require.NoError(t, err)
}

func TestPeerHost(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1":          "10.0.0.1:0",
		"10.0.0.1:5080":     "10.0.0.1:5080",
		"[2001:db8::1]:507": "[2001:db8::1]:507",
		"2001:db8::1":       "[2001:db8::1]:0",
		"[2001:db8::1]":     "[2001:db8::1]:0",
	} {
		got, ok := PeerHost(in)
		require.True(t, ok, in)
		require.Equal(t, want, got.String(), in)
	}
	for _, in := range []string{"", "trunk.example", "trunk.example:5060", "10.0.0.1:x"} {
		_, ok := PeerHost(in)
		require.False(t, ok, in)
	}
}

func TestAllowlist(t *testing.T) {
	a, err := NewAllowlist([]string{"sip:*@agents.example.com", "re:tel:\\+4930[0-9]+", "1???"})
	require.NoError(t, err)
	for _, r := range []string{"sip:+4930123456@agents.example.com", "tel:+4930123", "1234"} {
		require.NoError(t, a.Check(r), r)
	}
	for _, r := range []string{"sip:x@evil.example", "sip:x@agents.example.com.evil", "tel:+4930", "tel:+1900555", "12345", "",
		"sip:x@evil.example;a=@agents.example.com"} {
		require.ErrorIs(t, a.Check(r), ErrRouteNotAllowed, r)
	}
	params, err := NewAllowlist([]string{"sip:*@agents.example.com*"})
	require.NoError(t, err)
	require.NoError(t, params.Check("sip:q@agents.example.com;transport=tcp"))
	require.ErrorIs(t, params.Check("sip:q@agents.example.com;maddr=198.51.100.66"), ErrRouteNotAllowed, "maddr redirects")
	require.ErrorIs(t, params.Check("sip:q@agents.example.com;x=@y"), ErrRouteNotAllowed, "a second '@'")
	var none *Allowlist
	require.NoError(t, none.Check("sip:anything@anywhere"), "no allowlist checks nothing")
	empty, err := NewAllowlist(nil)
	require.NoError(t, err)
	require.ErrorIs(t, empty.Check("sip:x@agents.example.com"), ErrRouteNotAllowed, "an empty allowlist allows nothing")
	for _, bad := range []string{"re:(", "[", ""} {
		_, err := NewAllowlist([]string{bad})
		require.Error(t, err, bad)
	}
}

// A dialog carrying ingress's decided next hop is sent there, whatever its
// Contact or Record-Route say, over the decided transport; the Route
// headers and Request-URI are unchanged.
func TestDecidedNextHopWins(t *testing.T) {
	d := dialog()
	d.RemoteTarget = "sip:a@10.9.9.9:6000"
	d.RouteSet = []string{"<sip:evil.example;lr>"}
	d.RemoteAddress = "203.0.113.5:5060"
	d.NextHop, d.NextHopTransport = "203.0.113.5:5060", batonv1.Transport_TRANSPORT_TCP
	hop, err := Peers{}.Check(d)
	require.NoError(t, err)
	require.Equal(t, "203.0.113.5:5060", hop.String())
	req, err := InDialog(sip.REFER, d, 1)
	require.NoError(t, err)
	require.Equal(t, "203.0.113.5:5060", req.Destination())
	require.Equal(t, "TCP", req.Transport())
	require.Equal(t, "sip:a@10.9.9.9:6000", req.Recipient.String())
	require.Equal(t, "<sip:evil.example;lr>", req.Route().Value())

	// A private address in the trunk's ranges is ingress's to allow.
	d.NextHop = "10.1.2.3:5080"
	hop, err = Peers{}.Check(d)
	require.NoError(t, err)
	require.Equal(t, "10.1.2.3:5080", hop.String())

	for _, bad := range []string{"evil.example:5060", "0.0.0.0:5060", "224.0.0.1:5060", "203.0.113.5", "[fe80::1%eth0]:5060"} {
		d.NextHop = bad
		_, err := Peers{Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}.Check(d)
		require.ErrorIs(t, err, ErrNextHop, bad)
		_, err = InDialog(sip.BYE, d, 1)
		require.ErrorIs(t, err, ErrNextHop, bad)
	}
}
