package transfer

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/request"
)

// trap is an attacker's listener on loopback, UDP and TCP on one port: it
// counts the datagrams, connections and bytes that reach it, and answers
// nothing.
type trap struct {
	port                    int
	datagrams, conns, bytes atomic.Int64
}

func startTrap(t *testing.T) *trap {
	t.Helper()
	conn, ln := listenUDPAndTCP(t)
	tr := &trap{port: conn.LocalAddr().(*net.UDPAddr).Port}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65535)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			tr.datagrams.Add(1)
			tr.bytes.Add(int64(n))
		}
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tr.conns.Add(1)
			wg.Go(func() {
				defer func() { _ = c.Close() }()
				buf := make([]byte, 65535)
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				for {
					n, err := c.Read(buf)
					tr.bytes.Add(int64(n))
					if err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		_ = conn.Close()
		_ = ln.Close()
		wg.Wait()
	})
	return tr
}

// reached is everything that reached the trap.
func (tr *trap) reached() int64 { return tr.datagrams.Load() + tr.conns.Load() + tr.bytes.Load() }

// hostileDialog is a caller's dialog whose Record-Route or Contact points
// transfer's in-dialog requests somewhere it must not send them.
type hostileDialog struct {
	name string
	tune func(d *batonv1.Dialog)
}

// hostileDialogs aim at trap (a loopback listener), a name that resolves
// to it, the cloud metadata address and a private address outside the
// configured peers (10.20.0.0/16 in the tests).
func hostileDialogs(tr *trap) []hostileDialog {
	p := fmt.Sprint(tr.port)
	rr := func(uri string) func(d *batonv1.Dialog) {
		return func(d *batonv1.Dialog) { d.RouteSet = []string{"<" + uri + ">", "<sip:198.51.100.20;lr>"} }
	}
	return []hostileDialog{
		{"record-route to a loopback TCP listener", rr("sip:127.0.0.1:" + p + ";transport=tcp;lr")},
		{"record-route to a loopback UDP listener", rr("sip:127.0.0.1:" + p + ";lr")},
		{"contact of a loopback TCP listener", func(d *batonv1.Dialog) {
			d.RouteSet, d.RemoteTarget = nil, "sip:x@127.0.0.1:"+p+";transport=tcp"
		}},
		{"record-route naming localhost", rr("sip:localhost:" + p + ";transport=tcp;lr")},
		{"record-route to IPv6 loopback", rr("sip:[::1]:" + p + ";transport=tcp;lr")},
		{"record-route to another port of the INVITE's source", func(d *batonv1.Dialog) {
			rr("sip:127.0.0.1:" + p + ";transport=tcp;lr")(d)
			d.RemoteAddress = "127.0.0.1:1" // the SBC's port, not the trap's
		}},
		{"record-route to link-local (cloud metadata)", rr("sip:169.254.169.254:80;transport=tcp;lr")},
		{"record-route to a private address outside the peers", rr("sip:10.99.0.1:" + p + ";lr")},
	}
}

// attackDialogs sends REFER, BYE and INVITE commands in every hostile
// dialog and checks that each fails before any SIP with reason
// next_hop_not_allowed. The INVITE came from source (tune may say
// otherwise); dest is where the INVITEs' new leg would go. It returns the
// number of commands.
func attackDialogs(t *testing.T, h *harness, tr, dest *trap, source string) int {
	t.Helper()
	methods := []batonv1.Method{batonv1.Method_METHOD_REFER, batonv1.Method_METHOD_BYE, batonv1.Method_METHOD_INVITE}
	n := 0
	for i, hd := range hostileDialogs(tr) {
		for _, m := range methods {
			n++
			id := fmt.Sprintf("hostile-%d-%s", i, strings.ToLower(strings.TrimPrefix(m.String(), "METHOD_")))
			cmd := referCommand(h, id)
			cmd.Method = m
			if m == batonv1.Method_METHOD_INVITE {
				cmd.Route = fmt.Sprintf("sip:queue@127.0.0.1:%d", dest.port)
				cmd.Encryption = encUDPRTP
			}
			cmd.Dialog.RemoteAddress = source
			hd.tune(cmd.Dialog)
			h.command(t, cmd)
			o := h.outcome(t, cmd.CommandId)
			require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED.String(), o.GetStatus().String(), "%s %s: %s", m, hd.name, o.GetDetail())
			want := strings.TrimPrefix(m.String(), "METHOD_") + " not sent: next hop not allowed"
			require.True(t, strings.HasPrefix(o.GetDetail(), want), "%s %s: %s", m, hd.name, o.GetDetail())
		}
	}
	return n
}

// A caller's Record-Route or Contact no longer decides where transfer
// sends SIP: each hostile dialog (loopback listener over TCP and UDP, a
// name that resolves to it, another port of the INVITE's source, the
// metadata address, a private address outside the peers) fails every
// method before any SIP, counted as next_hop_not_allowed, and the
// listener sees nothing. Before, transfer opened TCP to the listener and
// wrote the REFER there (issue 14, item 3). The address the INVITE came
// from is still reached, loopback or not.
func TestHostileRouteSetIsRefused(t *testing.T) {
	t.Parallel()
	metrics := NewMetrics(prometheus.NewRegistry())
	h := start(t, 202, func(o *Options) {
		withInvite(nil)(o)
		o.Metrics = metrics
		o.Peers = request.Peers{Networks: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")}}
	})
	tr, dest := startTrap(t), startTrap(t)
	n := attackDialogs(t, h, tr, dest, "203.0.113.5:5060")
	time.Sleep(200 * time.Millisecond) // anything late would arrive now
	require.Zero(t, tr.reached(), "nothing reached the attacker's listener")
	require.Zero(t, dest.reached(), "no new leg was dialled")
	require.Zero(t, h.sbc.count())
	total := 0.0
	for _, m := range []string{"refer", "bye", "invite"} {
		v := testutil.ToFloat64(metrics.Refused.WithLabelValues(m, RefusedNextHopNotAllowed))
		require.Equal(t, float64(n/3), v, m)
		total += v
	}
	require.Equal(t, float64(n), total)

	// The SBC the INVITE came from is reached even on loopback, outside
	// the peer networks: its exact address is the dialog's source.
	cmd := referCommand(h, "from-the-source")
	cmd.Dialog.RemoteAddress = h.sbc.addr.String()
	h.command(t, cmd)
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
	require.Equal(t, "REFER", h.sbc.next(t).req.Method.String())
}

// attackRoutes sends REFER and INVITE commands whose routes the
// allowlist (sip:*@agents.example.com) does not admit, in a dialog
// transfer may use, and checks each fails before any SIP with reason
// route_not_allowed. dest is a live address the INVITEs name. It returns
// the number of commands.
func attackRoutes(t *testing.T, h *harness, dest *trap) int {
	t.Helper()
	routes := []struct {
		method batonv1.Method
		route  string
	}{
		{batonv1.Method_METHOD_REFER, "sip:+19005550100@evil.example"},
		{batonv1.Method_METHOD_REFER, "sip:+4930123456@agents.example.com.evil.example"},
		{batonv1.Method_METHOD_REFER, "tel:+19005550100"},
		{batonv1.Method_METHOD_REFER, "sip:x@evil.example;a=@agents.example.com"},
		{batonv1.Method_METHOD_REFER, fmt.Sprintf("sip:x@127.0.0.1:%d", dest.port)},
		{batonv1.Method_METHOD_INVITE, fmt.Sprintf("sip:queue@127.0.0.1:%d", dest.port)},
		{batonv1.Method_METHOD_INVITE, fmt.Sprintf("sip:queue@127.0.0.1:%d;transport=tcp", dest.port)},
		{batonv1.Method_METHOD_INVITE, "sip:+19005550100@evil.example"},
	}
	for i, r := range routes {
		cmd := referCommand(h, fmt.Sprintf("route-%d", i))
		cmd.Method, cmd.Route = r.method, r.route
		if r.method == batonv1.Method_METHOD_INVITE {
			cmd.Encryption = encUDPRTP
		}
		h.command(t, cmd)
		o := h.outcome(t, cmd.CommandId)
		require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED.String(), o.GetStatus().String(), "%s: %s", r.route, o.GetDetail())
		want := strings.TrimPrefix(r.method.String(), "METHOD_") + " not sent: route not allowed"
		require.True(t, strings.HasPrefix(o.GetDetail(), want), "%s: %s", r.route, o.GetDetail())
	}
	return len(routes)
}

// Transfer checks a command's route against its own allowlist before any
// hostileCommands runs transfer with the route allowlist
// sip:*@agents.example.com, publishes attackRoutes' hostile commands
// straight to the handoffs topic, and checks that no SIP left for them.
// It returns the harness, its metrics, the destination trap and how many
// commands were refused.
func hostileCommands(t *testing.T) (*harness, *Metrics, *trap, int) {
	t.Helper()
	metrics := NewMetrics(prometheus.NewRegistry())
	allow, err := request.NewAllowlist([]string{"sip:*@agents.example.com"})
	require.NoError(t, err)
	h := start(t, 202, func(o *Options) {
		withInvite(nil)(o)
		o.Metrics = metrics
		o.Routes = allow
	})
	dest := startTrap(t)
	n := attackRoutes(t, h, dest)
	time.Sleep(500 * time.Millisecond)
	require.Zero(t, h.sbc.count(), "no REFER reached the caller's SBC")
	require.Zero(t, dest.reached(), "no INVITE reached the destination")
	return h, metrics, dest, n
}

// SIP: a command written straight to the handoffs topic (no router) to a
// route outside it sends nothing and fails route_not_allowed. Before,
// transfer dialled whatever a command named (issue 14, item 11).
func TestRouteOutsideTheAllowlistIsRefused(t *testing.T) {
	t.Parallel()
	h, metrics, _, n := hostileCommands(t)
	refer := testutil.ToFloat64(metrics.Refused.WithLabelValues("refer", RefusedRouteNotAllowed))
	invite := testutil.ToFloat64(metrics.Refused.WithLabelValues("invite", RefusedRouteNotAllowed))
	require.Equal(t, float64(n), refer+invite)
	require.Equal(t, 5.0, refer)

	// A route the allowlist admits is sent.
	cmd := referCommand(h, "allowed")
	h.command(t, cmd)
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
	r := h.sbc.next(t)
	require.True(t, strings.HasPrefix(r.req.GetHeader("Refer-To").Value(), "<sip:+4930123456@agents.example.com"))
}
