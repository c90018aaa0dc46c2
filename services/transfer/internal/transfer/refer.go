package transfer

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/request"
)

// referRun is one blind transfer (RFC 3515): REFER in the caller's
// dialog, sent again while an early 481 says the far end may not have the
// dialog yet (retryEarly481); then the NOTIFY sipfrags until a final one,
// the call's end, or the answer timeout; after a success, the end of the
// agent leg.
type referRun struct {
	*execution
	// req is the last REFER sent: the NOTIFYs that report on it carry its
	// CSeq, and the agent leg's BYE takes the next one.
	req *sip.Request
}

func (r *referRun) run(ctx context.Context) {
	req, err := r.newRefer()
	if err != nil {
		r.notSent(ctx, "REFER", requestReason(err), err)
		return
	}
	fallback := r.destination().ReferFallback
	if trunk, until, ok := r.learnedRefusal(req); ok && fallback != "" {
		// Known to refuse REFER: straight to the fallback, nothing sent.
		r.metrics.referFallback(fallback, FallbackWhyLearned)
		r.publish(ctx, step{status: progress, detail: fmt.Sprintf("trunk %s refuses REFER (learned, until %s): %s instead",
			trunk, until.UTC().Format(time.RFC3339), fallback)})
		r.fallBack(ctx, fallback, 0)
		return
	}
	res, ok := r.send(ctx, req)
	if !ok {
		return
	}
	r.req = req
	res, detail, ok := r.retryEarly481(ctx, res)
	if !ok {
		return
	}
	if !res.IsSuccess() {
		if refusesRefer(res.StatusCode) {
			r.learn(ctx, r.req, res)
			if fallback != "" {
				r.metrics.referFallback(fallback, FallbackWhyRefused)
				r.publish(ctx, step{status: progress, code: res.StatusCode, reason: res.Reason,
					detail: fmt.Sprintf("REFER refused %d: falling back to %s", res.StatusCode, fallback)})
				r.fallBack(ctx, fallback, r.req.CSeq().SeqNo+1)
				return
			}
		}
		r.publish(ctx, failed(res.StatusCode, res.Reason, detail))
		return
	}
	r.publish(ctx, step{status: accepted, code: res.StatusCode, reason: res.Reason})
	succeeded, fellThrough := r.awaitFinalNotify(ctx, fallback)
	switch {
	case succeeded:
		r.endAgentLeg(ctx)
	case fellThrough:
		r.metrics.referFallback(fallback, FallbackWhyNotify)
		r.fallBack(ctx, fallback, r.req.CSeq().SeqNo+1)
	}
}

// newRefer builds the command's REFER with the first CSeq of its attempt.
func (r *referRun) newRefer() (*sip.Request, error) {
	return request.Refer(r.cmd.GetDialog(), r.cmd.GetAttempt(), r.cmd.GetRoute(), r.cmd.GetHeaders(), r.cmd.GetContextIn())
}

// Why a REFER was sent again: the reason label of
// baton_transfer_refer_retries_total.
const (
	// RetryEarly481: the far end answered 481 within 64*T1 of the call's
	// start, before it can be sure to have the dialog.
	RetryEarly481 = "481_early"
)

// maxReferRetries bounds the retries of one REFER. The 64*T1 window with a
// pause from T1 doubling to T2 holds about ten.
const maxReferRetries = 10

// retryEarly481 sends the REFER again while the far end answers 481 and
// the call may be too young for it to know the dialog: ingress answers
// the INVITE and the router decides at once, so the REFER can reach the
// SBC before ingress's 200 OK does when the 200 is lost and still being
// retransmitted (for up to 64*T1, RFC 3261 13.3.1.4). A real SBC answers
// such a REFER 481 (RFC 3261 12.2.2), and a moment later takes it.
//
// The call's age is bounded by the command's event time, the time of the
// fact that triggered it, which is never before the CallStarted ingress
// publishes just before answering: a 481 is retried only until 64*T1
// after it (after the execution's start when that time is unknown or
// ahead of this clock), at most maxReferRetries times, after a pause from
// T1 doubling up to T2, each time with the next CSeq, and not once the
// call has ended. A command triggered more than 64*T1 after the call
// started (an agent's handoff late in a call) still gets that window,
// which costs a genuine 481 (the dialog is gone) the window's retries.
//
// The retries and the agent leg's BYE stay inside the attempt's block of
// request.CSeqsPerAttempt numbers, so a later attempt (the router's
// fallback command) never reuses one (TestAttemptsOwnTheirCSeqs).
//
// res is the answer to r.req. It returns the answer to the last REFER
// sent (then r.req), and the detail of a failure; false when the
// execution is over (the outcome is published, or the process is
// shutting down).
func (r *referRun) retryEarly481(ctx context.Context, res *sip.Response) (*sip.Response, string, bool) {
	deadline := r.start.Add(64*sip.T1 - r.age)
	pause := sip.T1
	for retries := 0; res.StatusCode == sip.StatusCallTransactionDoesNotExists; retries++ {
		if retries == maxReferRetries || r.now().Add(pause).After(deadline) {
			if retries == 0 {
				return res, "REFER rejected", true
			}
			return res, fmt.Sprintf("REFER rejected, and again after %d retries within 64*T1 of the call's start", retries), true
		}
		cseq := r.req.CSeq().SeqNo + 1
		if !r.cseqLeft(cseq) { // digest answers took numbers too
			return res, fmt.Sprintf("REFER rejected, and again after %d retries; no CSeq left in the attempt's block", retries), true
		}
		r.log.InfoContext(ctx, "REFER answered 481 soon after the call started: sending it again", "sip_code", res.StatusCode,
			"retry", retries+1, "pause", pause.String(), "cseq", cseq, "call_age_at_least", (r.age + r.now().Sub(r.start)).String())
		f, err := r.waitCallEnded(ctx, pause)
		switch {
		case err != nil:
			r.log.WarnContext(ctx, "transfer abandoned at shutdown: REFER answered 481, not sent again")
			return nil, "", false
		case f != nil:
			return res, "REFER rejected; the call ended before it was sent again", true
		}
		next, err := r.newRefer()
		if err == nil && cseq >= 1<<31 { // RFC 3261 8.1.1.5: less than 2**31
			err = fmt.Errorf("%w: cseq %d overflows", request.ErrDialog, cseq)
		}
		if err != nil {
			// The first REFER was built from the same command: not expected.
			r.log.WarnContext(ctx, "REFER not sent again", "err", err)
			return res, "REFER rejected", true
		}
		next.CSeq().SeqNo = cseq
		r.metrics.referRetry(RetryEarly481)
		answer, ok := r.send(ctx, next)
		if !ok {
			return nil, "", false
		}
		r.req, res = next, answer
		pause = min(2*pause, sip.T2)
	}
	return res, "REFER rejected", true
}

// awaitFinalNotify publishes what the NOTIFYs about the accepted REFER
// say until a final one, the call's end, or the answer timeout (the
// command's answer_timeout, else NotifyTimeout). It reports whether the
// transfer succeeded, and whether a final failing sipfrag leaves the
// call to the fallback (set: it is published as PROGRESS, not FAILED).
func (r *referRun) awaitFinalNotify(ctx context.Context, fallback string) (succeeded, fellThrough bool) {
	cseq := r.req.CSeq().SeqNo
	timeout := r.notifyTimeout
	if t := r.cmd.GetAnswerTimeout(); t != nil && t.AsDuration() > 0 {
		timeout = t.AsDuration()
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case fact := <-r.facts:
			switch f := fact.(type) {
			case *batonv1.NotifyReceived:
				if !isOurs(f.GetEvent(), cseq) {
					continue
				}
				o, final := sipfragStep(f)
				if o.status == batonv1.OutcomeStatus_OUTCOME_STATUS_UNSPECIFIED {
					continue
				}
				if final && o.status != succeededStatus && o.code >= 300 && fallback != "" {
					o.status = progress
					o.detail += ": falling back to " + fallback
					r.publish(ctx, o)
					return false, true
				}
				r.publish(ctx, o)
				if final {
					return o.status == succeededStatus, false
				}
			case *batonv1.CallEnded:
				r.publish(ctx, failed(0, "", "call ended before the transfer completed"))
				return false, false
			}
		case <-timer.C:
			r.publish(ctx, failed(0, "", fmt.Sprintf("no final NOTIFY within %v", timeout)))
			return false, false
		case <-ctx.Done():
			r.log.WarnContext(ctx, "transfer abandoned at shutdown: REFER accepted, no final NOTIFY yet")
			return false, false
		}
	}
}

// endAgentLeg ends the caller's dialog with Baton after a successful
// REFER: the far end usually sends BYE itself (its CallEnded fact arrives
// here), so transfer waits up to ByeAfterRefer for it and only then sends
// its own BYE, with the CSeq after the REFER's. Once that BYE has a final
// answer (2xx, or 481: the dialog was gone) the dialog is over, and an
// ENDED outcome (reason agent_leg_bye) says so: ingress, which holds the
// call, ends it on that fact, so the call's end is recorded once, at the
// time it happened (issue 19). Readers take a REFER's result from its
// SUCCEEDED or FAILED; ENDED follows a success only.
func (r *referRun) endAgentLeg(ctx context.Context) {
	cseq := r.req.CSeq().SeqNo + 1
	wait := r.byeAfterRefer
	if wait <= 0 {
		return
	}
	f, err := r.waitCallEnded(ctx, wait)
	switch {
	case err != nil:
		r.log.WarnContext(ctx, "transfer abandoned at shutdown: agent leg not ended yet")
		return
	case f != nil:
		r.log.InfoContext(ctx, "far end ended the agent leg", "method", f.GetMethod())
		return
	}
	req, err := request.InDialogCSeq(sip.BYE, r.cmd.GetDialog(), cseq)
	if err != nil {
		r.log.WarnContext(ctx, "agent leg BYE not sent", "err", err)
		return
	}
	r.log.InfoContext(ctx, "no BYE from the far end: ending the agent leg", "wait", wait.String(), "cseq", cseq)
	res, err := r.do(ctx, req)
	switch {
	case err != nil:
		r.log.WarnContext(ctx, "agent leg BYE", "err", err)
	case res.StatusCode == sip.StatusCallTransactionDoesNotExists:
		r.log.InfoContext(ctx, "agent leg already gone", "sip_code", res.StatusCode)
		r.publish(ctx, step{status: ended, code: res.StatusCode, reason: res.Reason, ended: EndAgentLegBye})
	case !res.IsSuccess():
		r.log.WarnContext(ctx, "agent leg BYE rejected", "sip_code", res.StatusCode, "sip_reason", res.Reason)
	default:
		r.log.InfoContext(ctx, "agent leg ended", "sip_code", res.StatusCode)
		r.publish(ctx, step{status: ended, code: res.StatusCode, reason: res.Reason, ended: EndAgentLegBye})
	}
}

// sipfragStep reads a NOTIFY: 1xx is progress, 2xx success, 300 and above
// failure, each with the sipfrag's status. A NOTIFY without a sipfrag
// status that terminates the subscription is a failure; otherwise it says
// nothing.
func sipfragStep(n *batonv1.NotifyReceived) (step, bool) {
	code, reason := int(n.GetSipfragStatus()), n.GetSipfragReason()
	switch {
	case code >= 100 && code < 200:
		return step{status: progress, code: code, reason: reason}, false
	case code >= 200 && code < 300:
		return step{status: succeeded, code: code, reason: reason}, true
	case code >= 300:
		return failed(code, reason, "transfer target answered "+strconv.Itoa(code)), true
	case strings.HasPrefix(strings.ToLower(strings.TrimSpace(n.GetSubscriptionState())), "terminated"):
		return failed(0, "", "subscription terminated without a final sipfrag"), true
	}
	return step{}, false
}

// isOurs reports whether a NOTIFY's Event header belongs to the REFER with
// this CSeq: event "refer" (RFC 3515), and an id parameter, when present,
// equal to the REFER's CSeq. An empty Event is accepted (ingress may not
// have seen one).
func isOurs(event string, cseq uint32) bool {
	event = strings.TrimSpace(event)
	if event == "" {
		return true
	}
	name, params, _ := strings.Cut(event, ";")
	if !strings.EqualFold(strings.TrimSpace(name), "refer") {
		return false
	}
	for _, p := range strings.Split(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(k, "id") {
			return strings.TrimSpace(v) == strconv.FormatUint(uint64(cseq), 10)
		}
	}
	return true
}
