package handoff

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// preCallTable has one destination whose headers come from pre-call data,
// and "strict", which refuses a handoff with a missing variable.
func preCallTable(t testing.TB, rules ...Rule) *Table {
	t.Helper()
	headers := []Header{ // sorted by name, as config.Table makes them
		{Name: "X-Customer-Id", Value: tpl(t, "{Customer-Id}")},
		{Name: "X-Name", Value: tpl(t, "{name}")},
		{Name: "X-Tier", Value: tpl(t, "{results.data.account.tier}")},
	}
	tier := headers[2:]
	return &Table{
		Destinations: map[string]Destination{
			"support": {Name: "support", Method: batonv1.Method_METHOD_REFER, Route: "sip:support@pbx.example.com",
				Headers: headers, AnswerTimeout: time.Second},
			"vip": {Name: "vip", Method: batonv1.Method_METHOD_INVITE, Route: "sip:vip@pbx.example.com",
				Headers: tier, AnswerTimeout: time.Second, Encryption: EncryptionTLSSRTP},
			"strict": {Name: "strict", Method: batonv1.Method_METHOD_REFER, Route: "sip:strict@pbx.example.com",
				Headers: tier, AnswerTimeout: time.Second, OnMissing: MissingRefuse},
		},
		Default: "support", Rules: rules, MaxAttempts: 3,
	}
}

const crmJSON = `{"data":{"name":"Ada","customer_id":"P-7","account":{"tier":"gold","open_tickets":3}}}`

func precallEvent(t testing.TB, callID, data, errText string) events.Event {
	t.Helper()
	return event(t, callID, &batonv1.PreCallData{CallId: callID, DataJson: data, FetchedBy: "router-1", Error: errText})
}

func TestPreCallDataReachesTemplates(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pre     *events.Event // nil: no PreCallData folded
		data    string
		errText string
		vars    map[string]string
		want    []*batonv1.SipHeader
	}{
		{
			name: "data: results namespace, plain names over X- headers",
			data: crmJSON,
			want: []*batonv1.SipHeader{{Name: "X-Customer-Id", Value: "P-7"}, {Name: "X-Name", Value: "Ada"}, {Name: "X-Tier", Value: "gold"}},
		},
		{
			name: "agent variables over pre-call data",
			data: crmJSON, vars: map[string]string{"customer-id": "A-1", "name": "Bob"},
			want: []*batonv1.SipHeader{{Name: "X-Customer-Id", Value: "A-1"}, {Name: "X-Name", Value: "Bob"}, {Name: "X-Tier", Value: "gold"}},
		},
		{
			name:    "webhook error: X- headers only, missing renders empty",
			errText: "webhook answered 503 Service Unavailable",
			want:    []*batonv1.SipHeader{{Name: "X-Customer-Id", Value: "C-42"}, {Name: "X-Name", Value: ""}, {Name: "X-Tier", Value: ""}},
		},
		{
			name: "data that is not an object counts as an error",
			data: `["gold"]`,
			want: []*batonv1.SipHeader{{Name: "X-Customer-Id", Value: "C-42"}, {Name: "X-Name", Value: ""}, {Name: "X-Tier", Value: ""}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := New(preCallTable(t), discard())
			f.Apply(t.Context(), event(t, "c1", started("c1", map[string]string{"Customer-Id": "C-42"})))
			require.Empty(t, f.Apply(t.Context(), precallEvent(t, "c1", tc.data, tc.errText)))
			cmd := one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Variables: tc.vars})))
			require.Equal(t, tc.want, cmd.GetHeaders())
		})
	}
}

func TestPreCallDataFirstWins(t *testing.T) {
	f := New(preCallTable(t), discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	require.Empty(t, f.Apply(t.Context(), precallEvent(t, "c1", `{"data":{"account":{"tier":"gold"}}}`, "")))
	// A second fetch (another instance, a replay) changes nothing.
	require.Empty(t, f.Apply(t.Context(), precallEvent(t, "c1", `{"data":{"account":{"tier":"bronze"}}}`, "")))
	require.Empty(t, f.Apply(t.Context(), precallEvent(t, "c1", "", "timeout")))
	cmd := one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{})))
	require.Contains(t, cmd.GetHeaders(), &batonv1.SipHeader{Name: "X-Tier", Value: "gold"})
}

func TestPreCallDataForUnknownOrOtherCallIsSkipped(t *testing.T) {
	f := New(preCallTable(t), discard())
	require.Empty(t, f.Apply(t.Context(), precallEvent(t, "nobody", crmJSON, "")))
	require.Equal(t, 0, f.Calls())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	other := event(t, "c1", &batonv1.PreCallData{CallId: "c2", DataJson: crmJSON})
	require.Empty(t, f.Apply(t.Context(), other))
	f.Commit()
	require.True(t, f.AwaitsPreCall("c1", f.calls["c1"].startedID), "data naming another call is not the call's")
}

func TestMissingPreCallDataUnderRefusePolicy(t *testing.T) {
	f := New(preCallTable(t), discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	f.Apply(t.Context(), precallEvent(t, "c1", "", "connection refused"))
	r := refusal(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Destination: "strict"})))
	require.Equal(t, RefusedMissingVariable, r.GetReasonCode())
	require.Contains(t, r.GetDetail(), "results.data.account.tier")
}

func TestAfterPreCallRules(t *testing.T) {
	gold := Rule{Name: "gold", When: when(t, `has(results.data) && results.data.account.tier == 'gold'`), Destination: "vip", AfterPreCall: true}
	// A start rule that looks at results never sees pre-call data.
	early := Rule{Name: "early", When: when(t, `has(results.data)`), Destination: "support"}
	for _, tc := range []struct {
		name     string
		data     string
		errText  string
		wantDest string // "" no command
	}{
		{name: "gold customer handed off when the data is folded", data: crmJSON, wantDest: "vip"},
		{name: "other tier: no match", data: `{"data":{"account":{"tier":"bronze"}}}`},
		{name: "webhook error: the pass runs without data", errText: "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := New(preCallTable(t, early, gold), discard())
			require.Empty(t, f.Apply(t.Context(), event(t, "c1", started("c1", nil))), "start pass: no data, gold not tried")
			ev := precallEvent(t, "c1", tc.data, tc.errText)
			ds := f.Apply(t.Context(), ev)
			if tc.wantDest == "" {
				require.Empty(t, ds)
				return
			}
			cmd := one(t, ds)
			require.Equal(t, tc.wantDest, cmd.GetDestination())
			require.Equal(t, "rule:gold", cmd.GetReason())
			require.Equal(t, CommandID("c1", ev.ID), cmd.GetCommandId(), "the PreCallData is the trigger")
			require.Equal(t, []*batonv1.SipHeader{{Name: "X-Tier", Value: "gold"}}, cmd.GetHeaders())
		})
	}

	t.Run("not while a handoff is under way", func(t *testing.T) {
		f := New(preCallTable(t, gold), discard())
		f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
		one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Destination: "support"})))
		require.Empty(t, f.Apply(t.Context(), precallEvent(t, "c1", crmJSON, "")))
	})

	t.Run("a request without destination tries after-precall rules too", func(t *testing.T) {
		upgrade := Rule{Name: "upgrade", When: when(t, `has(results.data) && results.data.account.tier == 'gold' && reason == 'upgrade'`),
			Destination: "vip", AfterPreCall: true}
		f := New(preCallTable(t, upgrade), discard())
		f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
		// Before the data: no match, the default.
		cmd := one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Reason: "upgrade"})))
		require.Equal(t, "support", cmd.GetDestination())

		f = New(preCallTable(t, upgrade), discard())
		f.Apply(t.Context(), event(t, "c2", started("c2", nil)))
		require.Empty(t, f.Apply(t.Context(), precallEvent(t, "c2", crmJSON, "")), "reason is empty in the pre-call pass")
		cmd = one(t, f.Apply(t.Context(), event(t, "c2", &batonv1.HandoffRequested{Reason: "upgrade"})))
		require.Equal(t, "vip", cmd.GetDestination())
	})
}

func TestPreCallDataRollsBackAndShowsInTheView(t *testing.T) {
	f := New(preCallTable(t), discard())
	start := event(t, "c1", started("c1", nil))
	f.Apply(t.Context(), start)
	f.Commit()
	require.True(t, f.AwaitsPreCall("c1", start.ID))
	require.False(t, f.AwaitsPreCall("c1", "another-start"))
	require.False(t, f.AwaitsPreCall("c2", start.ID))

	f.Apply(t.Context(), precallEvent(t, "c1", crmJSON, ""))
	f.Rollback()
	f.Commit()
	require.True(t, f.AwaitsPreCall("c1", start.ID), "an aborted batch's data is gone")

	f.Apply(t.Context(), precallEvent(t, "c1", crmJSON, ""))
	require.True(t, f.AwaitsPreCall("c1", start.ID), "readers see committed state only")
	f.Commit()
	require.False(t, f.AwaitsPreCall("c1", start.ID))
	v, found, _ := f.View("c1")
	require.True(t, found)
	require.Equal(t, "gold", v.Results["data"].(map[string]any)["account"].(map[string]any)["tier"])
}

func TestDecodeResults(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // error substring; "" ok
	}{
		{in: `{}`},
		{in: ` {"data":{"n":1.5,"big":12345678901234567890,"l":[1,"a",null,true]}} `},
		{in: `[1]`, want: "want a JSON object, got a list"},
		{in: `null`, want: "got null"},
		{in: `"x"`, want: "got a string"},
		{in: `{"a":1} {"b":2}`, want: "data after the JSON value"},
		{in: `{"a":`, want: "not JSON"},
		{in: ``, want: "not JSON"},
		{in: `{"a":"` + strings.Repeat("x", MaxPreCallBytes) + `"}`, want: "more than 65536"},
	} {
		t.Run(tc.in[:min(len(tc.in), 30)], func(t *testing.T) {
			got, err := DecodeResults([]byte(tc.in))
			if tc.want != "" {
				require.ErrorIs(t, err, ErrPreCallData)
				require.ErrorContains(t, err, tc.want)
				return
			}
			require.NoError(t, err)
			require.NotNil(t, got)
		})
	}
	got, err := DecodeResults([]byte(`{"i":3,"f":1.5,"big":12345678901234567890}`))
	require.NoError(t, err)
	require.Equal(t, map[string]any{"i": int64(3), "f": 1.5, "big": 12345678901234567890.0}, got)
}

func TestWhisperRidesInEveryCommand(t *testing.T) {
	inv := func(name, whisper string, fallback ...string) Destination {
		return Destination{Name: name, Method: batonv1.Method_METHOD_INVITE, Route: "sip:" + name + "@pbx.example.com",
			AnswerTimeout: time.Second, Encryption: EncryptionTLSSRTP, Whisper: whisper, Fallback: fallback}
	}
	table := &Table{
		Destinations: map[string]Destination{
			"a": inv("a", "/var/lib/baton/a.wav", "b", "c"),
			"b": inv("b", "https://audio.example.com/b.wav"),
			"c": inv("c", ""),
			"d": {Name: "d", Method: batonv1.Method_METHOD_REFER, Route: "sip:d@pbx.example.com", AnswerTimeout: time.Second},
		},
		Default: "d", MaxAttempts: 5,
	}
	f := New(table, discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	cmd := one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Destination: "a"})))
	var got [][2]string
	for cmd != nil {
		got = append(got, [2]string{cmd.GetDestination(), cmd.GetWhisper()})
		ds := f.Apply(t.Context(), event(t, "c1", outcome(cmd, failed, 486)))
		cmd = nil
		if len(ds) > 0 && ds[0].Msg.(*batonv1.HandoffCommand).GetMethod() != batonv1.Method_METHOD_BYE {
			cmd = one(t, ds)
		}
	}
	require.Equal(t, [][2]string{
		{"a", "/var/lib/baton/a.wav"},
		{"b", "https://audio.example.com/b.wav"},
		{"c", ""},
		{"d", ""},
	}, got)
}
