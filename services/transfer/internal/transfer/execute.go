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
func (s *Service) refer(ctx context.Context, e *execution, log *slog.Logger) {
	req, err := request.Refer(e.cmd.GetDialog(), e.cmd.GetAttempt(), e.cmd.GetRoute(), e.cmd.GetHeaders())
	if err != nil {
		s.notSent(ctx, e, log, "REFER", requestReason(err), err)
		return
	}
	cseq := req.CSeq().SeqNo
	res, ok := s.send(ctx, e, log, req)
	if !ok {
		return
	}
	if !res.IsSuccess() {
		s.publish(ctx, e, log, failed(res.StatusCode, res.Reason, "REFER rejected"))
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
