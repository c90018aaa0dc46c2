package sipx

import (
	"errors"
	"testing"

	"github.com/emiago/sipgo/sip"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

func testDialog() *batonv1.Dialog {
	return &batonv1.Dialog{
		CallId: "call-1@sbc", LocalTag: "baton-tag", RemoteTag: "sbc-tag",
		LocalUri: "sip:agent@192.0.2.1", RemoteUri: "<sip:+15550100@198.51.100.7>",
		RemoteTarget: "<sip:sbc@198.51.100.7:5070>", RouteSet: []string{"<sip:198.51.100.9;lr>"},
		Transport: batonv1.Transport_TRANSPORT_UDP, LocalContact: "<sip:baton@192.0.2.1:5060>",
		RemoteAddress: "198.51.100.7:5060",
	}
}

// InDialog is RFC 3261 12.2.1.1 as both ingress and transfer send it.
func TestInDialog(t *testing.T) {
	req, err := InDialog(sip.BYE, testDialog(), 42)
	if err != nil {
		t.Fatal(err)
	}
	for got, want := range map[string]string{
		req.Recipient.String():    "sip:sbc@198.51.100.7:5070",
		req.Route().Value():       "<sip:198.51.100.9;lr>",
		req.From().Value():        "<sip:agent@192.0.2.1>;tag=baton-tag",
		req.To().Value():          "<sip:+15550100@198.51.100.7>;tag=sbc-tag",
		req.CSeq().Value():        "42 BYE",
		req.Destination():         "198.51.100.9:5060",
		req.Transport():           "UDP",
		req.Contact().Value():     "<sip:baton@192.0.2.1:5060>",
		req.CallID().Value():      "call-1@sbc",
		req.MaxForwards().Value(): "70",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}

	// Ingress's decided next hop wins over the route set.
	d := testDialog()
	d.NextHop, d.NextHopTransport = "198.51.100.7:5060", batonv1.Transport_TRANSPORT_TCP
	req, err = InDialog(sip.REFER, d, 1)
	if err != nil {
		t.Fatal(err)
	}
	if req.Destination() != "198.51.100.7:5060" || req.Transport() != "TCP" || req.Route().Value() != "<sip:198.51.100.9;lr>" {
		t.Errorf("decided hop: destination %s transport %s route %s", req.Destination(), req.Transport(), req.Route().Value())
	}

	for name, spoil := range map[string]func(*batonv1.Dialog){
		"strict router":      func(d *batonv1.Dialog) { d.RouteSet = []string{"<sip:198.51.100.9>"} },
		"tag not a token":    func(d *batonv1.Dialog) { d.RemoteTag = "a;b=c" },
		"call-id with space": func(d *batonv1.Dialog) { d.CallId = "a b" },
		"CRLF in local uri":  func(d *batonv1.Dialog) { d.LocalUri = "sip:a@b\r\nX: y" },
		"tel target":         func(d *batonv1.Dialog) { d.RemoteTarget = "tel:+15550100" },
		"unknown transport":  func(d *batonv1.Dialog) { d.RouteSet = []string{"<sip:198.51.100.9;lr;transport=sctp>"} },
		"missing remote tag": func(d *batonv1.Dialog) { d.RemoteTag = "" },
		"next hop not an IP": func(d *batonv1.Dialog) { d.NextHop = "sbc.example:5060" },
		"next hop multicast": func(d *batonv1.Dialog) { d.NextHop = "224.0.0.1:5060" },
	} {
		d := testDialog()
		spoil(d)
		if _, err := InDialog(sip.BYE, d, 1); !errors.Is(err, ErrDialog) && !errors.Is(err, ErrNextHop) {
			t.Errorf("%s: built, err %v", name, err)
		}
	}
	if _, err := InDialog(sip.BYE, testDialog(), 1<<31); !errors.Is(err, ErrDialog) {
		t.Errorf("cseq 2^31: %v", err)
	}
}

func TestSignalledHopRefusesNames(t *testing.T) {
	d := testDialog()
	d.RouteSet = []string{"<sip:sbc.attacker.example;lr;transport=tcp>"}
	_, transport, err := SignalledHop(d)
	if !errors.Is(err, ErrNextHop) || transport != "TCP" {
		t.Fatalf("a name: %v, transport %q", err, transport)
	}
}
