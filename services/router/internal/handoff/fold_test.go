package handoff

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/template"
)

var at = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func tpl(t testing.TB, src string) *template.Template {
	t.Helper()
	p, err := template.Parse(src)
	require.NoError(t, err)
	return p
}

func testTable(t testing.TB, rules ...Rule) *Table {
	t.Helper()
	return &Table{
		Destinations: map[string]Destination{
			"support": {
				Name:   "support",
				Method: batonv1.Method_METHOD_REFER,
				Route:  "sip:support@127.0.0.1:5090",
				Headers: []Header{
					{Name: "X-Baton-Call-Id", Value: tpl(t, "$call_id")},
					{Name: "X-Customer-Id", Value: tpl(t, "{Customer-Id}")},
					{Name: "X-Intent", Value: tpl(t, "{intent}")},
				},
				AnswerTimeout: 30 * time.Second,
			},
			"sales": {
				Name:          "sales",
				Method:        batonv1.Method_METHOD_INVITE,
				Route:         "tel:+15550001111",
				Headers:       []Header{{Name: "X-From", Value: tpl(t, "{from_phone_number}->{to_phone_number}")}},
				AnswerTimeout: 12 * time.Second,
			},
		},
		Default:     "support",
		Rules:       rules,
		MaxAttempts: 3,
	}
}

// commands returns the commands among ds, failing on anything else.
func commands(t testing.TB, ds []Decision) []*batonv1.HandoffCommand {
	t.Helper()
	var out []*batonv1.HandoffCommand
	for _, d := range ds {
		cmd, ok := d.Msg.(*batonv1.HandoffCommand)
		require.True(t, ok, "decision is a %T: %v", d.Msg, d.Msg)
		require.Equal(t, cmd.GetCommandId(), d.ID)
		out = append(out, cmd)
	}
	return out
}

// refusal returns the one refusal in ds.
func refusal(t testing.TB, ds []Decision) *batonv1.HandoffRefused {
	t.Helper()
	require.Len(t, ds, 1)
	r, ok := ds[0].Msg.(*batonv1.HandoffRefused)
	require.True(t, ok, "decision is a %T: %v", ds[0].Msg, ds[0].Msg)
	return r
}

func newFold(t testing.TB, rules ...Rule) (*Fold, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	return New(testTable(t, rules...), slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))), &logs
}

func event(t testing.TB, callID string, msg proto.Message) events.Event {
	t.Helper()
	ev, err := events.New("baton/test", callID, msg, at)
	require.NoError(t, err)
	return ev
}

func started(callID string, vars map[string]string) *batonv1.CallStarted {
	return &batonv1.CallStarted{
		Dialog: &batonv1.Dialog{
			CallId: "sip-" + callID, LocalTag: "lt", RemoteTag: "rt",
			RemoteTarget: "sip:caller@10.0.0.1:5060", RouteSet: []string{"<sip:p1;lr>"}, NextLocalCseq: 1,
		},
		Variables:    vars,
		CallerNumber: "+15551230001",
		CalleeNumber: "+15559870002",
	}
}

func TestRuleHandsOffOnCallStarted(t *testing.T) {
	f, _ := newFold(t, Rule{Name: "everyone", Destination: "support"})
	msg := started("c1", map[string]string{"Customer-Id": "C-42", "Intent": "billing"})
	ev := event(t, "c1", msg)

	cmds := commands(t, f.Apply(t.Context(), ev))
	require.Len(t, cmds, 1)
	cmd := cmds[0]
	require.Equal(t, CommandID("c1", ev.ID), cmd.GetCommandId())
	require.Len(t, cmd.GetCommandId(), 32)
	require.Equal(t, "c1", cmd.GetCallId())
	require.Equal(t, batonv1.Method_METHOD_REFER, cmd.GetMethod())
	require.Equal(t, "support", cmd.GetDestination())
	require.Equal(t, "sip:support@127.0.0.1:5090", cmd.GetRoute())
	require.Equal(t, "rule:everyone", cmd.GetReason())
	require.Equal(t, uint32(1), cmd.GetAttempt())
	require.Equal(t, 30*time.Second, cmd.GetAnswerTimeout().AsDuration())
	require.Equal(t, []*batonv1.SipHeader{
		{Name: "X-Baton-Call-Id", Value: "c1"},
		{Name: "X-Customer-Id", Value: "C-42"},
		{Name: "X-Intent", Value: "billing"},
	}, cmd.GetHeaders())
	require.True(t, proto.Equal(msg.GetDialog(), cmd.GetDialog()))
	require.NotSame(t, msg.GetDialog(), cmd.GetDialog(), "the dialog is copied")
	require.Equal(t, 1, f.Calls())
}

func TestCommandIDIsDeterministic(t *testing.T) {
	require.Equal(t, CommandID("c1", "e1"), CommandID("c1", "e1"))
	require.NotEqual(t, CommandID("c1", "e1"), CommandID("c1", "e2"))
	require.NotEqual(t, CommandID("c1", "e1"), CommandID("c2", "e1"))
	// sha256("c1/e1"), first 32 hex digits.
	require.Equal(t, "d9b798df838b25e886a289ab726f60de", CommandID("c1", "e1"))
}

func TestNoRuleNoCommand(t *testing.T) {
	f, _ := newFold(t)
	require.Empty(t, f.Apply(t.Context(), event(t, "c1", started("c1", nil))))
	require.Equal(t, 1, f.Calls())
}

func TestHandoffRequested(t *testing.T) {
	for _, tc := range []struct {
		name        string
		req         *batonv1.HandoffRequested
		wantDest    string
		wantHeaders []*batonv1.SipHeader
	}{
		{
			name:     "named destination",
			req:      &batonv1.HandoffRequested{CallId: "c1", Destination: "sales", Reason: "upsell", Utterance: "buy", RequestId: "r1"},
			wantDest: "sales",
			wantHeaders: []*batonv1.SipHeader{
				{Name: "X-From", Value: "+15551230001->+15559870002"},
			},
		},
		{
			name:     "named destination ignores case",
			req:      &batonv1.HandoffRequested{Destination: "SALES", Reason: "upsell", Utterance: "buy", RequestId: "r1"},
			wantDest: "sales",
			wantHeaders: []*batonv1.SipHeader{
				{Name: "X-From", Value: "+15551230001->+15559870002"},
			},
		},
		{
			name:     "empty destination takes the default",
			req:      &batonv1.HandoffRequested{Reason: "upsell", Utterance: "buy", RequestId: "r1"},
			wantDest: "support",
			wantHeaders: []*batonv1.SipHeader{
				{Name: "X-Baton-Call-Id", Value: "c1"},
				{Name: "X-Customer-Id", Value: "C-42"},
				{Name: "X-Intent", Value: "sales"},
			},
		},
		{
			name: "request variables win over call variables, not over system ones",
			req: &batonv1.HandoffRequested{Reason: "upsell", Utterance: "buy", RequestId: "r1",
				Variables: map[string]string{"intent": "refund", "call_id": "spoofed", "customer_id": "C-99"}},
			wantDest: "support",
			wantHeaders: []*batonv1.SipHeader{
				{Name: "X-Baton-Call-Id", Value: "c1"},
				{Name: "X-Customer-Id", Value: "C-99"},
				{Name: "X-Intent", Value: "refund"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := newFold(t)
			require.Empty(t, f.Apply(t.Context(), event(t, "c1", started("c1", map[string]string{"Customer-Id": "C-42", "Intent": "sales"}))))
			ev := event(t, "c1", tc.req)
			cmds := commands(t, f.Apply(t.Context(), ev))
			require.Len(t, cmds, 1)
			cmd := cmds[0]
			require.Equal(t, CommandID("c1", ev.ID), cmd.GetCommandId())
			require.Equal(t, tc.wantDest, cmd.GetDestination())
			require.Equal(t, tc.wantHeaders, cmd.GetHeaders())
			require.Equal(t, "upsell", cmd.GetReason())
			require.Equal(t, "buy", cmd.GetUtterance())
			require.Equal(t, "r1", cmd.GetRequestId())
			require.Equal(t, "sip-c1", cmd.GetDialog().GetCallId())
		})
	}
}

func TestSalesDestinationUsesItsMethodAndTimeout(t *testing.T) {
	f, _ := newFold(t, Rule{Name: "to-sales", Destination: "sales"})
	cmds := commands(t, f.Apply(t.Context(), event(t, "c1", started("c1", nil))))
	require.Len(t, cmds, 1)
	require.Equal(t, batonv1.Method_METHOD_INVITE, cmds[0].GetMethod())
	require.Equal(t, "tel:+15550001111", cmds[0].GetRoute())
	require.True(t, proto.Equal(durationpb.New(12*time.Second), cmds[0].GetAnswerTimeout()))
}

// A warm transfer's command carries the SDP ingress last sent the caller
// (CallStarted's, then a re-INVITE's CallUpdated), so transfer's re-INVITE
// continues that session (issue 19, 3); a REFER's carries it too, for
// transfer's fallback to a warm transfer when the REFER is refused.
func TestInviteCommandCarriesTheCallersSession(t *testing.T) {
	f, _ := newFold(t)
	st := started("c1", nil)
	st.LocalSdp = "v=0\r\no=baton 1 1 IN IP4 10.0.0.2\r\n"
	require.Empty(t, f.Apply(t.Context(), event(t, "c1", st)))
	f.Commit()
	updated := "v=0\r\no=baton 1 2 IN IP4 10.0.0.2\r\n"
	require.Empty(t, f.Apply(t.Context(), event(t, "c1", &batonv1.CallUpdated{CallId: "c1", LocalSdp: updated})))
	cmds := commands(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{CallId: "c1", Destination: "sales"})))
	require.Len(t, cmds, 1)
	require.Equal(t, updated, cmds[0].GetLocalSdp(), "the latest offer/answer's SDP")

	f2, _ := newFold(t)
	st2 := started("c2", nil)
	st2.LocalSdp = "v=0\r\no=baton 7 3 IN IP4 10.0.0.2\r\n"
	require.Empty(t, f2.Apply(t.Context(), event(t, "c2", st2)))
	refer := commands(t, f2.Apply(t.Context(), event(t, "c2", &batonv1.HandoffRequested{CallId: "c2", Destination: "support"})))
	require.Len(t, refer, 1)
	require.Equal(t, batonv1.Method_METHOD_REFER, refer[0].GetMethod())
	require.Equal(t, st2.LocalSdp, refer[0].GetLocalSdp())
}

func TestUnknownAndEndedCallsAreSkipped(t *testing.T) {
	f, logs := newFold(t)
	require.Empty(t, f.Apply(t.Context(), event(t, "ghost", &batonv1.HandoffRequested{})))
	require.Contains(t, logs.String(), "handoff requested for an unknown call; skipped")

	require.Empty(t, f.Apply(t.Context(), event(t, "c1", started("c1", nil))))
	require.Equal(t, 1, f.Calls())
	require.Empty(t, f.Apply(t.Context(), event(t, "c1", &batonv1.CallEnded{CallId: "c1"})))
	require.Equal(t, 0, f.Calls())
	require.Empty(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{})))
}

func TestRequestForAnotherCallIsSkipped(t *testing.T) {
	f, logs := newFold(t)
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	require.Empty(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{CallId: "c2"})))
	require.Contains(t, logs.String(), "handoff request names another call")
}

func TestDuplicatesDecideNothingTwice(t *testing.T) {
	f, logs := newFold(t, Rule{Name: "everyone", Destination: "support"})
	start := event(t, "c1", started("c1", nil))
	require.Len(t, f.Apply(t.Context(), start), 1)
	require.Empty(t, f.Apply(t.Context(), start))
	require.Contains(t, logs.String(), "call already started; duplicate ignored")

	req := event(t, "c1", &batonv1.HandoffRequested{Destination: "sales"})
	require.Len(t, f.Apply(t.Context(), req), 1)
	require.Empty(t, f.Apply(t.Context(), req))
	require.Contains(t, logs.String(), "handoff request already handled; duplicate ignored")
}

func TestHeaderInjectionRefusesTheHandoff(t *testing.T) {
	for name, value := range map[string]string{
		"crlf": "C-42\r\nContact: <sip:evil@example.com>",
		"lf":   "C-42\nX-Evil: 1",
		"nul":  "C-42\x00",
		"long": string(bytes.Repeat([]byte("a"), 1100)),
	} {
		t.Run(name, func(t *testing.T) {
			f, logs := newFold(t, Rule{Name: "everyone", Destination: "support"})
			r := refusal(t, f.Apply(t.Context(), event(t, "c1", started("c1", map[string]string{"Customer-Id": value}))))
			require.Equal(t, RefusedInvalidHeader, r.GetReasonCode())
			require.Equal(t, "support", r.GetDestination())
			require.Contains(t, r.GetDetail(), "X-Customer-Id")
			require.Contains(t, logs.String(), "handoff refused: rendered header is invalid")
			require.Contains(t, logs.String(), `"header":"X-Customer-Id"`)
			require.Equal(t, 1, f.Calls(), "the call is still known; only the handoff is refused")
		})
	}
}

func TestMissingVariablesRenderEmptyAndAreLogged(t *testing.T) {
	f, logs := newFold(t, Rule{Name: "everyone", Destination: "support"})
	cmds := commands(t, f.Apply(t.Context(), event(t, "c1", started("c1", map[string]string{"Intent": "billing"}))))
	require.Len(t, cmds, 1)
	require.Equal(t, "", cmds[0].GetHeaders()[1].GetValue())
	require.Contains(t, logs.String(), `"missing":["Customer-Id"]`)
}

func TestRollbackRestoresTheLastCommit(t *testing.T) {
	f, _ := newFold(t, Rule{Name: "everyone", Destination: "support"})
	start := event(t, "c1", started("c1", nil))

	// An aborted batch is forgotten: the same record decides again.
	require.Len(t, f.Apply(t.Context(), start), 1)
	f.Rollback()
	require.Equal(t, 0, f.Calls())
	require.Len(t, f.Apply(t.Context(), start), 1)
	f.Commit()

	// A committed call survives a later rollback, and so does what it
	// handled; the rolled-back request and end are undone.
	req := event(t, "c1", &batonv1.HandoffRequested{})
	require.Len(t, f.Apply(t.Context(), req), 1)
	f.Apply(t.Context(), event(t, "c1", &batonv1.CallEnded{}))
	require.Equal(t, 0, f.Calls())
	f.Rollback()
	require.Equal(t, 1, f.Calls())
	require.Empty(t, f.Apply(t.Context(), start), "the committed start is still known")
	require.Len(t, f.Apply(t.Context(), req), 1, "the rolled-back request is decided again")
	f.Commit()
	require.Empty(t, f.Apply(t.Context(), req), "now it is handled")
}

func TestTransferOutcomeIsLogged(t *testing.T) {
	f, logs := newFold(t)
	out := &batonv1.TransferOutcome{CommandId: "abc", CallId: "c1", Status: batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, SipCode: 603}
	require.Empty(t, f.Apply(t.Context(), event(t, "c1", out)))
	require.Contains(t, logs.String(), `"msg":"transfer outcome"`)
	require.Contains(t, logs.String(), `"sip_code":603`)
}
