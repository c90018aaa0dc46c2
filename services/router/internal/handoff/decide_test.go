package handoff

import (
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/router/internal/rules"
)

func when(t testing.TB, expr string) Condition {
	t.Helper()
	env, err := rules.NewEnv()
	require.NoError(t, err)
	c, err := env.Compile(expr)
	require.NoError(t, err)
	return c
}

func one(t testing.TB, ds []Decision) *batonv1.HandoffCommand {
	t.Helper()
	cmds := commands(t, ds)
	require.Len(t, cmds, 1)
	return cmds[0]
}

func TestRulesConditionsAndActions(t *testing.T) {
	vip := Rule{Name: "vip", When: when(t, `caller_number == '+15551230001'`), Destination: "sales"}
	branch := Rule{Name: "branch", When: when(t, `callee_number.startsWith('+1800')`),
		SetVariables: map[string]string{"line": "tollfree"}, SetState: map[string]string{"flow": "tollfree"}, Continue: true}
	gold := Rule{Name: "gold", When: when(t, `state.flow == 'tollfree' && sip_headers['x-tier'][0] == 'gold'`), Destination: "support"}
	stop := Rule{Name: "leave-to-agent", When: when(t, `variables.customer_id == 'C-7'`)}
	after := Rule{Name: "after-stop", Destination: "sales"}
	for _, tc := range []struct {
		name      string
		rules     []Rule
		caller    string
		callee    string
		headers   []*batonv1.SipHeader
		vars      map[string]string
		wantDest  string
		wantRule  string
		wantState map[string]string
	}{
		{name: "vip caller hands off at once", rules: []Rule{vip}, caller: "+15551230001", callee: "+15559870002",
			wantDest: "sales", wantRule: "rule:vip"},
		{name: "callee is not caller", rules: []Rule{vip}, caller: "+15559870002", callee: "+15551230001"},
		{name: "set then continue to a rule that reads it", rules: []Rule{branch, gold}, caller: "+1", callee: "+18005550100",
			headers: []*batonv1.SipHeader{{Name: "X-Tier", Value: "gold"}}, wantDest: "support", wantRule: "rule:gold",
			wantState: map[string]string{"flow": "tollfree"}},
		{name: "set without match of the next", rules: []Rule{branch, gold}, caller: "+1", callee: "+18005550100",
			headers: []*batonv1.SipHeader{{Name: "X-Tier", Value: "silver"}}, wantState: map[string]string{"flow": "tollfree"}},
		{name: "a match without handoff stops the rules", rules: []Rule{stop, after}, caller: "+1", callee: "+2",
			vars: map[string]string{"Customer-Id": "C-7"}},
		{name: "no match goes on", rules: []Rule{stop, after}, caller: "+1", callee: "+2",
			vars: map[string]string{"Customer-Id": "C-8"}, wantDest: "sales", wantRule: "rule:after-stop"},
		{name: "an evaluation error is no match", rules: []Rule{gold, after}, caller: "+1", callee: "+2",
			wantDest: "sales", wantRule: "rule:after-stop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := newFold(t, tc.rules...)
			msg := started("c1", tc.vars)
			msg.CallerNumber, msg.CalleeNumber, msg.SipHeaders = tc.caller, tc.callee, tc.headers
			ds := f.Apply(t.Context(), event(t, "c1", msg))
			f.Commit()
			v, found, _ := f.View("c1")
			require.True(t, found)
			if tc.wantState != nil {
				require.Equal(t, tc.wantState, v.State)
			}
			if tc.wantDest == "" {
				require.Empty(t, ds)
				require.Equal(t, StatusNone, v.Handoff.Status)
				return
			}
			cmd := one(t, ds)
			require.Equal(t, tc.wantDest, cmd.GetDestination())
			require.Equal(t, tc.wantRule, cmd.GetReason())
			require.Equal(t, StatusRequested, v.Handoff.Status)
		})
	}
}

func TestRuleSetVariablesReachTemplates(t *testing.T) {
	f, _ := newFold(t, Rule{Name: "set", SetVariables: map[string]string{"intent": "from-rule"}, Continue: true},
		Rule{Name: "go", Destination: "support"})
	cmd := one(t, f.Apply(t.Context(), event(t, "c1", started("c1", map[string]string{"Intent": "from-header", "Customer-Id": "C-1"}))))
	require.Equal(t, "from-rule", cmd.GetHeaders()[2].GetValue(), "a variable a rule set wins over the X- header")
}

func TestRulesDecideARequestWithoutDestination(t *testing.T) {
	billing := Rule{Name: "billing", When: when(t, `reason == 'billing_dispute'`), Destination: "sales"}
	f, _ := newFold(t, billing)
	require.Empty(t, f.Apply(t.Context(), event(t, "c1", started("c1", nil))), "reason is empty at start")
	cmd := one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Reason: "billing_dispute"})))
	require.Equal(t, "sales", cmd.GetDestination())
	require.Equal(t, "billing_dispute", cmd.GetReason(), "the request's reason is kept")

	f, _ = newFold(t, billing)
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	cmd = one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Reason: "other"})))
	require.Equal(t, "support", cmd.GetDestination(), "no rule: the default")
}

func TestRuleTimeIsTheEventTime(t *testing.T) {
	night := Rule{Name: "night", When: when(t, `time.getHours() >= 22`), Destination: "sales"}
	for _, tc := range []struct {
		at   time.Time
		want int
	}{
		{time.Date(2025, 3, 1, 23, 0, 0, 0, time.UTC), 1},
		{time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), 0},
	} {
		f, _ := newFold(t, night)
		ev, err := events.New("baton/test", "c1", started("c1", nil), tc.at)
		require.NoError(t, err)
		require.Len(t, f.Apply(t.Context(), ev), tc.want, "at %v", tc.at)
	}
}

func TestTargetsOutsideTheConfigAreRefused(t *testing.T) {
	table := testTable(t)
	var err error
	table.AllowedRoutes = make([]sipx.RoutePattern, 2)
	table.AllowedRoutes[0], err = sipx.NewRoutePattern("sip:*@pbx.example.com")
	require.NoError(t, err)
	table.AllowedRoutes[1], err = sipx.NewRoutePattern(`re:tel:\+1555[0-9]{7}`)
	require.NoError(t, err)
	table.AdHocAnswerTimeout = 30 * time.Second
	table.DeniedNumbers = []string{"+1555999"}
	for _, tc := range []struct {
		target     string
		wantCode   string
		wantMethod batonv1.Method
	}{
		{"nowhere", RefusedUnknownDestination, 0},
		// The glob matches each of these; none may go where it says.
		{"sip:x@evil.example;a=@pbx.example.com", RefusedRouteNotAllowed, 0},
		{"sip:x:pw@pbx.example.com", RefusedRouteNotAllowed, 0},
		{"sip:x@pbx.example.com;maddr=evil.example", RefusedRouteNotAllowed, 0},
		{"sip:+15559990000@pbx.example.com", RefusedNumberDenied, 0},
		{"tel:+1-555-999-0000", RefusedNumberDenied, 0},
		{"sip:+19005550100@premium.example", RefusedRouteNotAllowed, 0},
		{"tel:+19005550100", RefusedRouteNotAllowed, 0},
		{"sip:alice@pbx.example.com", "", batonv1.Method_METHOD_REFER},
		{"tel:+15551234567", "", batonv1.Method_METHOD_INVITE},
		{"tel:+155512345678", RefusedRouteNotAllowed, 0},
		{"sip:a?X-Evil=1@pbx.example.com", RefusedRouteNotAllowed, 0},
		{"sip:a\r\nVia: x@pbx.example.com", RefusedRouteNotAllowed, 0},
		{"5551", RefusedRouteNotAllowed, 0},
	} {
		t.Run(tc.target, func(t *testing.T) {
			f := New(table, discard())
			f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
			ds := f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Destination: tc.target, RequestId: "r9"}))
			if tc.wantCode != "" {
				r := refusal(t, ds)
				require.Equal(t, tc.wantCode, r.GetReasonCode(), r.GetDetail())
				require.Equal(t, printable(tc.target), r.GetDestination(), "the target, control characters replaced")
				require.NotContains(t, r.GetDestination()+r.GetDetail(), "\r")
				require.NotContains(t, r.GetDestination()+r.GetDetail(), "\n")
				require.Equal(t, "r9", r.GetRequestId())
				require.Equal(t, "c1", r.GetCallId())
				f.Commit()
				v, _, _ := f.View("c1")
				require.Equal(t, StatusRefused, v.Handoff.Status)
				require.Equal(t, tc.wantCode, v.Handoff.RefusedCode)
				return
			}
			cmd := one(t, ds)
			require.Equal(t, tc.target, cmd.GetRoute())
			require.Equal(t, tc.wantMethod, cmd.GetMethod())
			if tc.wantMethod == batonv1.Method_METHOD_INVITE {
				require.Equal(t, "tls_srtp", cmd.GetEncryption())
			} else {
				require.Empty(t, cmd.GetEncryption())
			}
			require.Empty(t, cmd.GetHeaders())
		})
	}
}

func TestAgentHeadersOnlyWhereConfigured(t *testing.T) {
	f, logs := newFold(t)
	f.Apply(t.Context(), event(t, "c1", started("c1", map[string]string{"Customer-Id": "C-42", "Intent": "x"})))
	cmd := one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Headers: map[string]string{
		"x-intent":          "agent-says", // configured (names ignore case): overrides the template
		"X-Internal-Secret": "s3cr3t",     // not configured: never sent
	}})))
	require.Equal(t, []*batonv1.SipHeader{
		{Name: "X-Baton-Call-Id", Value: "c1"},
		{Name: "X-Customer-Id", Value: "C-42"},
		{Name: "X-Intent", Value: "agent-says"},
	}, cmd.GetHeaders())
	require.Contains(t, logs.String(), `"headers":["X-Internal-Secret"]`)
	require.NotContains(t, logs.String(), "s3cr3t", "values of dropped headers are not logged")

	f, _ = newFold(t)
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	r := refusal(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Headers: map[string]string{"X-Intent": "a\r\nVia: evil"}})))
	require.Equal(t, RefusedInvalidHeader, r.GetReasonCode())
}

func TestMissingVariablePolicyRefuse(t *testing.T) {
	table := testTable(t)
	d := table.Destinations["support"]
	d.OnMissing = MissingRefuse
	table.Destinations["support"] = d
	f := New(table, discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", map[string]string{"Intent": "x"})))
	r := refusal(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{RequestId: "r1"})))
	require.Equal(t, RefusedMissingVariable, r.GetReasonCode())
	require.Equal(t, "missing variables: Customer-Id", r.GetDetail())

	// The agent can supply it.
	cmd := one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Variables: map[string]string{"customer_id": "C-5"}})))
	require.Equal(t, "C-5", cmd.GetHeaders()[1].GetValue())
}

func TestSecondRequestWhileInFlightIsRefused(t *testing.T) {
	f, _ := newFold(t)
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	first := one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{RequestId: "r1"})))
	r := refusal(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{RequestId: "r2", Destination: "sales"})))
	require.Equal(t, RefusedInProgress, r.GetReasonCode())
	f.Commit()
	v, _, _ := f.View("c1")
	require.Equal(t, first.GetCommandId(), v.Handoff.CommandID, "the refusal does not replace the handoff in flight")
	require.Equal(t, StatusRequested, v.Handoff.Status)
}

func outcome(cmd *batonv1.HandoffCommand, status batonv1.OutcomeStatus, code int32) *batonv1.TransferOutcome {
	return &batonv1.TransferOutcome{CommandId: cmd.GetCommandId(), CallId: cmd.GetCallId(), Status: status,
		Destination: cmd.GetDestination(), SipCode: code}
}

const (
	failed    = batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED
	accepted  = batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED
	succeeded = batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED
)

// fallbackTable has a → b → c, default d, all REFER.
func fallbackTable(t testing.TB, maxAttempts uint32, end EndPolicy) *Table {
	t.Helper()
	dest := func(name string, fallback ...string) Destination {
		return Destination{Name: name, Method: batonv1.Method_METHOD_REFER, Route: "sip:" + name + "@pbx.example.com",
			AnswerTimeout: time.Second, Fallback: fallback}
	}
	return &Table{
		Destinations: map[string]Destination{"a": dest("a", "b", "c"), "b": dest("b"), "c": dest("c"), "d": dest("d")},
		Default:      "d", MaxAttempts: maxAttempts, OnAllFailed: end,
	}
}

func TestFallbackFollowsTheListThenTheDefaultThenTheEndPolicy(t *testing.T) {
	f := New(fallbackTable(t, 5, EndHangup), discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	cmd := one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Destination: "a", RequestId: "r1", Reason: "billing"})))
	var got []string
	var attempts []uint32
	for range 4 {
		got = append(got, cmd.GetDestination())
		attempts = append(attempts, cmd.GetAttempt())
		// An accepted outcome changes nothing; the failure falls back.
		require.Empty(t, f.Apply(t.Context(), event(t, "c1", outcome(cmd, accepted, 202))))
		ev := event(t, "c1", outcome(cmd, failed, 603))
		next := one(t, f.Apply(t.Context(), ev))
		require.Equal(t, CommandID("c1", ev.ID), next.GetCommandId())
		require.Equal(t, "r1", next.GetRequestId())
		cmd = next
	}
	require.Equal(t, []string{"a", "b", "c", "d"}, got)
	require.Equal(t, []uint32{1, 2, 3, 4}, attempts)
	require.Equal(t, batonv1.Method_METHOD_BYE, cmd.GetMethod(), "every destination failed: hang up")
	require.Equal(t, ReasonAllFailed, cmd.GetReason())
	require.Equal(t, uint32(5), cmd.GetAttempt())
	require.Equal(t, "sip-c1", cmd.GetDialog().GetCallId())
	// The BYE's own outcome decides nothing more.
	require.Empty(t, f.Apply(t.Context(), event(t, "c1", outcome(cmd, failed, 481))))
	f.Commit()
	v, _, _ := f.View("c1")
	require.Equal(t, StatusFailed, v.Handoff.Status)
	require.True(t, v.Handoff.Ending)
	require.Equal(t, int32(603), v.Handoff.SipCode)
}

func TestFallbackIsBoundedByMaxAttempts(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  EndPolicy
		want []string // destinations of the commands, then "BYE" for the hangup
	}{
		{"hangup", EndHangup, []string{"a", "b", "BYE"}},
		{"return to agent", EndReturnToAgent, []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := New(fallbackTable(t, 2, tc.end), discard())
			f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
			ds := f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Destination: "a"}))
			var got []string
			for len(ds) > 0 {
				cmd := one(t, ds)
				if cmd.GetMethod() == batonv1.Method_METHOD_BYE {
					got = append(got, "BYE")
					break
				}
				got = append(got, cmd.GetDestination())
				ds = f.Apply(t.Context(), event(t, "c1", outcome(cmd, failed, 486)))
			}
			require.Equal(t, tc.want, got)
			f.Commit()
			v, _, _ := f.View("c1")
			require.Equal(t, StatusFailed, v.Handoff.Status)
			require.Equal(t, int32(486), v.Handoff.SipCode)
		})
	}
}

func TestFallbackSkipsTriedAndIgnoresStaleOrDuplicateOutcomes(t *testing.T) {
	f := New(fallbackTable(t, 5, EndReturnToAgent), discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	// Asking for the default first: its fallback list is empty and it was
	// tried, so a failure returns to the agent at once.
	cmdD := one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Destination: "d"})))
	require.Empty(t, f.Apply(t.Context(), event(t, "c1", outcome(cmdD, failed, 500))))

	f = New(fallbackTable(t, 5, EndReturnToAgent), discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	cmdA := one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Destination: "a"})))
	failA := event(t, "c1", outcome(cmdA, failed, 603))
	cmdB := one(t, f.Apply(t.Context(), failA))
	require.Empty(t, f.Apply(t.Context(), failA), "a duplicate outcome decides nothing")
	require.Empty(t, f.Apply(t.Context(), event(t, "c1", outcome(cmdA, failed, 603))), "an outcome of an older command decides nothing")
	require.Empty(t, f.Apply(t.Context(), event(t, "c1", outcome(cmdB, succeeded, 200))))
	f.Commit()
	v, _, _ := f.View("c1")
	require.Equal(t, StatusSucceeded, v.Handoff.Status)
	require.Equal(t, "b", v.Handoff.Destination)
	require.Equal(t, uint32(2), v.Handoff.Attempt)
}

// swapSource is a Source whose table a test replaces, as a reload does.
type swapSource struct{ p atomic.Pointer[Table] }

func (s *swapSource) Current() *Table { return s.p.Load() }

func TestHandoffFinishesUnderTheTableItStartedWith(t *testing.T) {
	src := &swapSource{}
	src.p.Store(fallbackTable(t, 5, EndReturnToAgent))
	f := New(src, discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	cmdA := one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Destination: "a"})))

	// Reload: a's fallback list is gone and b moved.
	reloaded := fallbackTable(t, 5, EndReturnToAgent)
	a := reloaded.Destinations["a"]
	a.Fallback = nil
	reloaded.Destinations["a"] = a
	b := reloaded.Destinations["b"]
	b.Route = "sip:b@new.example.com"
	reloaded.Destinations["b"] = b
	src.p.Store(reloaded)

	cmdB := one(t, f.Apply(t.Context(), event(t, "c1", outcome(cmdA, failed, 603))))
	require.Equal(t, "b", cmdB.GetDestination(), "the old fallback list")
	require.Equal(t, "sip:b@pbx.example.com", cmdB.GetRoute(), "the old route")

	// A new call decides with the new table.
	f.Apply(t.Context(), event(t, "c2", started("c2", nil)))
	cmd2 := one(t, f.Apply(t.Context(), event(t, "c2", &batonv1.HandoffRequested{Destination: "b"})))
	require.Equal(t, "sip:b@new.example.com", cmd2.GetRoute())
}

func TestStateChangesAndTheView(t *testing.T) {
	f, _ := newFold(t)
	_, found, ended := f.View("c1")
	require.False(t, found)
	require.False(t, ended)

	msg := started("c1", map[string]string{"Customer-Id": "C-42"})
	msg.SipHeaders = []*batonv1.SipHeader{{Name: "Via", Value: "v1"}, {Name: "VIA", Value: "v2"}, {Name: "X-Customer-Id", Value: "C-42"}}
	f.Apply(t.Context(), event(t, "c1", msg))
	_, found, _ = f.View("c1")
	require.False(t, found, "uncommitted changes are not visible")
	f.Commit()

	f.Apply(t.Context(), event(t, "c1", &batonv1.CallStateChanged{Set: map[string]string{"tier": "gold", "draft": "1"}}))
	f.Apply(t.Context(), event(t, "c1", &batonv1.CallStateChanged{Removed: []string{"draft"}}))
	before, _, _ := f.View("c1")
	require.Empty(t, before.State)
	f.Commit()
	v, found, _ := f.View("c1")
	require.True(t, found)
	require.Equal(t, map[string]string{"tier": "gold"}, v.State)
	require.Equal(t, map[string][]string{"via": {"v1", "v2"}, "x-customer-id": {"C-42"}}, v.SipHeaders)
	require.Equal(t, map[string]string{"Customer-Id": "C-42"}, v.Variables)
	require.Equal(t, "+15551230001", v.CallerNumber)
	require.Equal(t, "+15559870002", v.CalleeNumber)

	// State reaches templates as {state.name}.
	table := testTable(t)
	d := table.Destinations["sales"]
	d.Headers = []Header{{Name: "X-Tier", Value: tpl(t, "{state.tier}")}}
	table.Destinations["sales"] = d
	f2 := New(table, discard())
	f2.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	f2.Apply(t.Context(), event(t, "c1", &batonv1.CallStateChanged{Set: map[string]string{"tier": "gold"}}))
	cmd := one(t, f2.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Destination: "sales"})))
	require.Equal(t, "gold", cmd.GetHeaders()[0].GetValue())

	// A rolled-back state change is undone; the view keeps the committed one.
	f.Apply(t.Context(), event(t, "c1", &batonv1.CallStateChanged{Set: map[string]string{"tier": "bronze"}}))
	f.Rollback()
	f.Commit()
	v, _, _ = f.View("c1")
	require.Equal(t, "gold", v.State["tier"])

	f.Apply(t.Context(), event(t, "c1", &batonv1.CallEnded{}))
	f.Commit()
	_, found, ended = f.View("c1")
	require.False(t, found)
	require.True(t, ended)
}

func TestTombstonesAreBounded(t *testing.T) {
	ts := newTombstones(2)
	ts.add("a")
	ts.add("b")
	ts.add("b")
	require.True(t, ts.has("a"))
	ts.add("c")
	require.False(t, ts.has("a"))
	require.True(t, ts.has("b"))
	require.True(t, ts.has("c"))
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
