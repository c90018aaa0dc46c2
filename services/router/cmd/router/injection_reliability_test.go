//go:build reliability

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/events/eventscan"
	"github.com/baton-voice/baton/pkg/reliabilitytest"
	"github.com/baton-voice/baton/services/router/internal/api"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

const injectionYAML = `destinations:
  - name: support
    route: sip:+4930123456@carrier.example
    default: true
    headers:
      X-Intent: "{intent}"
      X-Customer-Id: "{Customer-Id}"
      X-Name: "{results.data.name}"
      X-Tier: "{state.tier}"
max_attempts: 1
on_all_failed: return_to_agent
`

// injections are what a hostile value carries to break out of a header.
var injections = []string{
	"\r\nRefer-To: sip:evil@x",
	"\nRefer-To: sip:evil@x",
	"\rRefer-To: sip:evil@x",
	"\x00",
	"\r\n\r\nINVITE sip:evil@x SIP/2.0",
}

// benignName is legal but awkward: it must reach the carrier intact.
const benignName = "Zoë O'Brien & Co <VIP> 100%; a=b, \"quoted\""

// TestReliabilityRouterRefusesHeaderInjection drives the real router and
// the transfer binary with values carrying CR, LF or NUL on every path
// that ends in a header: agent API headers (values and names with ':',
// spaces, CRLF), variables, state, destination, metric tags and
// utterance are refused 400 before anything is published and counted in
// baton_router_api_rejected_total; a template rendering hostile data the
// API never saw (call variables from a compromised ingress, the pre-call
// webhook's answer) is refused invalid_header before any command, counted
// in baton_router_refusals_total. No record the router produced holds CR,
// LF or NUL; the carrier's SBC (a raw UDP socket) gets only the benign
// call's REFER, whose headers arrive intact in its Refer-To.
func TestReliabilityRouterRefusesHeaderInjection(t *testing.T) {
	var hookMu sync.Mutex
	hookData := map[string]string{} // call id → results.data.name
	webhook := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			CallID string `json:"call_id"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		hookMu.Lock()
		name, ok := hookData[body.CallID]
		hookMu.Unlock()
		if !ok {
			name = benignName
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"name": name}})
	})
	p := startPipeline(t, pipelineConfig{routerYAML: injectionYAML, webhook: webhook})
	waitPreCall := func(id string) {
		require.Eventually(t, func() bool {
			_, b := p.call(t, "GET", "/v1/calls/"+id, nil)
			return b["results"] != nil
		}, 30*time.Second, 20*time.Millisecond, "no pre-call data for %s", id)
	}

	// 1. The agent API: 400 before anything is published.
	p.startCall(t, "inj-api", nil)
	waitPreCall("inj-api")
	type apiCase struct {
		method, path string
		body         any
		op, reason   string
	}
	var cases []apiCase
	handoffPath, statePath, metricsPath := "/v1/calls/inj-api/handoff", "/v1/calls/inj-api/state", "/v1/calls/inj-api/metrics"
	for _, inj := range injections {
		cases = append(cases,
			apiCase{"POST", handoffPath, map[string]any{"headers": map[string]string{"X-Intent": "billing" + inj}}, "handoff", api.RejectInvalidHeader},
			apiCase{"POST", handoffPath, map[string]any{"headers": map[string]string{"X-Intent" + inj: "billing"}}, "handoff", api.RejectInvalidHeader},
			apiCase{"POST", handoffPath, map[string]any{"variables": map[string]string{"intent": "billing" + inj}}, "handoff", api.RejectInvalidVariable},
			apiCase{"POST", handoffPath, map[string]any{"variables": map[string]string{"intent" + inj: "billing"}}, "handoff", api.RejectInvalidVariable},
			apiCase{"POST", handoffPath, map[string]any{"destination": "support" + inj}, "handoff", api.RejectInvalidDestination},
			apiCase{"POST", handoffPath, map[string]any{"reason": "billing" + inj}, "handoff", api.RejectInvalidReason},
			apiCase{"PATCH", statePath, map[string]any{"tier": "gold" + inj}, "state", api.RejectInvalidState},
			apiCase{"PATCH", statePath, map[string]any{"tier" + inj: "gold"}, "state", api.RejectInvalidState},
			apiCase{"POST", metricsPath, map[string]any{"name": "sentiment", "value": 1, "tags": map[string]string{"a": "b" + inj}}, "metrics", api.RejectInvalidMetric},
		)
	}
	for _, name := range []string{"X-Intent: x", "X Intent", "X-Intent\t", "Refer-To", "Via", ":"} {
		cases = append(cases, apiCase{"POST", handoffPath, map[string]any{"headers": map[string]string{name: "v"}}, "handoff", api.RejectInvalidHeader})
	}
	cases = append(cases, apiCase{"POST", handoffPath, map[string]any{"utterance": "a\x00b"}, "handoff", api.RejectInvalidUtterance})
	apiRejected := map[[2]string]int{}
	for _, c := range cases {
		code, body := p.call(t, c.method, c.path, c.body)
		require.Equal(t, 400, code, "%s %s %v: %v", c.method, c.path, c.body, body)
		apiRejected[[2]string{c.op, c.reason}]++
	}

	// 2. Templates over data the API never saw: call variables published
	// by a compromised ingress, and the pre-call webhook's answer.
	var templateCalls []string
	for i, inj := range injections {
		id := fmt.Sprintf("inj-var-%d", i)
		p.startCall(t, id, map[string]string{"Customer-Id": "C-1" + inj})
		waitPreCall(id)
		templateCalls = append(templateCalls, id)
		id = fmt.Sprintf("inj-precall-%d", i)
		hookMu.Lock()
		hookData[id] = "Zoë" + inj
		hookMu.Unlock()
		p.startCall(t, id, nil)
		waitPreCall(id)
		templateCalls = append(templateCalls, id)
	}
	for _, id := range templateCalls {
		code, body := p.call(t, "POST", "/v1/calls/"+id+"/handoff", map[string]any{"reason": "billing_dispute"})
		require.Equal(t, 202, code, "%s: %v", id, body)
		h := p.handoffStatus(t, id, body["request_id"].(string), "refused")
		require.Equal(t, handoff.RefusedInvalidHeader, h["refused_code"], "%s: %v", id, h)
	}

	// 3. The benign call: awkward but legal values everywhere, and an
	// utterance whose line breaks become spaces.
	p.startCall(t, "inj-benign", map[string]string{"Customer-Id": "C-1001 & <x>"})
	waitPreCall("inj-benign")
	code, body := p.call(t, "PATCH", "/v1/calls/inj-benign/state", map[string]any{"tier": "gold; q=1, \"vip\""})
	require.Equal(t, 202, code, "%v", body)
	require.Eventually(t, func() bool {
		_, b := p.call(t, "GET", "/v1/calls/inj-benign", nil)
		st, _ := b["state"].(map[string]any)
		return st["tier"] != nil
	}, 30*time.Second, 20*time.Millisecond)
	code, body = p.call(t, "POST", "/v1/calls/inj-benign/handoff", map[string]any{
		"reason": "billing_dispute", "utterance": "I want to\r\ndispute\nmy bill", "variables": map[string]string{"intent": "billing / dispute?"},
	})
	require.Equal(t, 202, code, "%v", body)
	p.handoffStatus(t, "inj-benign", body["request_id"].(string), "failed")

	// Every record the router produced (commands, refusals, and the
	// events its API and pre-call fetcher published) is clean.
	handoffs := p.records(t, "baton.handoffs", func(evs []events.Event) bool { return len(evs) >= len(templateCalls)+1 })
	calls := p.records(t, "baton.calls", func(evs []events.Event) bool { return len(evs) > 0 })
	scanned, refusals := 0, 0
	var commands []*batonv1.HandoffCommand
	for _, ev := range append(handoffs, calls...) {
		if ev.Source != api.Source {
			continue // what the test published as ingress, and transfer's outcomes
		}
		scanned++
		require.NotContains(t, ev.Subject+ev.ID, "\r")
		field, ok := eventscan.Find(ev.Data)
		require.True(t, ok, "%s of call %s carries a control character: %q", ev.Type, ev.Subject, field)
		switch m := ev.Data.(type) {
		case *batonv1.HandoffCommand:
			commands = append(commands, m)
		case *batonv1.HandoffRefused:
			refusals++
			require.Equal(t, handoff.RefusedInvalidHeader, m.GetReasonCode(), m.GetDetail())
		case *batonv1.HandoffRequested:
			if m.GetCallId() == "inj-benign" {
				require.Equal(t, "I want to dispute my bill", m.GetUtterance())
			}
		}
	}
	require.Len(t, commands, 1, "one command: the benign call's")
	require.Equal(t, len(templateCalls), refusals)
	sent := map[string]string{}
	for _, h := range commands[0].GetHeaders() {
		sent[h.GetName()] = h.GetValue()
	}
	require.Equal(t, map[string]string{"X-Customer-Id": "C-1001 & <x>", "X-Intent": "billing / dispute?",
		"X-Name": benignName, "X-Tier": "gold; q=1, \"vip\""}, sent)

	// The wire: the benign REFER alone, its headers intact in the Refer-To.
	reqs := p.far.requests(t)
	require.NotEmpty(t, reqs)
	for _, r := range reqs {
		require.Equal(t, "sip-inj-benign", r.callID, "%s of another call reached the SBC", r.method)
		require.Equal(t, "REFER", r.method)
		require.Len(t, r.headers["refer-to"], 1)
		u, err := url.Parse(strings.Trim(r.headers["refer-to"][0], "<>"))
		require.NoError(t, err)
		got := map[string]string{}
		for _, kv := range strings.Split(u.RawQuery, "&") {
			k, v, _ := strings.Cut(kv, "=")
			uv, err := url.PathUnescape(v)
			require.NoError(t, err)
			got[k] = uv
		}
		require.Equal(t, map[string]string{"X-Customer-Id": "C-1001 & <x>", "X-Intent": "billing / dispute?",
			"X-Name": benignName, "X-Tier": "gold; q=1, \"vip\""}, got)
	}

	// The counts.
	var counted []string
	rejected := 0.0
	for k, n := range apiRejected {
		v := metric(t, p.routerOps, "baton_router_api_rejected_total", map[string]string{"operation": k[0], "reason": k[1]})
		require.Equal(t, float64(n), v, "baton_router_api_rejected_total%v", k)
		rejected += v
		counted = append(counted, fmt.Sprintf("%s/%s=%.0f", k[0], k[1], v))
	}
	sort.Strings(counted)
	refused := metric(t, p.routerOps, "baton_router_refusals_total", map[string]string{"reason": handoff.RefusedInvalidHeader})
	require.Equal(t, float64(len(templateCalls)), refused)
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item:   2,
		Test:   t.Name(),
		Load:   fmt.Sprintf("%d calls through router (agent API over HTTP, pre-call webhook) and the transfer binary on kfake; SBC a raw UDP socket", len(templateCalls)+2),
		Faults: "hostile agent requests; a compromised ingress and webhook feeding templates",
		Inputs: fmt.Sprintf("%d API writes (CRLF, LF, CR, NUL in header values and names, variables, state, destination, reason, tags, utterance; names with ':', space, tab; non-X names) and %d template renderings of hostile call variables and pre-call data",
			len(cases), len(templateCalls)),
		Lost: fmt.Sprintf("0 hostile values published or sent: %.0f API writes refused 400 (%s), %.0f renderings refused invalid_header; %d router records scanned, 0 with CR/LF/NUL; %d SIP requests on the wire, all the benign call's, headers intact",
			rejected, strings.Join(counted, ", "), refused, scanned, len(reqs)),
	})
}
