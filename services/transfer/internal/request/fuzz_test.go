package request

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// wireHeaders serialises req as sipgo sends it and checks the head: every
// line ends with CRLF and holds no other CR, LF or NUL, and there is one
// header line per header of req (a value that smuggled a line in would
// make one more). It returns how many lines each header name has.
func wireHeaders(t *testing.T, req *sip.Request) map[string]int {
	t.Helper()
	wire := req.String()
	head, _, ok := strings.Cut(wire, "\r\n\r\n")
	if !ok {
		t.Fatalf("no end of head: %q", wire)
	}
	if strings.Contains(head, "\x00") {
		t.Fatalf("NUL in the head: %q", head)
	}
	lines := strings.Split(head, "\r\n")
	if parts := strings.Split(lines[0], " "); len(parts) != 3 || parts[2] != "SIP/2.0" {
		t.Fatalf("request line %q", lines[0])
	}
	names := map[string]int{}
	for _, l := range lines {
		if strings.ContainsAny(l, "\r\n") {
			t.Fatalf("bare CR or LF in line %q", l)
		}
	}
	for _, l := range lines[1:] {
		name, _, ok := strings.Cut(l, ":")
		if !ok || strings.ContainsAny(name, " \t") {
			t.Fatalf("not a header line: %q", l)
		}
		names[strings.ToLower(name)]++
	}
	if len(lines)-1 != len(req.Headers()) {
		t.Fatalf("%d header lines for %d headers:\n%s", len(lines)-1, len(req.Headers()), head)
	}
	return names
}

func fuzzDialog(callID, localTag, remoteTag, remoteTarget, localContact string) *batonv1.Dialog {
	d := dialog()
	d.CallId, d.LocalTag, d.RemoteTag, d.RemoteTarget, d.LocalContact = callID, localTag, remoteTag, remoteTarget, localContact
	return d
}

// FuzzRefer: a REFER built from any route, header and dialog snapshot is
// either refused or one message whose only Refer-To is ours and whose
// header lines carry no CR, LF or NUL.
func FuzzRefer(f *testing.F) {
	f.Add("sip:+4930123456@agents.example.com", "X-Intent", "billing", "call-1@sbc", "a", "b", "sip:sbc@127.0.0.1", "<sip:baton@127.0.0.1>")
	f.Add("sip:a@b", "X-Intent", "a\r\nRefer-To: sip:evil@x", "c", "a", "b", "sip:sbc@h", "")
	f.Add("sip:a@b?Refer-To=sip:evil@x", "X-A", "b", "c", "a", "b", "sip:sbc@h", "")
	f.Add("sip:a@b", "X-A: b", "c", "c\r\nVia: x", "a;x=y", "b", "sip:sbc@h\nX: y", "<sip:x>\x00")
	f.Fuzz(func(t *testing.T, route, name, value, callID, localTag, remoteTag, remoteTarget, contact string) {
		// Both places: the header in the Refer-To URI and as the REFER's own.
		req, err := Refer(fuzzDialog(callID, localTag, remoteTag, remoteTarget, contact), 1, route,
			[]*batonv1.SipHeader{{Name: name, Value: value}}, ContextBoth)
		if err != nil {
			return
		}
		names := wireHeaders(t, req)
		if names["refer-to"] != 1 || names["referred-by"] != 1 {
			t.Fatalf("Refer-To %d, Referred-By %d", names["refer-to"], names["referred-by"])
		}
		if strings.ContainsAny(req.GetHeader("Refer-To").Value(), "\r\n\x00") {
			t.Fatalf("Refer-To %q", req.GetHeader("Refer-To").Value())
		}
	})
}

// FuzzBye: a BYE with any custom header and dialog snapshot is refused or
// carries exactly that header once, and nothing else was smuggled in.
func FuzzBye(f *testing.F) {
	f.Add("X-Handback", "queue=7", "call-1@sbc", "a", "b", "sip:sbc@127.0.0.1", "<sip:baton@127.0.0.1>")
	f.Add("X-A", "x\r\nRefer-To: sip:evil@x", "c", "a", "b", "sip:sbc@h", "")
	f.Add("X-A\r\nRefer-To", "sip:evil@x", "c", "a", "b", "sip:sbc@h", "")
	f.Add("X-A", "b", "c d", "a\x00", "b", "sip:sbc@h", "<sip:x>\r\nX: y")
	f.Fuzz(func(t *testing.T, name, value, callID, localTag, remoteTag, remoteTarget, contact string) {
		req, err := Bye(fuzzDialog(callID, localTag, remoteTag, remoteTarget, contact), 1,
			[]*batonv1.SipHeader{{Name: name, Value: value}})
		if err != nil {
			return
		}
		names := wireHeaders(t, req)
		if names["refer-to"] != 0 || names[strings.ToLower(name)] != 1 {
			t.Fatalf("headers %v", names)
		}
	})
}

// FuzzNewLeg: a warm transfer's INVITE from any route, header, caller id
// and trunk host is refused or one message whose header lines carry no
// CR, LF or NUL, with the custom header once and no Refer-To.
func FuzzNewLeg(f *testing.F) {
	f.Add("sip:queue@pbx.example:5080", "X-Intent", "billing", "sip:+4915112345678@carrier.example", "Baton", "trunk.example:5060", true)
	f.Add("tel:+15551234567", "X-A", "a\r\nRefer-To: sip:evil@x", "sip:a@b", "", "trunk.example", false)
	f.Add("sip:q@h?Refer-To=sip:evil@x", "X-A", "b", "<sip:a\r\n@b>", "", "", false)
	f.Add("1234", "X-A", "b", "sip:a;x@b", "x\"y", "trunk\r\nX: y", false)
	f.Fuzz(func(t *testing.T, route, name, value, remoteURI, display, trunk string, tls bool) {
		d := &batonv1.Dialog{LocalUri: "sip:+4930999@baton.example", RemoteUri: remoteURI}
		req, err := NewLeg(route, LegOptions{TLS: tls, TrunkHost: trunk}, d,
			CallerID{Policy: CallerIDCaller, DisplayName: strings.Map(noQuotesOrControls, display), Host: "10.0.0.5"},
			[]*batonv1.SipHeader{{Name: name, Value: value}}, "v=0\r\n")
		if err != nil {
			return
		}
		names := wireHeaders(t, req)
		if names["refer-to"] != 0 || names[strings.ToLower(name)] != 1 {
			t.Fatalf("headers %v", names)
		}
		if len(req.Recipient.Headers.Keys()) > 0 {
			t.Fatalf("Request-URI with headers: %s", req.Recipient.String())
		}
	})
}

// noQuotesOrControls drops what configuration refuses in a display name
// (quotes and control characters): the fuzz target takes the configured
// value as given.
func noQuotesOrControls(r rune) rune {
	if r == '"' || r < 0x20 || r == 0x7f {
		return -1
	}
	return r
}
