//go:build reliability

package transfer

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-voice/baton/pkg/events/eventscan"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/reliabilitytest"
	"github.com/baton-voice/baton/pkg/sipx"
)

// injections are what a hostile value carries to break out of its header.
var injections = []string{
	"\r\nRefer-To: sip:evil@x",
	"\nRefer-To: sip:evil@x",
	"\rRefer-To: sip:evil@x",
	"a\x00b",
	"\r\n\r\nINVITE sip:evil@x SIP/2.0",
	"ok\r\n",
}

// badNames are header names no request may carry.
var badNames = []string{"X-Intent: x", "X Intent", "X-Intent\r\nRefer-To", "Refer-To", "X-Intent\x00", "Via", ":", "X-Intent\t"}

// TestReliabilityTransferRefusesHeaderInjection sends transfer REFER, BYE
// and INVITE commands over Kafka whose header values, header names,
// routes and dialog fields carry CR, LF or NUL (a compromised or buggy
// router), interleaved with benign commands whose values are legal but
// awkward. The far end is a raw UDP socket that keeps every datagram. No
// hostile command puts a byte on the wire; each fails "not sent" and is
// counted in baton_transfer_refused_total with its reason; every
// datagram that did travel has clean header lines and carries exactly
// the benign command's headers; no outcome holds CR, LF or NUL.
func TestReliabilityTransferRefusesHeaderInjection(t *testing.T) {
	metrics := NewMetrics(prometheus.NewRegistry())
	far := startRawSIP(t)
	hostport := net.JoinHostPort(far.addr().IP.String(), strconv.Itoa(far.addr().Port))
	h := start(t, 202, func(o *Options) {
		withInvite(func(io *InviteOptions) { io.TrunkHost = hostport })(o)
		o.Metrics = metrics
		o.MaxInFlight = 1024
	})

	type sent struct {
		cmd     *batonv1.HandoffCommand
		hostile bool
		what    string
	}
	var cmds []sent
	n := 0
	add := func(hostile bool, what string, cmd *batonv1.HandoffCommand) {
		n++
		cmd.CommandId = fmt.Sprintf("cmd-inj-%d", n)
		cmd.CallId = fmt.Sprintf("call-inj-%d", n)
		cmds = append(cmds, sent{cmd: cmd, hostile: hostile, what: what})
	}
	dialog := func(i int) *batonv1.Dialog { return dialogTo(far.addr(), fmt.Sprintf("dlg-%d", i)) }
	benignHeaders := func(i int) []*batonv1.SipHeader {
		return []*batonv1.SipHeader{
			{Name: "X-Intent", Value: "billing & more <VIP> 100% ü; a=b, \"quoted\""},
			{Name: "X-Marker", Value: fmt.Sprintf("benign-%d", i)},
		}
	}
	methods := []batonv1.Method{batonv1.Method_METHOD_REFER, batonv1.Method_METHOD_BYE, batonv1.Method_METHOD_INVITE}
	build := func(m batonv1.Method, i int, headers []*batonv1.SipHeader) *batonv1.HandoffCommand {
		cmd := &batonv1.HandoffCommand{Method: m, Destination: "queue", Headers: headers, Dialog: dialog(i), Attempt: 1,
			Reason: "billing_dispute", AnswerTimeout: durationpb.New(5 * time.Second)}
		switch m {
		case batonv1.Method_METHOD_REFER:
			cmd.Route = "sip:+4930123456@agents.example.com"
		case batonv1.Method_METHOD_INVITE:
			cmd.Route = "sip:queue@" + hostport
			cmd.Encryption = encUDPRTP
			cmd.Dialog.RemoteUri = "sip:+4915112345678@" + hostport
		}
		return cmd
	}
	benign := 0
	addBenign := func() {
		for _, m := range methods {
			benign++
			add(false, "benign", build(m, 1000+benign, benignHeaders(benign)))
		}
	}
	addBenign()
	for _, m := range methods {
		for j, inj := range injections {
			add(true, "header value", build(m, n, []*batonv1.SipHeader{{Name: "X-Intent", Value: "billing" + inj}, {Name: "X-Marker", Value: fmt.Sprintf("hostile-%d", n)}}))
			for _, field := range []string{"call_id", "local_tag", "remote_tag", "remote_target", "local_contact", "route_set"} {
				if m == batonv1.Method_METHOD_INVITE {
					continue // the new leg's dialog is its own
				}
				cmd := build(m, n, []*batonv1.SipHeader{{Name: "X-Marker", Value: fmt.Sprintf("hostile-%d", n)}})
				d := cmd.Dialog
				switch field {
				case "call_id":
					d.CallId += inj
				case "local_tag":
					d.LocalTag += inj
				case "remote_tag":
					d.RemoteTag += inj
				case "remote_target":
					d.RemoteTarget += inj
				case "local_contact":
					d.LocalContact = strings.TrimSuffix(d.LocalContact, ">") + inj + ">"
				case "route_set":
					d.RouteSet = []string{"<sip:proxy.example.com;lr" + inj + ">"}
				}
				add(true, "dialog "+field, cmd)
			}
			if m != batonv1.Method_METHOD_BYE {
				cmd := build(m, n, []*batonv1.SipHeader{{Name: "X-Marker", Value: fmt.Sprintf("hostile-%d", n)}})
				cmd.Route += inj
				add(true, "route", cmd)
			}
			if m == batonv1.Method_METHOD_INVITE {
				cmd := build(m, n, []*batonv1.SipHeader{{Name: "X-Marker", Value: fmt.Sprintf("hostile-%d", n)}})
				cmd.Dialog.RemoteUri = "sip:+49151" + inj + "@" + hostport
				add(true, "caller id", cmd)
			}
			if j%2 == 0 {
				addBenign()
			}
		}
		for _, name := range badNames {
			add(true, "header name", build(m, n, []*batonv1.SipHeader{{Name: name, Value: "v"}}))
		}
		if m != batonv1.Method_METHOD_BYE {
			for _, suffix := range []string{"?Refer-To=sip:evil@x", "?X-Intent=a", ">;x=<sip:evil@x", " x"} {
				cmd := build(m, n, nil)
				cmd.Route += suffix
				add(true, "route with URI headers", cmd)
			}
		}
	}
	addBenign()

	for _, c := range cmds {
		h.command(t, c.cmd)
	}
	var outcomes []*batonv1.TransferOutcome
	hostile := 0
	for _, c := range cmds {
		o := h.outcome(t, c.cmd.CommandId)
		outcomes = append(outcomes, o)
		if c.hostile {
			hostile++
			require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED.String(), o.GetStatus().String(), "%s: %s", c.what, o.GetDetail())
			require.Contains(t, o.GetDetail(), "not sent", "%s %q", c.what, o.GetDetail())
			continue
		}
		switch c.cmd.Method {
		case batonv1.Method_METHOD_REFER:
			requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
			h.fact(t, c.cmd.CallId, &batonv1.NotifyReceived{CallId: c.cmd.CallId, Event: "refer", SipfragStatus: 200, SipfragReason: "OK"})
			outcomes = append(outcomes, h.outcome(t, c.cmd.CommandId))
		case batonv1.Method_METHOD_BYE:
			requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)
		case batonv1.Method_METHOD_INVITE:
			requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, 486)
		}
	}
	for _, o := range outcomes {
		field, ok := eventscan.Find(o)
		require.True(t, ok, "outcome of %s carries a control character: %s", o.GetCommandId(), field)
	}

	// What travelled: only benign requests (and the ACKs of their
	// INVITEs), each clean.
	benignDialogs := map[string]*batonv1.HandoffCommand{}
	benignMarkers := map[string]*batonv1.HandoffCommand{}
	for _, c := range cmds {
		if c.hostile {
			continue
		}
		benignDialogs[c.cmd.Dialog.CallId] = c.cmd
		for _, hd := range c.cmd.Headers {
			if hd.Name == "X-Marker" {
				benignMarkers[hd.Value] = c.cmd
			}
		}
	}
	inviteCalls := map[string]bool{}
	seen := map[string]int{}
	var datagrams [][]byte
	require.Eventually(t, func() bool {
		datagrams = far.datagrams()
		return len(datagrams) >= benign // every benign request at least
	}, 10*time.Second, 10*time.Millisecond)
	time.Sleep(500 * time.Millisecond) // anything late (it must not be there)
	datagrams = far.datagrams()
	byMethod := map[string]int{}
	for _, d := range datagrams {
		m, err := scanWire(d)
		require.NoError(t, err)
		byMethod[m.method]++
		var cmd *batonv1.HandoffCommand
		switch m.method {
		case "INVITE":
			require.Len(t, m.headers["x-marker"], 1, "%s", d)
			cmd = benignMarkers[m.headers["x-marker"][0]]
			require.NotNil(t, cmd, "an INVITE of no benign command: %s", d)
			inviteCalls[m.callID] = true
		case "ACK":
			require.True(t, inviteCalls[m.callID], "ACK of no INVITE seen: %s", d)
			continue
		default:
			cmd = benignDialogs[m.callID]
			require.NotNil(t, cmd, "a %s of no benign command: %s", m.method, d)
		}
		seen[cmd.CommandId]++
		for _, want := range cmd.Headers {
			if m.method == "REFER" {
				continue
			}
			require.Equal(t, []string{want.Value}, m.headers[strings.ToLower(want.Name)], "%s %s", m.method, want.Name)
		}
		if m.method == "REFER" {
			require.Len(t, m.headers["refer-to"], 1, "one Refer-To: %s", d)
			got, err := sipx.ReferToHeaders(m.headers["refer-to"][0])
			require.NoError(t, err)
			want := make([]sipx.Header, 0, len(cmd.Headers))
			for _, hd := range cmd.Headers {
				want = append(want, sipx.Header{Name: hd.Name, Value: hd.Value})
			}
			require.Equal(t, want, got, "the headers ride in the Refer-To, intact")
		} else {
			require.Empty(t, m.headers["refer-to"], "%s carries no Refer-To", m.method)
		}
	}
	for _, c := range cmds {
		if !c.hostile {
			require.Positive(t, seen[c.cmd.CommandId], "benign %s %s reached the far end", c.cmd.Method, c.cmd.CommandId)
		}
	}

	reasons := map[string]float64{}
	total := 0.0
	for _, m := range []string{"refer", "bye", "invite"} {
		for _, r := range []string{RefusedInvalidHeader, RefusedInvalidRoute, RefusedInvalidDialog, RefusedOther} {
			v := testutil.ToFloat64(metrics.Refused.WithLabelValues(m, r))
			reasons[r] += v
			total += v
		}
	}
	require.Equal(t, float64(hostile), total, "every hostile command is counted with its reason")
	require.Zero(t, reasons[RefusedOther], "every refusal has a specific reason")
	var parts []string
	for r, v := range reasons {
		if v > 0 {
			parts = append(parts, fmt.Sprintf("%s=%.0f", r, v))
		}
	}
	sort.Strings(parts)
	var wire []string
	for m, c := range byMethod {
		wire = append(wire, fmt.Sprintf("%s %d", m, c))
	}
	sort.Strings(wire)
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item:   2,
		Test:   t.Name(),
		Load:   fmt.Sprintf("%d commands over Kafka (REFER, BYE, INVITE), real UDP far end", len(cmds)),
		Faults: "hostile commands from a compromised router",
		Inputs: fmt.Sprintf("%d hostile: CR/LF/CRLF/NUL in header values, dialog fields, routes and caller id; header names with ':', space, tab, CRLF, NUL, non-X; routes with ?headers; %d benign", hostile, len(cmds)-hostile),
		Lost: fmt.Sprintf("0 of %d hostile reached the wire (refused: %s); %d datagrams scanned (%s): 0 CR/LF/NUL in a header line; 0 control characters in %d outcomes",
			hostile, strings.Join(parts, ", "), len(datagrams), strings.Join(wire, ", "), len(outcomes)),
	})
}
