package transfer

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/bridge"
	"github.com/baton-voice/baton/services/transfer/internal/sdp"
	"github.com/baton-voice/baton/services/transfer/internal/sipauth"
)

// ring waits for the new leg's answer, publishing RINGING on 18x. The
// answer timeout or the caller hanging up CANCELs it. It returns true on
// a 2xx; otherwise the outcome is published.
func (w *warmRun) ring(ctx context.Context) bool {
	leg := w.leg
	timeout := w.inviteOpts.AnswerTimeout
	if t := w.cmd.GetAnswerTimeout(); t != nil && t.AsDuration() > 0 {
		timeout = t.AsDuration()
	}
	answerCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	lastRinging := 0
	var provisional atomic.Bool // any 1xx came: there is something to CANCEL
	wait := func(leg *sipgo.DialogClientSession) chan error {
		provisional.Store(false)
		result := make(chan error, 1)
		go func() {
			result <- leg.WaitAnswer(answerCtx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
				if res.StatusCode < 200 {
					provisional.Store(true)
				}
				if res.StatusCode > 100 && res.StatusCode < 200 && res.StatusCode != lastRinging {
					lastRinging = res.StatusCode
					w.publish(ctx, step{status: ringing, code: res.StatusCode, reason: res.Reason})
				}
				return nil
			}})
		}()
		return result
	}
	result := wait(leg)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var auth *sipauth.Session
	var why string
	for why == "" {
		select {
		case err := <-result:
			if next := w.reauth(ctx, err, &auth); next != nil {
				// Challenged: the same INVITE again, with credentials,
				// within the same answer timeout.
				_ = leg.Close()
				leg, w.leg = next, next
				result = wait(leg)
				continue
			}
			if lastRinging == 0 && w.ringSeen != nil {
				// An 18x came before the final response on the wire but
				// reached the transaction after it, which dropped it.
				if p, ok := w.ringSeen(); ok {
					w.publish(ctx, step{status: ringing, code: p.Code, reason: p.Reason})
				}
			}
			return w.answerResult(ctx, err)
		case <-timer.C:
			why = fmt.Sprintf("no answer within %v: cancelled", timeout)
			if !provisional.Load() {
				why = fmt.Sprintf("no response within %v: destination unreachable", timeout)
			}
		case fact := <-w.facts:
			if _, ok := fact.(*batonv1.CallEnded); ok {
				why = "caller hung up while the destination was ringing: cancelled"
			}
		case <-ctx.Done():
			why = "transfer shut down while ringing: cancelled"
		}
	}
	// A CANCEL is answered at once (487 follows). With no provisional
	// response there is nothing to CANCEL (RFC 3261 9.1): sipgo would wait
	// for one up to the INVITE's Timer B (32 s), so its wait is ended at
	// once (WaitAnswerForceCancelErr) and no CANCEL is sent. The attempt
	// ends now either way, so the outcome says when and why it ended.
	if provisional.Load() {
		cancel(errors.New(why))
	} else {
		cancel(sipgo.WaitAnswerForceCancelErr)
	}
	// answered: a 2xx won the race with the CANCEL. WaitAnswer then fails
	// (it was cancelled) but keeps the 2xx as the leg's response; that
	// call is taken down again.
	answered := func(err error) bool {
		return err == nil || leg.InviteResponse != nil && leg.InviteResponse.IsSuccess()
	}
	var err error
	select {
	case err = <-result:
	case <-time.After(cancelGrace):
		err = errAbandoned
		go func() {
			if late := <-result; answered(late) {
				actx := context.WithoutCancel(ctx)
				_ = leg.Ack(actx)
				w.byeLeg(actx)
			}
		}()
	}
	if !errors.Is(err, errAbandoned) && answered(err) {
		_ = leg.Ack(ctx)
		w.byeLeg(ctx)
	}
	code, reason := 0, ""
	if !errors.Is(err, errAbandoned) { // else WaitAnswer still owns the leg
		if r := leg.InviteResponse; r != nil && r.StatusCode >= 300 {
			code, reason = r.StatusCode, finalReason(r, r.StatusCode)
		}
	}
	w.publish(ctx, failed(code, reason, why))
	return false
}

// reauth answers a digest challenge to the new leg's INVITE: it sends the
// INVITE again with the destination's (or the trunk's) credentials and
// the next CSeq, and returns the new leg; nil when err is no challenge or
// it is not answered (the challenge is then the outcome).
func (w *warmRun) reauth(ctx context.Context, err error, s **sipauth.Session) *sipgo.DialogClientSession {
	var rej *sipgo.ErrDialogResponse
	if !errors.As(err, &rej) || !sipauth.Challenged(rej.Res) {
		return nil
	}
	req := w.leg.InviteRequest
	if *s == nil {
		creds, ok := w.credentialsFor(req, true)
		if !ok {
			w.log.WarnContext(ctx, "INVITE challenged: no credentials for its destination or trunk",
				"sip_code", rej.Res.StatusCode, "next_hop", nextHopHost(req))
			return nil
		}
		*s = sipauth.NewSession(creds)
	}
	next := req.Clone()
	if !w.answerChallenge(ctx, *s, next, rej.Res) {
		return nil
	}
	leg, err := w.legs.Invite(ctx, next)
	if err != nil {
		w.log.WarnContext(ctx, "INVITE with credentials not sent", "err", err)
		return nil
	}
	return leg
}

// cancelGrace is how long a cancelled INVITE may take to end (its 487);
// errAbandoned marks one that did not, or had nothing to CANCEL.
const cancelGrace = 2 * time.Second

var errAbandoned = errors.New("invite abandoned")

func finalReason(r *sip.Response, code int) string {
	if r == nil || code == 0 {
		return ""
	}
	return r.Reason
}

// answerResult turns WaitAnswer's result into an outcome.
func (w *warmRun) answerResult(ctx context.Context, err error) bool {
	var rej *sipgo.ErrDialogResponse
	switch {
	case err == nil:
		return true
	case errors.As(err, &rej):
		w.publish(ctx, failed(rej.Res.StatusCode, rej.Res.Reason,
			fmt.Sprintf("destination answered %d", rej.Res.StatusCode)))
	case errors.Is(err, sip.ErrTransactionTimeout):
		w.publish(ctx, failed(0, "", "invite timed out"))
	default:
		w.publish(ctx, failed(0, "", "INVITE: "+err.Error()))
	}
	return false
}

// ack confirms the destination's 2xx and publishes ANSWERED. On failure
// it ends the new leg and publishes the outcome.
func (w *warmRun) ack(ctx context.Context) bool {
	if err := w.leg.Ack(ctx); err != nil {
		w.publish(ctx, failed(w.leg.InviteResponse.StatusCode, w.leg.InviteResponse.Reason, "ACK: "+err.Error()))
		w.byeLeg(ctx)
		return false
	}
	w.publish(ctx, step{status: answered, code: w.leg.InviteResponse.StatusCode, reason: w.leg.InviteResponse.Reason})
	return true
}

// answerDestination takes the destination's SDP answer into the bridge
// and keeps its codec and the leg that answers its re-INVITEs. On failure
// it ends the new leg and publishes the outcome.
func (w *warmRun) answerDestination(ctx context.Context) bool {
	codec, dest, err := destinationAnswer(w.br, w.offer, w.leg.InviteResponse)
	if err != nil {
		w.byeLeg(ctx)
		w.publish(ctx, failed(0, "", "destination answer: "+err.Error()))
		return false
	}
	w.codec, w.dest = codec, dest
	w.br.SetCodec(fmt.Sprintf("%s/%d", codec.Name, codec.ClockRate))
	return true
}

// destinationAnswer reads the destination's SDP answer into the bridge
// and returns the codec and the leg that answers its re-INVITEs.
func destinationAnswer(br *bridge.Bridge, offer sdp.Session, res *sip.Response) (sdp.Format, *destinationLeg, error) {
	ans, err := sdp.Parse(string(res.Body()))
	if err != nil {
		return sdp.Format{}, nil, err
	}
	codec, ok := ans.Audio()
	if !ok {
		return sdp.Format{}, nil, errors.New("no audio codec in the answer")
	}
	if _, ok := offer.Find(codec); !ok {
		return sdp.Format{}, nil, fmt.Errorf("answered codec %s was not offered", codec.Name)
	}
	keys, err := keysOf(offer, ans)
	if err != nil {
		return sdp.Format{}, nil, err
	}
	if err := br.Leg(bridge.Destination).SetRemote(ans.Addr, codec.ClockRate, keys); err != nil {
		return sdp.Format{}, nil, err
	}
	if ans.RTCP.IsValid() {
		br.Leg(bridge.Destination).SetRTCP(ans.RTCP)
	}
	return codec, newDestinationLeg(br, offer, ans, codec, keys), nil
}

// keysOf pairs the answer's crypto with the offered one of the same tag.
func keysOf(offer, ans sdp.Session) (bridge.Keys, error) {
	if len(offer.Crypto) == 0 {
		return bridge.Keys{}, nil
	}
	if len(ans.Crypto) == 0 {
		return bridge.Keys{}, errors.New("SRTP offered, plain RTP answered")
	}
	a := ans.Crypto[0]
	for _, c := range offer.Crypto {
		if c.Tag == a.Tag && c.Suite == a.Suite {
			return bridge.Keys{Local: c, Remote: a}, nil
		}
	}
	return bridge.Keys{}, fmt.Errorf("answered crypto %d %s was not offered", a.Tag, a.Suite)
}
