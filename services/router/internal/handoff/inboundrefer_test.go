package handoff

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
)

// referTable is testTable with an allowlist (the PBX's numbers), a denied
// premium prefix and a destination whose route a REFER can name.
func referTable(t *testing.T) *Table {
	t.Helper()
	table := testTable(t)
	p, err := sipx.NewRoutePattern("sip:*@pbx.example.com")
	require.NoError(t, err)
	table.AllowedRoutes = []sipx.RoutePattern{p}
	table.DeniedNumbers = []string{"+1900"}
	table.AdHocAnswerTimeout = 20 * time.Second
	table.Destinations["desk"] = Destination{Name: "desk", Method: batonv1.Method_METHOD_INVITE,
		Route: "sip:+15550300@127.0.0.1:5092", Encryption: EncryptionUDPRTP, AnswerTimeout: 9 * time.Second}
	return table
}

func refer(target string) *batonv1.InboundReferReceived {
	return &batonv1.InboundReferReceived{CallId: "c1", ReferId: "r1", ReferTo: target,
		ReferredBy: "<sip:pbx@pbx.example.com>", NotifyCseq: 1 << 28, Cseq: 2}
}

func TestInboundReferToAConfiguredRouteUsesItsDestination(t *testing.T) {
	f := New(referTable(t), discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	cmds := commands(t, f.Apply(t.Context(), event(t, "c1", refer("SIP:+15550300@127.0.0.1:5092"))))
	require.Len(t, cmds, 1)
	cmd := cmds[0]
	require.Equal(t, "desk", cmd.GetDestination())
	require.Equal(t, batonv1.Method_METHOD_INVITE, cmd.GetMethod())
	require.Equal(t, string(EncryptionUDPRTP), cmd.GetEncryption())
	require.Equal(t, "r1", cmd.GetRequestId())
	require.Equal(t, InboundReferReason, cmd.GetReason())
	// Transfer numbers the handoff's requests above ingress's NOTIFY.
	require.Equal(t, uint32(1<<28+1), cmd.GetDialog().GetNextLocalCseq())
}

func TestInboundReferToAnAllowedURIBecomesAnInviteLeg(t *testing.T) {
	f := New(referTable(t), discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	cmds := commands(t, f.Apply(t.Context(), event(t, "c1", refer("sip:alice@pbx.example.com"))))
	require.Len(t, cmds, 1)
	// An ad-hoc sip: route would be a REFER; Baton is the transferee and
	// must not REFER the far end back to where it asked Baton to go.
	require.Equal(t, batonv1.Method_METHOD_INVITE, cmds[0].GetMethod())
	require.Equal(t, "sip:alice@pbx.example.com", cmds[0].GetRoute())
	require.Equal(t, string(EncryptionTLSSRTP), cmds[0].GetEncryption())
	require.Empty(t, cmds[0].GetContextIn())
}

// The toll-fraud cases: the router refuses each with the code that says
// why, and the refusal names the REFER (request_id), which is what ingress
// NOTIFYs 603 on.
func TestInboundReferTollFraudIsRefused(t *testing.T) {
	for _, tc := range []struct{ target, code string }{
		{"sip:+19005550199@pbx.example.com", RefusedNumberDenied},
		{"tel:+19005550199", RefusedNumberDenied},
		// Denied wherever it is dialled: the code tells fraud from mistakes.
		{"sip:+19005550199@premium-rate.example", RefusedNumberDenied},
		{"sip:+15550300@premium-rate.example", RefusedRouteNotAllowed},
		{"sips:+882990001@foreign.example", RefusedRouteNotAllowed},
		{"tel:+882990001", RefusedRouteNotAllowed},
		{"sip:alice@pbx.example.com;maddr=evil.example", RefusedRouteNotAllowed},
		{"", RefusedUnknownDestination},
		// A destination's name is no Refer-To: a REFER names a URI.
		{"support", RefusedUnknownDestination},
	} {
		t.Run(tc.target, func(t *testing.T) {
			f := New(referTable(t), discard())
			f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
			r := refusal(t, f.Apply(t.Context(), event(t, "c1", refer(tc.target))))
			require.Equal(t, tc.code, r.GetReasonCode(), r.GetDetail())
			require.Equal(t, "r1", r.GetRequestId())
		})
	}
}

func TestInboundReferForAnUnknownCallDecidesNothing(t *testing.T) {
	f := New(referTable(t), discard())
	require.Empty(t, f.Apply(t.Context(), event(t, "c9", refer("sip:alice@pbx.example.com"))))
}

// A second REFER while the first one's handoff runs is refused
// handoff_in_progress, like a second agent request.
func TestInboundReferWhileAHandoffRunsIsRefused(t *testing.T) {
	f := New(referTable(t), discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	require.Len(t, commands(t, f.Apply(t.Context(), event(t, "c1", refer("sip:alice@pbx.example.com")))), 1)
	second := refer("sip:bob@pbx.example.com")
	second.ReferId = "r2"
	r := refusal(t, f.Apply(t.Context(), event(t, "c1", second)))
	require.Equal(t, RefusedInProgress, r.GetReasonCode())
	require.Equal(t, "r2", r.GetRequestId())
}

// Rollback forgets the dialog's raised CSeq with the rest of the batch.
func TestInboundReferRollsBack(t *testing.T) {
	f := New(referTable(t), discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	f.Commit()
	ev := event(t, "c1", refer("sip:alice@pbx.example.com"))
	first := commands(t, f.Apply(t.Context(), ev))
	f.Rollback()
	require.Equal(t, uint32(1), f.calls["c1"].dialog.GetNextLocalCseq())
	again := commands(t, f.Apply(t.Context(), ev))
	require.Equal(t, first[0].GetCommandId(), again[0].GetCommandId())
}

// An inbound REFER's fallbacks are INVITE legs too: Baton is the
// transferee for every attempt of that handoff, not only the first, so a
// REFER destination in the fallback list never REFERs the far end back.
func TestInboundReferFallbacksAreInviteLegs(t *testing.T) {
	table := referTable(t)
	desk := table.Destinations["desk"]
	desk.Fallback = []string{"queue"}
	table.Destinations["desk"] = desk
	table.Destinations["queue"] = Destination{Name: "queue", Method: batonv1.Method_METHOD_REFER,
		Route: "sip:queue@pbx.example.com", AnswerTimeout: time.Second, ContextIn: "both"}
	f := New(table, discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	first := one(t, f.Apply(t.Context(), event(t, "c1", refer("sip:+15550300@127.0.0.1:5092"))))
	require.Equal(t, "desk", first.GetDestination())
	next := one(t, f.Apply(t.Context(), event(t, "c1", outcome(first, failed, 486))))
	require.Equal(t, "queue", next.GetDestination())
	require.Equal(t, batonv1.Method_METHOD_INVITE, next.GetMethod(), "the fallback calls the target, it does not REFER back")
	require.Equal(t, string(EncryptionTLSSRTP), next.GetEncryption())
	require.Empty(t, next.GetContextIn())
	require.Equal(t, InboundReferReason, next.GetReason())
	f.Commit()
	v, _, _ := f.View("c1")
	require.Equal(t, "INVITE", v.Handoff.Method)
}
