package transfer

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/request"
)

// scriptSBC makes the harness's SBC answer by script: answer(n, req) is
// the status of the n-th request (from 1); it may block (the far end
// thinking), 0 answers nothing.
func scriptSBC(h *harness, answer func(n int, req *sip.Request) int) *sbc {
	h.sbc.mu.Lock()
	defer h.sbc.mu.Unlock()
	h.sbc.script = answer
	return h.sbc
}

// requests returns what the SBC received so far.
func (s *sbc) requests() []*sip.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*sip.Request, 0, len(s.received))
	for _, r := range s.received {
		out = append(out, r.req)
	}
	return out
}

// factsWaiting is how many facts the executions of a call have not read.
func factsWaiting(svc *Service, callID string) int {
	svc.reg.mu.Lock()
	defer svc.reg.mu.Unlock()
	n := 0
	for e := range svc.reg.byCall[callID] {
		n += len(e.facts)
	}
	return n
}

// early481SBC makes the harness's SBC answer its first early requests
// 481 (as it does while ingress's 200 OK has not reached it), later
// REFERs 202 and BYEs 200.
func early481SBC(h *harness, early int) *sbc {
	return scriptSBC(h, func(n int, req *sip.Request) int {
		switch {
		case req.Method == sip.BYE:
			return 200
		case n <= early:
			return 481
		}
		return 202
	})
}

// TestReferEarly481IsRetried: the SBC answers the first REFERs 481, as it
// does when ingress's 200 OK has not reached it yet, then 202. Transfer
// sends the REFER again with the next CSeq each time, the handoff
// succeeds, follows the NOTIFY of the accepted REFER's CSeq, ends the agent
// leg with the CSeq after it, and counts the retries.
func TestReferEarly481IsRetried(t *testing.T) {
	t.Parallel()
	const early = 3 // REFERs answered 481
	metrics := NewMetrics(prometheus.NewRegistry())
	h := start(t, 202, func(o *Options) {
		o.Metrics = metrics
		o.ByeAfterRefer = 50 * time.Millisecond
	})
	sbc := early481SBC(h, early)
	cmd := referCommand(h, "early481")
	cmd.Dialog.NextLocalCseq = 5
	h.command(t, cmd)

	o := h.outcome(t, cmd.CommandId)
	requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
	reqs := sbc.requests()
	require.Len(t, reqs, early+1, "the REFER answered 481 %d times, then accepted", early)
	for i, req := range reqs {
		require.Equal(t, sip.REFER, req.Method)
		require.Equal(t, uint32(5+i), req.CSeq().SeqNo, "REFER %d: the next CSeq each time", i+1)
		require.Equal(t, sip.REFER, req.CSeq().MethodName)
		require.Equal(t, "call-early481", req.CallID().Value())
		require.Equal(t, reqs[0].GetHeader("Refer-To").Value(), req.GetHeader("Refer-To").Value())
		if i > 0 {
			// A new transaction each time, not a retransmission.
			prev, _ := reqs[i-1].Via().Params.Get("branch")
			branch, _ := req.Via().Params.Get("branch")
			require.NotEqual(t, prev, branch)
		}
	}
	require.Equal(t, float64(early), testutil.ToFloat64(metrics.ReferRetries.WithLabelValues(RetryEarly481)))

	// A NOTIFY naming a REFER answered 481 is not ours; the accepted one's
	// (CSeq 5+early) is.
	h.fact(t, cmd.CallId, &batonv1.NotifyReceived{CallId: cmd.CallId, Event: "refer;id=5", SipfragStatus: 503})
	h.fact(t, cmd.CallId, &batonv1.NotifyReceived{CallId: cmd.CallId, Event: "refer;id=" + strconv.Itoa(5+early),
		SubscriptionState: "terminated;reason=noresource", SipfragStatus: 200, SipfragReason: "OK"})
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)

	bye := sbc.next(t) // the REFERs first
	for bye.req.Method != sip.BYE {
		bye = sbc.next(t)
	}
	require.Equal(t, uint32(5+early+1), bye.req.CSeq().SeqNo, "the agent leg's BYE follows the accepted REFER")
}

// TestRefer481LongAfterTheCallStartedIsFinal: a command whose event is
// older than 64*T1 (the call started that long ago at least) gets its 481
// as the answer: no retry, FAILED with 481.
func TestRefer481LongAfterTheCallStartedIsFinal(t *testing.T) {
	t.Parallel()
	metrics := NewMetrics(prometheus.NewRegistry())
	h := start(t, 481, func(o *Options) { o.Metrics = metrics })
	cmd := referCommand(h, "old481")
	// Well past the window, well inside the harness's max_command_age.
	h.publish(t, h.topics.Handoffs, cmd.CallId, cmd, time.Now().Add(-10*64*sip.T1))

	o := h.outcome(t, cmd.CommandId)
	requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, 481)
	require.Equal(t, "REFER rejected", o.GetDetail())
	require.Equal(t, 1, h.sbc.count(), "one REFER: the outcome is published once no retry will come")
	require.Zero(t, testutil.ToFloat64(metrics.ReferRetries.WithLabelValues(RetryEarly481)))
}

// TestReferEarly481Exhausted: an SBC that keeps answering 481 gets retries
// only within 64*T1 of the command's time and at most maxReferRetries; the
// outcome is then FAILED with 481.
func TestReferEarly481Exhausted(t *testing.T) {
	t.Parallel()
	metrics := NewMetrics(prometheus.NewRegistry())
	h := start(t, 481, func(o *Options) { o.Metrics = metrics })
	cmd := referCommand(h, "always481")
	issued := time.Now()
	h.publish(t, h.topics.Handoffs, cmd.CallId, cmd, issued)

	o := h.outcome(t, cmd.CommandId)
	requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, 481)
	require.Contains(t, o.GetDetail(), "REFER rejected, and again after")
	retries := testutil.ToFloat64(metrics.ReferRetries.WithLabelValues(RetryEarly481))
	require.GreaterOrEqual(t, retries, 1.0)
	require.LessOrEqual(t, retries, float64(maxReferRetries))
	reqs := h.sbc.requests()
	require.Len(t, reqs, int(retries)+1, "the first REFER and one per retry counted")
	for i, req := range reqs {
		require.Equal(t, uint32(1+i), req.CSeq().SeqNo)
	}
}

// TestReferEarly481StopsWhenTheCallEnds: a 481 inside the window is not
// retried once the call's CallEnded has come: the dialog is gone for good.
func TestReferEarly481StopsWhenTheCallEnds(t *testing.T) {
	t.Parallel()
	metrics := NewMetrics(prometheus.NewRegistry())
	h := start(t, 481, func(o *Options) { o.Metrics = metrics })
	release := make(chan struct{})
	var once sync.Once
	sbc := scriptSBC(h, func(int, *sip.Request) int {
		<-release // answer once the CallEnded waits for the execution
		return 481
	})
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before the SBC stops
	cmd := referCommand(h, "ended481")
	h.command(t, cmd)
	sbc.next(t)
	h.fact(t, cmd.CallId, &batonv1.CallEnded{CallId: cmd.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
	require.Eventually(t, func() bool { return factsWaiting(h.in.svc, cmd.CallId) == 1 }, 5*time.Second, time.Millisecond)
	once.Do(func() { close(release) })

	o := h.outcome(t, cmd.CommandId)
	requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, 481)
	require.Contains(t, o.GetDetail(), "the call ended")
	require.Equal(t, 1, sbc.count())
	require.Zero(t, testutil.ToFloat64(metrics.ReferRetries.WithLabelValues(RetryEarly481)))
}

// TestAttemptsOwnTheirCSeqs: a handoff's first attempt uses CSeqs from the
// dialog's next local CSeq on (REFERs answered 481, the accepted one, the
// agent leg's BYE after it), and its fallback attempt numbers its REFER
// above all of them: a far end refuses a CSeq lower than one it has seen.
func TestAttemptsOwnTheirCSeqs(t *testing.T) {
	t.Parallel()
	// The most an attempt can use: the REFER, every retry, the BYE.
	require.LessOrEqual(t, 1+maxReferRetries+1, request.CSeqsPerAttempt)

	const early = 3
	h := start(t, 202, func(o *Options) { o.ByeAfterRefer = 50 * time.Millisecond })
	sbc := early481SBC(h, early)
	first := referCommand(h, "attempts")
	first.Dialog.NextLocalCseq = 5
	h.command(t, first)
	requireOutcome(t, h.outcome(t, first.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
	h.fact(t, first.CallId, &batonv1.NotifyReceived{CallId: first.CallId, Event: "refer;id=" + strconv.Itoa(5+early),
		SubscriptionState: "terminated;reason=noresource", SipfragStatus: 200, SipfragReason: "OK"})
	requireOutcome(t, h.outcome(t, first.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)
	var highest uint32
	for r := sbc.next(t); ; r = sbc.next(t) {
		highest = max(highest, r.req.CSeq().SeqNo)
		if r.req.Method == sip.BYE {
			break
		}
	}
	require.Equal(t, uint32(5+early+1), highest, "the agent leg's BYE is the first attempt's last request")

	// The router's fallback: the same dialog snapshot, attempt 2.
	fallback := referCommand(h, "attempts")
	fallback.CommandId += "-2"
	fallback.Dialog.NextLocalCseq = 5
	fallback.Attempt = 2
	h.command(t, fallback)
	r := sbc.next(t)
	require.Equal(t, sip.REFER, r.req.Method)
	require.Greater(t, r.req.CSeq().SeqNo, highest)
	require.Equal(t, uint32(5+request.CSeqsPerAttempt), r.req.CSeq().SeqNo)
	// The fallback is accepted (its 202 reached transfer), and the call's
	// end finishes it: nothing of it is left running when the test ends.
	requireOutcome(t, h.outcome(t, fallback.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
	h.fact(t, fallback.CallId, &batonv1.CallEnded{CallId: fallback.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
	requireOutcome(t, h.outcome(t, fallback.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, 0)
}

func TestCommandAge(t *testing.T) {
	t.Parallel()
	start := time.Now()
	require.Equal(t, 3*time.Second, commandAge(start, start.Add(-3*time.Second)))
	require.Zero(t, commandAge(start, start.Add(time.Hour)), "ahead of this clock")
	require.Zero(t, commandAge(start, time.Time{}), "unknown")
	// An event time read from a record has no monotonic reading; the age
	// is still the wall-clock difference at the moment it is taken.
	require.Equal(t, 2*time.Second, commandAge(start, start.Add(-2*time.Second).Round(0)))
}

// TestRefer481WindowFromArrivalWhenEventIsAhead: a command whose event
// time is ahead of this clock (the producer's clock is fast) gets the
// retry window from its arrival, not none and not a longer one.
func TestRefer481WindowFromArrivalWhenEventIsAhead(t *testing.T) {
	t.Parallel()
	h := start(t, 202, nil)
	sbc := early481SBC(h, 1)
	cmd := referCommand(h, "ahead481")
	h.publish(t, h.topics.Handoffs, cmd.CallId, cmd, time.Now().Add(time.Hour))

	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
	require.Len(t, sbc.requests(), 2, "the REFER answered 481, then again with the next CSeq")
}

// TestRefer481WindowCountsTheCommandsAge: a command 31.8 s old when it
// arrives has less than T1 of its 64*T1 window left, so its 481 is final.
func TestRefer481WindowCountsTheCommandsAge(t *testing.T) {
	t.Parallel()
	h := start(t, 481, nil)
	cmd := referCommand(h, "aged481")
	h.publish(t, h.topics.Handoffs, cmd.CallId, cmd, time.Now().Add(-64*sip.T1+200*time.Millisecond))

	o := h.outcome(t, cmd.CommandId)
	requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, 481)
	require.Equal(t, "REFER rejected", o.GetDetail())
	require.Equal(t, 1, h.sbc.count())
}
