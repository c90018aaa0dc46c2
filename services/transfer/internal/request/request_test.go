package request

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
)

func dialog() *batonv1.Dialog {
	return &batonv1.Dialog{
		CallId:        "call-1@sbc",
		LocalTag:      "ingress-tag",
		RemoteTag:     "sbc-tag",
		LocalUri:      "sip:agent@127.0.0.1:5060",
		RemoteUri:     "sip:sbc@127.0.0.1:5061",
		RemoteTarget:  "sip:sbc@127.0.0.1:5061;transport=udp",
		RouteSet:      []string{"<sip:p1.example.com;lr>", "sip:p2.example.com:5080;lr"},
		Transport:     batonv1.Transport_TRANSPORT_UDP,
		NextLocalCseq: 7,
		LocalContact:  "<sip:baton@127.0.0.1:5060>",
	}
}

// parse round-trips a request through sipgo's parser, as the far end sees it.
func parse(t *testing.T, req *sip.Request) *sip.Request {
	t.Helper()
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP",
		Host: "127.0.0.1", Port: 5070, Params: sip.NewParams()}
	via.Params.Add("branch", "z9hG4bK-test")
	req.PrependHeader(via)
	msg, err := sip.NewParser().ParseSIP([]byte(req.String()))
	require.NoError(t, err)
	out, ok := msg.(*sip.Request)
	require.True(t, ok)
	return out
}

func TestReferIsBuiltFromTheSnapshot(t *testing.T) {
	headers := []*batonv1.SipHeader{
		{Name: "X-Customer-Id", Value: "CUST 42&x=y"},
		{Name: "X-Intent", Value: "billing_dispute"},
	}
	req, err := Refer(dialog(), 2, "sip:+4930123456@agents.example.com", headers, "")
	require.NoError(t, err)
	got := parse(t, req)

	require.Equal(t, sip.REFER, got.Method)
	require.Equal(t, "sip:sbc@127.0.0.1:5061;transport=udp", got.Recipient.String())
	tag, _ := got.From().Params.Get("tag")
	require.Equal(t, "ingress-tag", tag)
	require.Equal(t, "sip:agent@127.0.0.1:5060", got.From().Address.String())
	tag, _ = got.To().Params.Get("tag")
	require.Equal(t, "sbc-tag", tag)
	require.Equal(t, "sip:sbc@127.0.0.1:5061", got.To().Address.String())
	require.Equal(t, "call-1@sbc", got.CallID().Value())
	require.Equal(t, uint32(7+CSeqsPerAttempt), got.CSeq().SeqNo, "next_local_cseq 7, attempt 2")
	require.Equal(t, sip.REFER, got.CSeq().MethodName)
	require.Equal(t, "70", got.GetHeader("Max-Forwards").Value())
	require.Equal(t, "sip:baton@127.0.0.1:5060", got.Contact().Address.String())
	require.Equal(t, "<sip:agent@127.0.0.1:5060>", got.GetHeader("Referred-By").Value())

	var routes []string
	for _, h := range got.GetHeaders("Route") {
		routes = append(routes, h.Value())
	}
	require.Equal(t, []string{"<sip:p1.example.com;lr>", "<sip:p2.example.com:5080;lr>"}, routes)
	require.Equal(t, "p1.example.com:5060", got.Destination(), "sent to the first route")

	referTo := got.GetHeader("Refer-To").Value()
	require.True(t, strings.HasPrefix(referTo, "<sip:+4930123456@agents.example.com?"), referTo)
	embedded, err := sipx.ReferToHeaders(referTo)
	require.NoError(t, err)
	require.Equal(t, []sipx.Header{{Name: "X-Customer-Id", Value: "CUST 42&x=y"}, {Name: "X-Intent", Value: "billing_dispute"}}, embedded)
}

func TestCSeqFollowsAttempt(t *testing.T) {
	for _, tc := range []struct {
		next, attempt, want uint32
	}{
		{next: 1, attempt: 1, want: 1},
		{next: 1, attempt: 0, want: 1}, // an unset attempt is the first
		{next: 5, attempt: 2, want: 21},
		{next: 5, attempt: 3, want: 37},
	} {
		d := dialog()
		d.NextLocalCseq = tc.next
		got, err := CSeq(d, tc.attempt)
		require.NoError(t, err)
		require.Equal(t, tc.want, got)
	}
	d := dialog()
	d.NextLocalCseq = 1<<31 - 1
	_, err := CSeq(d, 2)
	require.ErrorIs(t, err, ErrDialog)
}

func TestNoRouteSetSendsToTheRemoteTarget(t *testing.T) {
	d := dialog()
	d.RouteSet = nil
	req, err := InDialog(sip.BYE, d, 1)
	require.NoError(t, err)
	got := parse(t, req)
	require.Empty(t, got.GetHeaders("Route"))
	require.Equal(t, "127.0.0.1:5061", got.Destination())
	require.Equal(t, uint32(7), got.CSeq().SeqNo)
}

func TestByeCarriesTheHeaders(t *testing.T) {
	req, err := Bye(dialog(), 1, []*batonv1.SipHeader{{Name: "X-Handback", Value: "queue=7"}})
	require.NoError(t, err)
	got := parse(t, req)
	require.Equal(t, sip.BYE, got.Method)
	require.Equal(t, sip.BYE, got.CSeq().MethodName)
	require.Equal(t, "queue=7", got.GetHeader("X-Handback").Value())
	require.Nil(t, got.GetHeader("Refer-To"))
}

func TestBadInputsBuildNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func() (*sip.Request, error)
		want  string
	}{
		{"no dialog", func() (*sip.Request, error) { return Refer(nil, 1, "sip:a@b", nil, "") }, "no dialog"},
		{"missing tags", func() (*sip.Request, error) {
			d := dialog()
			d.LocalTag, d.RemoteTag = "", ""
			return Bye(d, 1, nil)
		}, "missing local_tag, remote_tag"},
		{"tel route", func() (*sip.Request, error) { return Refer(dialog(), 1, "tel:+15551234567", nil, "") }, "want sip or sips"},
		{"CRLF in a REFER header", func() (*sip.Request, error) {
			return Refer(dialog(), 1, "sip:a@b", []*batonv1.SipHeader{{Name: "X-A", Value: "x\r\nBYE: y"}}, "")
		}, "control character"},
		{"CRLF in a BYE header", func() (*sip.Request, error) {
			return Bye(dialog(), 1, []*batonv1.SipHeader{{Name: "X-A", Value: "x\nY"}})
		}, "control character"},
		{"non-X header on BYE", func() (*sip.Request, error) {
			return Bye(dialog(), 1, []*batonv1.SipHeader{{Name: "Route", Value: "<sip:evil>"}})
		}, "invalid custom header name"},
		{"CRLF in the call id", func() (*sip.Request, error) {
			d := dialog()
			d.CallId = "a\r\nb"
			return Bye(d, 1, nil)
		}, "call_id"},
		{"bad remote target", func() (*sip.Request, error) {
			d := dialog()
			d.RemoteTarget = "mailto:x@y"
			return Bye(d, 1, nil)
		}, "remote_target"},
		{"strict router", func() (*sip.Request, error) {
			d := dialog()
			d.RouteSet = []string{"<sip:p1.example.com>"}
			return Bye(d, 1, nil)
		}, "strict router"},
		{"a tag that adds a parameter", func() (*sip.Request, error) {
			d := dialog()
			d.LocalTag = "a;maddr=evil.example"
			return Bye(d, 1, nil)
		}, "local_tag"},
		{"a call id with a space", func() (*sip.Request, error) {
			d := dialog()
			d.CallId = "a b"
			return Bye(d, 1, nil)
		}, "call_id"},
		{"a remote target with a space", func() (*sip.Request, error) {
			d := dialog()
			d.RemoteTarget = "sip:sbc@h x"
			return Bye(d, 1, nil)
		}, "remote_target"},
		{"URI headers in the REFER route", func() (*sip.Request, error) {
			return Refer(dialog(), 1, "sip:a@b?Refer-To=sip:evil@x", nil, "")
		}, "bare URI"},
		{"URI headers in the INVITE route", func() (*sip.Request, error) {
			return NewLeg("sip:a@b?Refer-To=sip:evil@x", LegOptions{}, dialog(), CallerID{Host: "h"}, nil, "")
		}, "without headers"},
		{"a bracketed INVITE route", func() (*sip.Request, error) {
			return NewLeg("<sip:a@b>", LegOptions{}, dialog(), CallerID{Host: "h"}, nil, "")
		}, "route"},
		{"an unsupported transport in the first route", func() (*sip.Request, error) {
			d := dialog()
			d.RouteSet = []string{"<sip:p1.example.com;lr;transport=sctp>"}
			return Bye(d, 1, nil)
		}, "transport SCTP is not supported"},
		{"a sips: target over UDP", func() (*sip.Request, error) {
			d := dialog()
			d.RouteSet = nil
			d.RemoteTarget = "sips:sbc@127.0.0.1;transport=udp"
			return Bye(d, 1, nil)
		}, "a sips: URI over UDP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := tc.build()
			require.Nil(t, req)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestNewLegCallerIDAndHeaders(t *testing.T) {
	d := &batonv1.Dialog{LocalUri: "sip:+4930999@baton.example", RemoteUri: "<sip:+4915112345678@carrier.example>"}
	for _, tc := range []struct {
		cid  CallerID
		want string
	}{
		{CallerID{Policy: CallerIDCaller, Host: "10.0.0.5"}, "sip:+4915112345678@10.0.0.5"},
		{CallerID{Policy: CallerIDCallee, Host: "10.0.0.5"}, "sip:+4930999@10.0.0.5"},
		{CallerID{Policy: CallerIDFixed, Number: "+18005550100", Host: "10.0.0.5"}, "sip:+18005550100@10.0.0.5"},
	} {
		req, err := NewLeg("sip:queue@pbx.example:5080", LegOptions{}, d, tc.cid, []*batonv1.SipHeader{{Name: "X-Intent", Value: "billing"}}, "v=0\r\n")
		require.NoError(t, err)
		require.Equal(t, tc.want, req.From().Address.String(), tc.cid.Policy)
		require.Equal(t, "sip:queue@pbx.example:5080", req.Recipient.String())
		require.Equal(t, "billing", req.GetHeader("X-Intent").Value())
		require.Equal(t, "application/sdp", req.GetHeader("Content-Type").Value())
	}
	_, err := NewLeg("sip:queue@pbx.example", LegOptions{}, d, CallerID{Host: "h"}, []*batonv1.SipHeader{{Name: "Route", Value: "x"}}, "")
	require.Error(t, err, "only X- headers go out")
	for route, want := range map[string]string{
		"sip:queue@pbx.example":               "UDP",
		"sip:queue@pbx.example;transport=udp": "UDP",
		"sip:queue@pbx.example;transport=TCP": "TCP",
	} {
		req, err := NewLeg(route, LegOptions{}, d, CallerID{Host: "h"}, nil, "")
		require.NoError(t, err, route)
		require.Equal(t, want, req.Transport(), route)
	}
	req, err := NewLeg("sips:queue@pbx.example", LegOptions{TLS: true}, d, CallerID{Host: "h"}, nil, "")
	require.NoError(t, err)
	require.Equal(t, "TLS", req.Transport())
}

// TestInDialogTransport: in-dialog requests go over the transport the call
// came in over, unless the URI they are sent to (the first route, else the
// remote target) names one (RFC 3263 4.1).
func TestInDialogTransport(t *testing.T) {
	for _, tc := range []struct {
		name      string
		transport batonv1.Transport
		routes    []string
		target    string
		want      string
	}{
		{"udp call", batonv1.Transport_TRANSPORT_UDP, nil, "sip:sbc@10.0.0.1:5060", "UDP"},
		{"unspecified is udp", batonv1.Transport_TRANSPORT_UNSPECIFIED, nil, "sip:sbc@10.0.0.1", "UDP"},
		{"tcp call", batonv1.Transport_TRANSPORT_TCP, nil, "sip:sbc@10.0.0.1:5060", "TCP"},
		{"tls call", batonv1.Transport_TRANSPORT_TLS, nil, "sip:sbc@10.0.0.1:5061", "TLS"},
		{"target names tcp", batonv1.Transport_TRANSPORT_UDP, nil, "sip:sbc@10.0.0.1;transport=tcp", "TCP"},
		{"sips target", batonv1.Transport_TRANSPORT_TCP, nil, "sips:sbc@10.0.0.1", "TLS"},
		{"first route decides", batonv1.Transport_TRANSPORT_UDP, []string{"<sip:p1.example;lr;transport=tcp>", "<sip:p2.example;lr>"}, "sip:sbc@10.0.0.1;transport=udp", "TCP"},
		{"route without transport keeps the call's", batonv1.Transport_TRANSPORT_TCP, []string{"<sip:p1.example;lr>"}, "sip:sbc@10.0.0.1;transport=udp", "TCP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := dialog()
			d.Transport, d.RouteSet, d.RemoteTarget = tc.transport, tc.routes, tc.target
			req, err := Refer(d, 1, "sip:queue@pbx.example", nil, "")
			require.NoError(t, err)
			require.Equal(t, tc.want, req.Transport())
		})
	}
}

func TestTarget(t *testing.T) {
	for _, tc := range []struct {
		route string
		opts  LegOptions
		want  string // empty: refused
		err   string
	}{
		{route: "sip:queue@pbx.example:5080", want: "sip:queue@pbx.example:5080"},
		{route: "sip:+15551234567@carrier.example;user=phone", want: "sip:+15551234567@carrier.example;user=phone"},
		{route: "sips:queue@pbx.example", err: "needs TLS"},
		{route: "sips:queue@pbx.example", opts: LegOptions{TLS: true}, want: "sips:queue@pbx.example"},
		{route: "sip:queue@pbx.example;transport=tls", opts: LegOptions{TLS: true}, want: "sip:queue@pbx.example;transport=tls"},
		{route: "sip:queue@pbx.example;transport=udp", opts: LegOptions{TLS: true}, err: "transport udp"},
		{route: "sip:queue@pbx.example;transport=tcp", want: "sip:queue@pbx.example;transport=tcp"},
		{route: "sip:queue@pbx.example;transport=tcp", opts: LegOptions{TLS: true}, err: "transport tcp"},
		{route: "sip:queue@pbx.example;transport=sctp", err: "want udp or tcp"},
		{route: "tel:+15551234567", err: "invite.trunk_host"},
		{route: "1234", err: "invite.trunk_host"},
		{route: "tel:+15551234567", opts: LegOptions{TrunkHost: "trunk.example:5080"}, want: "sip:+15551234567@trunk.example:5080;user=phone"},
		{route: "tel:+1-555-123-4567", opts: LegOptions{TrunkHost: "10.0.0.9"}, want: "sip:+1-555-123-4567@10.0.0.9;user=phone"},
		{route: "tel:+15551234567;phone-context=example.com", opts: LegOptions{TrunkHost: "t"}, err: "parameters"},
		{route: "tel:call-me", opts: LegOptions{TrunkHost: "t"}, err: "not a tel: number"},
		{route: "1234", opts: LegOptions{TrunkHost: "pbx.local"}, want: "sip:1234@pbx.local"},
		{route: "*72#", opts: LegOptions{TrunkHost: "pbx.local:5062"}, want: "sip:*72%23@pbx.local:5062"},
		{route: "12 34", opts: LegOptions{TrunkHost: "pbx.local"}, err: "neither a SIP URI nor an extension"},
		{route: "http://x", opts: LegOptions{TrunkHost: "pbx.local"}, err: "neither"},
		{route: "tel:+15551234567", opts: LegOptions{TrunkHost: "t:99999"}, err: "bad port"},
	} {
		t.Run(tc.route, func(t *testing.T) {
			u, err := Target(tc.route, tc.opts)
			if tc.err != "" {
				require.ErrorIs(t, err, ErrRoute)
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, u.String())
		})
	}
}

func TestNewLegOverTLSAndTrunk(t *testing.T) {
	d := &batonv1.Dialog{RemoteUri: "sip:+4915112345678@carrier.example"}
	req, err := NewLeg("sips:queue@pbx.example", LegOptions{TLS: true}, d, CallerID{Host: "10.0.0.5"}, nil, "v=0\r\n")
	require.NoError(t, err)
	require.Equal(t, "TLS", req.Transport())
	require.Equal(t, "sips", req.From().Address.Scheme, "a sips: request has a sips: From")

	req, err = NewLeg("tel:+15551234567", LegOptions{TrunkHost: "trunk.example"}, d, CallerID{Host: "10.0.0.5"}, nil, "v=0\r\n")
	require.NoError(t, err)
	require.Equal(t, "UDP", req.Transport())
	require.Equal(t, "sip:+15551234567@trunk.example;user=phone", req.Recipient.String())
	require.Equal(t, "<sip:+15551234567@trunk.example;user=phone>", req.To().Value(), "the To names the number too")
}

// context_in says where a REFER carries the handoff's headers: in the
// Refer-To URI (the default), as the REFER's own headers, or both.
func TestReferContextPlacement(t *testing.T) {
	headers := []*batonv1.SipHeader{{Name: "X-Customer-Id", Value: "C-1"}, {Name: "X-Intent", Value: "billing"}}
	for _, tc := range []struct {
		context      string
		inURI, inOwn bool
	}{
		{"", true, false}, {ContextReferTo, true, false}, {ContextHeaders, false, true}, {ContextBoth, true, true},
	} {
		req, err := Refer(dialog(), 1, "sip:+4930123456@agents.example.com", headers, tc.context)
		require.NoError(t, err, tc.context)
		referTo := req.GetHeader("Refer-To").Value()
		require.Equal(t, tc.inURI, strings.Contains(referTo, "X-Customer-Id=C-1"), "%s: %s", tc.context, referTo)
		own := req.GetHeader("X-Customer-Id")
		require.Equal(t, tc.inOwn, own != nil, tc.context)
		if tc.inOwn {
			require.Equal(t, "C-1", own.Value())
			require.Equal(t, "billing", req.GetHeader("X-Intent").Value())
		}
	}
	_, err := Refer(dialog(), 1, "sip:a@b", headers, "somewhere")
	require.ErrorContains(t, err, `context_in "somewhere"`)
	_, err = Refer(dialog(), 1, "sip:a@b", []*batonv1.SipHeader{{Name: "X-A", Value: "a\r\nVia: x"}}, ContextHeaders)
	require.Error(t, err, "an invalid header is refused in every placement")
}
