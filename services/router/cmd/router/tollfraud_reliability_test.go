//go:build reliability

package main

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/reliabilitytest"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

const tollFraudYAML = `destinations:
  - name: support
    route: sip:+4930123456@carrier.example
    default: true
allowlist:
  routes:
    - "sip:*@carrier.example"
    - "sips:*@carrier.example"
    - "tel:*"
    - 're:\+?[0-9]{4,15}'
  deny_numbers: ["+1900", "+1976", "+44 9", "+882", "+883"]
max_attempts: 1
on_all_failed: return_to_agent
max_handoffs_per_call: 2
`

// TestReliabilityTollFraudRefusedBeforeSIP drives the real router (agent
// API over HTTP) and the real transfer binary with handoff targets an
// attacker would try: premium-rate numbers in every spelling (tel:,
// sip: user parts, escapes, visual separators, bare numbers), foreign
// domains and glob-bypass tricks, URIs with embedded ?headers, maddr and
// other parameters. Each is answered 403, recorded as a HandoffRefused
// with its reason and counted in baton_router_refusals_total; the
// carrier's SBC (a raw UDP socket every dialog and the trunk point at)
// receives nothing for any of them, while an allowlisted target on the
// same pipeline does reach it. Then one call asks for handoffs until the
// cap (max_handoffs_per_call 2): the third is refused too_many_handoffs
// and the SBC saw exactly two REFERs for that call.
func TestReliabilityTollFraudRefusedBeforeSIP(t *testing.T) {
	p := startPipeline(t, pipelineConfig{routerYAML: tollFraudYAML})
	hostile := []struct{ target, code string }{
		// Premium-rate numbers, whatever pattern admits the route.
		{"tel:+19005550100", handoff.RefusedNumberDenied},
		{"tel:+1-900-555-0100", handoff.RefusedNumberDenied},
		{"tel:+1(900)555.0100", handoff.RefusedNumberDenied},
		{"sip:+19005550100@carrier.example", handoff.RefusedNumberDenied},
		{"sips:+19765550100@carrier.example", handoff.RefusedNumberDenied},
		{"sip:+19005550100@carrier.example;user=phone", handoff.RefusedNumberDenied},
		{"sip:%2B19005550100@carrier.example", handoff.RefusedNumberDenied},
		{"sip:+1-900-555-0100@carrier.example", handoff.RefusedNumberDenied},
		{"sip:+449098790000@carrier.example", handoff.RefusedNumberDenied},
		{"tel:+44-909-879-0000", handoff.RefusedNumberDenied},
		{"+19005550100", handoff.RefusedNumberDenied},
		{"+8821234567", handoff.RefusedNumberDenied},
		{"sip:+19005550100@evil.example", handoff.RefusedNumberDenied},
		// Foreign domains and ways around a glob.
		{"sip:x@evil.example", handoff.RefusedRouteNotAllowed},
		{"sips:x@evil.example", handoff.RefusedRouteNotAllowed},
		{"sip:x@carrier.example.evil.example", handoff.RefusedRouteNotAllowed},
		{"sip:x@evil.example;a=@carrier.example", handoff.RefusedRouteNotAllowed},
		{"sip:x@carrier.example;maddr=evil.example", handoff.RefusedRouteNotAllowed},
		{"sip:x@carrier.example;transport=tcp", handoff.RefusedRouteNotAllowed},
		{"sip:x:secret@carrier.example", handoff.RefusedRouteNotAllowed},
		{"SIP:+4930123456@carrier.example", handoff.RefusedRouteNotAllowed},
		{"sip:+4930123456@CARRIER.example", handoff.RefusedRouteNotAllowed},
		{"sip:+4930123456@evil.example:5060", handoff.RefusedRouteNotAllowed},
		{"sip:+4930123456@[2001:db8::1]", handoff.RefusedRouteNotAllowed},
		{"http://carrier.example/x", handoff.RefusedRouteNotAllowed},
		// Embedded URI headers and brackets.
		{"sip:a@carrier.example?Refer-To=sip:evil@x", handoff.RefusedRouteNotAllowed},
		{"sip:a@carrier.example?X-Intent=a&Refer-To=sip:evil@x", handoff.RefusedRouteNotAllowed},
		{"<sip:a@carrier.example>", handoff.RefusedRouteNotAllowed},
		{"sip:a@carrier.example>;x=<sip:evil@x", handoff.RefusedRouteNotAllowed},
		{"tel:+4930123456;phone-context=evil.example", handoff.RefusedRouteNotAllowed},
		{"tel:+4930123456?Refer-To=x", handoff.RefusedRouteNotAllowed},
		// Names nobody configured.
		{"premium", handoff.RefusedUnknownDestination},
		{"Support-2", handoff.RefusedUnknownDestination},
	}
	hostileCalls := map[string]string{} // dialog Call-ID → target
	for i, h := range hostile {
		id := fmt.Sprintf("fraud-%d", i)
		p.startCall(t, id, nil)
		code, body := p.call(t, "POST", "/v1/calls/"+id+"/handoff", map[string]string{"destination": h.target})
		require.Equal(t, 403, code, "%s: %v", h.target, body)
		require.Equal(t, h.code, body["code"], "%s: %v", h.target, body)
		hostileCalls["sip-"+id] = h.target
	}

	// The control: an allowlisted target on the same pipeline is sent.
	p.startCall(t, "fraud-ok", nil)
	code, body := p.call(t, "POST", "/v1/calls/fraud-ok/handoff", map[string]string{"destination": "sip:+4930777000@carrier.example"})
	require.Equal(t, 202, code, "%v", body)

	// The cap: two handoffs (each REFER declined, the call back with the
	// agent), the third refused.
	p.startCall(t, "fraud-cap", nil)
	for i := range 2 {
		code, body := p.call(t, "POST", "/v1/calls/fraud-cap/handoff", map[string]string{"destination": "support"})
		require.Equal(t, 202, code, "handoff %d: %v", i+1, body)
		h := p.handoffStatus(t, "fraud-cap", body["request_id"].(string), "failed")
		require.EqualValues(t, 603, h["sip_code"], "handoff %d was really sent and declined: %v", i+1, h)
	}
	code, body = p.call(t, "POST", "/v1/calls/fraud-cap/handoff", map[string]string{"destination": "support"})
	require.Equal(t, 403, code, "%v", body)
	require.Equal(t, handoff.RefusedTooManyHandoffs, body["code"])
	p.handoffStatus(t, "fraud-cap", body["request_id"].(string), "refused")
	p.handoffStatus(t, "fraud-ok", "", "failed")

	// The log: one refusal per hostile request, with its reason; commands
	// only for the control and the two capped handoffs.
	wantRefusals := len(hostile) + 1
	recs := p.records(t, "baton.handoffs", func(evs []events.Event) bool {
		return len(evs) >= wantRefusals+3
	})
	refusedBy := map[string]string{}
	commands := map[string]int{}
	for _, ev := range recs {
		switch m := ev.Data.(type) {
		case *batonv1.HandoffRefused:
			refusedBy[m.GetCallId()] = m.GetReasonCode()
		case *batonv1.HandoffCommand:
			commands[m.GetCallId()]++
			require.NotContains(t, hostileCalls, m.GetDialog().GetCallId(), "a command for a hostile target: %v", m)
		}
	}
	for i, h := range hostile {
		require.Equal(t, h.code, refusedBy[fmt.Sprintf("fraud-%d", i)], h.target)
	}
	require.Equal(t, handoff.RefusedTooManyHandoffs, refusedBy["fraud-cap"])
	require.Equal(t, map[string]int{"fraud-ok": 1, "fraud-cap": 2}, commands)

	// The wire: the control's REFER and the capped call's two, nothing else.
	reqs := p.far.requests(t)
	refers := map[string]int{}
	for _, r := range reqs {
		require.NotContains(t, hostileCalls, r.callID, "%s reached the SBC for target %s", r.method, hostileCalls[r.callID])
		if r.method == "REFER" {
			refers[r.callID]++
		}
	}
	require.Equal(t, 2, refers["sip-fraud-cap"], "exactly max_handoffs_per_call REFERs for the capped call")
	require.Positive(t, refers["sip-fraud-ok"], "the allowlisted target was sent")
	for _, r := range reqs {
		if r.method == "REFER" && r.callID == "sip-fraud-ok" {
			require.Equal(t, []string{"<sip:+4930777000@carrier.example>"}, r.headers["refer-to"])
		}
	}

	// The counts.
	byCode := map[string]int{}
	for _, h := range hostile {
		byCode[h.code]++
	}
	byCode[handoff.RefusedTooManyHandoffs]++
	var counted []string
	total := 0.0
	for code, n := range byCode {
		v := metric(t, p.routerOps, "baton_router_refusals_total", map[string]string{"reason": code})
		require.Equal(t, float64(n), v, "baton_router_refusals_total{reason=%q}", code)
		total += v
		counted = append(counted, fmt.Sprintf("%s=%.0f", code, v))
	}
	sort.Strings(counted)
	executed := metric(t, p.transferOps, "baton_transfer_commands_total", map[string]string{"method": "refer"})
	require.Equal(t, 3.0, executed, "transfer executed the control and the two capped handoffs only")
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item:   4,
		Test:   t.Name(),
		Load:   fmt.Sprintf("%d calls through router (agent API over HTTP) and the transfer binary on kfake; SBC a raw UDP socket", len(hostile)+2),
		Faults: "an agent (or a prompt-injected LLM) asking for fraudulent transfer targets and repeated handoffs",
		Inputs: fmt.Sprintf("%d hostile targets: premium prefixes (+1900, +1976, +44 9, +882) as tel:, sip:, sips:, escaped, separated, bare; foreign domains, glob bypasses, maddr, transport, password, case; ?headers, brackets, tel: params; unknown names; plus 3 handoff requests on one call with max_handoffs_per_call 2", len(hostile)),
		Lost: fmt.Sprintf("0 of %d hostile targets sent SIP (0 datagrams, 0 commands); %.0f refusals counted (%s); capped call: %d REFERs, 3rd request refused; %d requests reached the SBC, all from allowed handoffs",
			len(hostile), total, strings.Join(counted, ", "), refers["sip-fraud-cap"], len(reqs)),
	})
}
