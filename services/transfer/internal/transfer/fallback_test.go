package transfer

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// referToSIPp is a REFER command in the caller's dialog whose route is a
// SIPp destination: a blind transfer whose INVITE fallback dials it. Like
// the router's REFER commands it carries no local_sdp.
func referToSIPp(caller *callerSBC, id string, dest *sippRun) *batonv1.HandoffCommand {
	cmd := inviteCommand(caller, id, dest.route())
	cmd.Method = batonv1.Method_METHOD_REFER
	cmd.LocalSdp = ""
	return cmd
}

// TestReferRefusedFallsBackToInviteAndIsLearned: the caller's SBC answers
// the REFER 405; the destination's refer_fallback invite bridges the call
// to the same route (SIPp), and the trunk's refusal is learned, as an
// event. A second call, run by a new transfer instance (the refusal
// restored from the attempt log), goes straight to the INVITE: no REFER.
func TestReferRefusedFallsBackToInviteAndIsLearned(t *testing.T) {
	t.Parallel()
	metrics := NewMetrics(prometheus.NewRegistry())
	tune := func(o *Options) {
		withInvite(nil)(o)
		o.Metrics = metrics
		o.Trunks = []Trunk{{Name: "caller-sbc", Networks: []netip.Prefix{testPeers}, ReferRefusalTTL: time.Hour}}
		o.Destinations = map[string]Destination{"queue": {ReferFallback: FallbackInvite}}
	}
	h := start(t, 202, tune)
	caller := startCallerSBC(t, 0)

	dest := startSIPp(t, "dest_answer.xml")
	cmd := referToSIPp(caller, "fallback-1", dest)
	h.command(t, cmd)
	got := h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS, batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING,
		batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
	require.Equal(t, int32(405), got[0].GetSipCode())
	require.Equal(t, batonv1.Method_METHOD_REFER, got[0].GetMethod())
	require.Contains(t, got[0].GetDetail(), "REFER refused 405: falling back to invite")
	for _, o := range got[1:] {
		require.Equal(t, batonv1.Method_METHOD_INVITE, o.GetMethod(), "the fallback's outcomes name its method")
	}
	refer := caller.next(t, sip.REFER)
	require.Equal(t, uint32(4), refer.CSeq().SeqNo)
	reinvite := caller.next(t, sip.INVITE)
	require.Equal(t, uint32(5), reinvite.CSeq().SeqNo, "the re-INVITE follows the refused REFER's CSeq")
	require.Len(t, h.learned, 1, "the refusal is an event on the call's timeline")
	l := h.learned[0]
	require.Equal(t, "caller-sbc", l.GetTrunk())
	require.Equal(t, int32(405), l.GetSipCode())
	require.Equal(t, cmd.CommandId, l.GetCommandId())
	require.WithinDuration(t, l.GetLearnedAt().AsTime().Add(time.Hour), l.GetUntil().AsTime(), time.Second)
	h.fact(t, cmd.CallId, &batonv1.CallEnded{CallId: cmd.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), h.outcome(t, cmd.CommandId).GetStatus().String())
	log, err := dest.wait(t)
	require.NoError(t, err, "sipp: %s", log)
	require.Contains(t, log, "x_customer_id=CUST-7", "the fallback INVITE carries the command's headers")

	// A restart: the next instance knows the refusal from the log alone.
	_, err = h.stop()
	require.NoError(t, err)
	h.in.cl.Close()
	next := h.launch(t, tune)
	t.Cleanup(func() {
		next.cancel()
		require.NoError(t, <-next.done)
	})
	dest2 := startSIPp(t, "dest_answer.xml")
	cmd2 := referToSIPp(caller, "fallback-2", dest2)
	h.command(t, cmd2)
	got = h.statuses(t, cmd2.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS, batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING,
		batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
	require.Contains(t, got[0].GetDetail(), "trunk caller-sbc refuses REFER (learned")
	require.Zero(t, got[0].GetSipCode(), "nothing was sent")
	reinvite = caller.next(t, sip.INVITE)
	require.Equal(t, cmd2.CallId, reinvite.CallID().Value())
	require.Equal(t, uint32(4), reinvite.CSeq().SeqNo, "no REFER took a CSeq")
	require.Equal(t, 1, caller.count(sip.REFER), "the second call sent no REFER")
	h.fact(t, cmd2.CallId, &batonv1.CallEnded{CallId: cmd2.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), h.outcome(t, cmd2.CommandId).GetStatus().String())
	log, err = dest2.wait(t)
	require.NoError(t, err, "sipp: %s", log)
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.ReferFallbacks.WithLabelValues(FallbackInvite, FallbackWhyRefused)))
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.ReferFallbacks.WithLabelValues(FallbackInvite, FallbackWhyLearned)))
}

// TestReferRefusedFallsBackToBye: refer_fallback bye hands the call back
// to the SBC with a BYE carrying the command's headers, after the REFER's
// CSeq; a trunk without refer_refusal_ttl learns nothing.
func TestReferRefusedFallsBackToBye(t *testing.T) {
	t.Parallel()
	h := start(t, 202, func(o *Options) {
		o.Destinations = map[string]Destination{"queue": {ReferFallback: FallbackBye}}
		o.Trunks = []Trunk{{Name: "caller-sbc", Networks: []netip.Prefix{testPeers}}}
	})
	caller := startCallerSBC(t, 0)
	cmd := inviteCommand(caller, "fallback-bye", "sip:queue@agents.example.com")
	cmd.Method = batonv1.Method_METHOD_REFER
	h.command(t, cmd)
	got := h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS, batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED)
	require.Equal(t, int32(405), got[0].GetSipCode())
	require.Equal(t, batonv1.Method_METHOD_BYE, got[1].GetMethod())
	require.Equal(t, int32(200), got[1].GetSipCode())
	require.Equal(t, uint32(4), caller.next(t, sip.REFER).CSeq().SeqNo)
	bye := caller.next(t, sip.BYE)
	require.Equal(t, uint32(5), bye.CSeq().SeqNo)
	require.NotNil(t, bye.GetHeader("X-Customer-Id"), "the BYE carries the headers")
	require.Equal(t, "CUST-7", bye.GetHeader("X-Customer-Id").Value())
	require.Empty(t, h.learned, "no refer_refusal_ttl: nothing learned")
}

// TestReferRefusedWithoutFallbackFails: without refer_fallback the
// refusal is the outcome (FAILED 405: the router's own fallback applies).
func TestReferRefusedWithoutFallbackFails(t *testing.T) {
	t.Parallel()
	h := start(t, 202, nil)
	caller := startCallerSBC(t, 0)
	cmd := inviteCommand(caller, "no-fallback", "sip:queue@agents.example.com")
	cmd.Method = batonv1.Method_METHOD_REFER
	h.command(t, cmd)
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, 405)
	require.Zero(t, caller.count(sip.BYE))
	require.Zero(t, caller.count(sip.INVITE))
}

// TestNotifyFailureFallsBack: a REFER accepted and then reported failed
// by its NOTIFY (sipfrag 486) falls back too, here to a BYE after the
// REFER's CSeq; a failed transfer target is not learned as a refusal.
func TestNotifyFailureFallsBack(t *testing.T) {
	t.Parallel()
	h := start(t, 202, func(o *Options) {
		o.Destinations = map[string]Destination{"support": {ReferFallback: FallbackBye}}
		o.Trunks = []Trunk{{Name: "sbc", Networks: []netip.Prefix{testPeers}, ReferRefusalTTL: time.Hour}}
	})
	cmd := referCommand(h, "notify-486")
	h.command(t, cmd)
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
	refer := h.sbc.next(t).req
	require.Equal(t, sip.REFER, refer.Method)
	h.fact(t, cmd.CallId, &batonv1.NotifyReceived{CallId: cmd.CallId, Event: "refer;id=" + strconv.Itoa(int(refer.CSeq().SeqNo)),
		SubscriptionState: "terminated;reason=noresource", SipfragStatus: 486, SipfragReason: "Busy Here"})
	o := h.outcome(t, cmd.CommandId)
	requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS, 486)
	require.Contains(t, o.GetDetail(), "falling back to bye")
	o = h.outcome(t, cmd.CommandId)
	requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)
	require.Equal(t, batonv1.Method_METHOD_BYE, o.GetMethod())
	bye := h.sbc.next(t).req
	require.Equal(t, sip.BYE, bye.Method)
	require.Equal(t, refer.CSeq().SeqNo+1, bye.CSeq().SeqNo)
	require.Equal(t, "CUST-10042", bye.GetHeader("X-Customer-Id").Value(), "the BYE hands the context back")
	require.Empty(t, h.learned, "a failed target is not a REFER refusal")
}
