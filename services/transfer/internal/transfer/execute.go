package transfer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/request"
	"github.com/baton-voice/baton/services/transfer/internal/uac"
)

// Outcome statuses, short.
const (
	accepted  = batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED
	progress  = batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS
	succeeded = batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED
	ringing   = batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING
	answered  = batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED
	bridged   = batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED
	ended     = batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED
)

// refer carries out a blind transfer (RFC 3515): REFER in the caller's
// dialog, then the NOTIFY sipfrags until a final one, the call's end, or
// the answer timeout.
//
// A 481 soon after the call was answered is retried (retryEarly481): the
// far end may not have the dialog yet.
func (s *Service) refer(ctx context.Context, e *execution, log *slog.Logger) {
	req, err := request.Refer(e.cmd.GetDialog(), e.cmd.GetAttempt(), e.cmd.GetRoute(), e.cmd.GetHeaders())
	if err != nil {
		s.notSent(ctx, e, log, "REFER", requestReason(err), err)
		return
	}
	res, ok := s.send(ctx, e, log, req)
	if !ok {
		return
	}
	req, res, detail, ok := s.retryEarly481(ctx, e, log, req, res)
	if !ok {
		return
	}
	cseq := req.CSeq().SeqNo
	if !res.IsSuccess() {
		s.publish(ctx, e, log, failed(res.StatusCode, res.Reason, detail))
		return
	}
	s.publish(ctx, e, log, step{status: accepted, code: res.StatusCode, reason: res.Reason})

	timeout := s.opts.NotifyTimeout
	if t := e.cmd.GetAnswerTimeout(); t != nil && t.AsDuration() > 0 {
		timeout = t.AsDuration()
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case fact := <-e.facts:
			switch f := fact.(type) {
			case *batonv1.NotifyReceived:
				if !isOurs(f.GetEvent(), cseq) {
					continue
				}
				if o, final := sipfragStep(f); o.status != batonv1.OutcomeStatus_OUTCOME_STATUS_UNSPECIFIED {
					s.publish(ctx, e, log, o)
					if final {
						if o.status == succeeded {
							s.endAgentLeg(ctx, e, log, cseq+1)
						}
						return
					}
				}
			case *batonv1.CallEnded:
				s.publish(ctx, e, log, failed(0, "", "call ended before the transfer completed"))
				return
			}
		case <-timer.C:
			s.publish(ctx, e, log, failed(0, "", fmt.Sprintf("no final NOTIFY within %v", timeout)))
			return
		case <-ctx.Done():
			log.WarnContext(ctx, "transfer abandoned at shutdown: REFER accepted, no final NOTIFY yet")
			return
		}
	}
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
// It returns the last request sent and its response, and the detail of
// a failure; false when the execution is over (the outcome is published,
// or the process is shutting down).
func (s *Service) retryEarly481(ctx context.Context, e *execution, log *slog.Logger, req *sip.Request,
	res *sip.Response) (*sip.Request, *sip.Response, string, bool) {
	deadline := e.start.Add(64*sip.T1 - e.age)
	pause := sip.T1
	for retries := 0; res.StatusCode == sip.StatusCallTransactionDoesNotExists; retries++ {
		if retries == maxReferRetries || s.now().Add(pause).After(deadline) {
			if retries == 0 {
				return req, res, "REFER rejected", true
			}
			return req, res, fmt.Sprintf("REFER rejected, and again after %d retries within 64*T1 of the call's start", retries), true
		}
		cseq := req.CSeq().SeqNo + 1
		log.InfoContext(ctx, "REFER answered 481 soon after the call started: sending it again", "sip_code", res.StatusCode,
			"retry", retries+1, "pause", pause.String(), "cseq", cseq, "call_age_at_least", (e.age + s.now().Sub(e.start)).String())
		f, err := waitCallEnded(ctx, e, pause)
		switch {
		case err != nil:
			log.WarnContext(ctx, "transfer abandoned at shutdown: REFER answered 481, not sent again")
			return nil, nil, "", false
		case f != nil:
			return req, res, "REFER rejected; the call ended before it was sent again", true
		}
		next, err := request.Refer(e.cmd.GetDialog(), e.cmd.GetAttempt(), e.cmd.GetRoute(), e.cmd.GetHeaders())
		if err == nil && cseq >= 1<<31 { // RFC 3261 8.1.1.5: less than 2**31
			err = fmt.Errorf("%w: cseq %d overflows", request.ErrDialog, cseq)
		}
		if err != nil {
			// The first REFER was built from the same command: not expected.
			log.WarnContext(ctx, "REFER not sent again", "err", err)
			return req, res, "REFER rejected", true
		}
		next.CSeq().SeqNo = cseq
		s.opts.Metrics.referRetry(RetryEarly481)
		r, ok := s.send(ctx, e, log, next)
		if !ok {
			return nil, nil, "", false
		}
		req, res = next, r
		pause = min(2*pause, sip.T2)
	}
	return req, res, "REFER rejected", true
}

// endAgentLeg ends the caller's dialog with Baton after a successful
// REFER: the far end usually sends BYE itself (its CallEnded fact arrives
// here), so transfer waits up to ByeAfterRefer for it and only then sends
// its own BYE. No outcome follows SUCCEEDED (readers take the last outcome
// of a REFER as its result); what happened is logged.
func (s *Service) endAgentLeg(ctx context.Context, e *execution, log *slog.Logger, cseq uint32) {
	wait := s.opts.ByeAfterRefer
	if wait <= 0 {
		return
	}
	f, err := waitCallEnded(ctx, e, wait)
	switch {
	case err != nil:
		log.WarnContext(ctx, "transfer abandoned at shutdown: agent leg not ended yet")
		return
	case f != nil:
		log.InfoContext(ctx, "far end ended the agent leg", "method", f.GetMethod())
		return
	}
	req, err := request.InDialogCSeq(sip.BYE, e.cmd.GetDialog(), cseq)
	if err != nil {
		log.WarnContext(ctx, "agent leg BYE not sent", "err", err)
		return
	}
	log.InfoContext(ctx, "no BYE from the far end: ending the agent leg", "wait", wait.String(), "cseq", cseq)
	res, err := s.sip.Do(ctx, req)
	switch {
	case err != nil:
		log.WarnContext(ctx, "agent leg BYE", "err", err)
	case !res.IsSuccess():
		log.WarnContext(ctx, "agent leg BYE rejected", "sip_code", res.StatusCode, "sip_reason", res.Reason)
	default:
		log.InfoContext(ctx, "agent leg ended", "sip_code", res.StatusCode)
	}
}

// waitCallEnded waits up to d for the call's CallEnded fact; other facts
// are dropped. It returns nil when none came in time, and ctx's error when
// the execution is abandoned.
func waitCallEnded(ctx context.Context, e *execution, d time.Duration) (*batonv1.CallEnded, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case fact := <-e.facts:
			if f, ok := fact.(*batonv1.CallEnded); ok {
				return f, nil
			}
		case <-timer.C:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
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

// bye ends the agent leg with the command's headers so the SBC takes the
// call back.
func (s *Service) bye(ctx context.Context, e *execution, log *slog.Logger) {
	req, err := request.Bye(e.cmd.GetDialog(), e.cmd.GetAttempt(), e.cmd.GetHeaders())
	if err != nil {
		s.notSent(ctx, e, log, "BYE", requestReason(err), err)
		return
	}
	res, ok := s.send(ctx, e, log, req)
	if !ok {
		return
	}
	if !res.IsSuccess() {
		s.publish(ctx, e, log, failed(res.StatusCode, res.Reason, "BYE rejected"))
		return
	}
	s.publish(ctx, e, log, step{status: succeeded, code: res.StatusCode, reason: res.Reason})
}

// send runs the request's client transaction. When it returns false the
// outcome is already published (or the process is shutting down).
func (s *Service) send(ctx context.Context, e *execution, log *slog.Logger, req *sip.Request) (*sip.Response, bool) {
	log.InfoContext(ctx, "sending request", "method", req.Method.String(), "request_uri", req.Recipient.String(),
		"destination", req.Destination(), "cseq", req.CSeq().SeqNo)
	res, err := s.sip.Do(ctx, req)
	switch {
	case err == nil:
		return res, true
	case errors.Is(err, uac.ErrTimeout):
		s.publish(ctx, e, log, failed(0, "", strings.ToLower(req.Method.String())+" timed out"))
	case ctx.Err() != nil:
		log.WarnContext(ctx, "transfer abandoned at shutdown: no final response yet", "method", req.Method.String())
	default:
		s.publish(ctx, e, log, failed(0, "", fmt.Sprintf("send %s: %v", req.Method, err)))
	}
	return nil, false
}
