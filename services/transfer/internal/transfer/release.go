package transfer

// Leaving the media path of a bridged call (issue 20, 4): once a warm
// transfer to a destination with release_bridge replaces has been bridged
// for its release delay, Baton sends the caller's side (the SBC, in the
// caller's dialog) a REFER whose Refer-To is the destination with a
// Replaces naming Baton's dialog with it (RFC 3891, RFC 5589 7). The SBC
// sends the destination an INVITE with that Replaces, which takes Baton's
// leg over: the caller then talks to the human directly and Baton's
// bridge carries nothing. On the REFER's final NOTIFY 2xx the bridged
// call ends with reason bridge_released; a refusal (405, 501, 603 or any
// other final answer), a failing or missing final NOTIFY keeps the
// bridge, and a PROGRESS outcome says so.

import (
	"context"
	"fmt"
	"time"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/request"
)

// EndBridgeReleased: the caller's side took the destination leg over (a
// REFER with Replaces succeeded); Baton left the media path.
const EndBridgeReleased = "bridge_released"

// bridgeRelease is a bridged call's release: the delay, then the REFER
// in flight until its final NOTIFY. Its channels are nil when nothing is
// due, so bridged's select skips them.
type bridgeRelease struct {
	w *warmRun
	// due fires once, the release delay after BRIDGED.
	due   <-chan time.Time
	delay *time.Timer
	// referTo and cseq are the accepted REFER's; pending while set.
	referTo string
	cseq    uint32
	pending bool
	// expired fires when the final NOTIFY is overdue.
	expired  <-chan time.Time
	deadline *time.Timer
}

// releaseResult is what a fact or timer did to a release.
type releaseResult int

const (
	releaseWaiting releaseResult = iota
	releaseDone
	releaseFailed
)

// newRelease arms the release of w's bridge when its destination asks
// for one.
func (w *warmRun) newRelease() *bridgeRelease {
	r := &bridgeRelease{w: w}
	d := w.destination()
	if d.ReleaseBridge != ReleaseReplaces {
		return r
	}
	r.delay = time.NewTimer(d.ReleaseDelay)
	r.due = r.delay.C
	return r
}

func (r *bridgeRelease) stop() {
	if r.delay != nil {
		r.delay.Stop()
	}
	if r.deadline != nil {
		r.deadline.Stop()
	}
}

// send sends the REFER with Replaces in the caller's dialog, with the
// CSeq after the caller's last request. A final answer other than 2xx
// keeps the bridge (PROGRESS); a 2xx waits for the final NOTIFY, for the
// command's answer_timeout or NotifyTimeout.
func (r *bridgeRelease) send(ctx context.Context) {
	w := r.w
	r.due = nil
	leg := w.leg
	from, _ := leg.InviteRequest.From().Params.Get("tag")
	to, _ := leg.InviteResponse.To().Params.Get("tag")
	rep := request.Replaces{CallID: leg.InviteRequest.CallID().Value(), ToTag: to, FromTag: from}
	req, err := request.ReferReplaces(w.cmd.GetDialog(), w.cseq+1, leg.InviteRequest.Recipient, rep)
	if err != nil {
		w.metrics.bridgeRelease(releaseNotSent)
		w.publish(ctx, r.kept(step{status: progress, detail: "REFER with Replaces not sent: " + err.Error() + ": the bridge stays"}, ""))
		return
	}
	referTo := req.GetHeader("Refer-To").Value()
	w.log.InfoContext(ctx, "releasing the bridge", "method", "REFER", "refer_to", referTo, "cseq", req.CSeq().SeqNo)
	rctx := ctx
	if w.bridges != nil && w.bridgeLease > 0 {
		// The bridged loop waits for this REFER and renews the lease only
		// after it: an SBC that never answers must not let the lease pass,
		// or another instance would end a working call.
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, w.bridgeLease*2/3)
		defer cancel()
	}
	res, err := w.do(rctx, req)
	// The CSeq is taken whatever came back: the caller's BYE follows it.
	w.cseq = req.CSeq().SeqNo
	switch {
	case err != nil:
		w.metrics.bridgeRelease(releaseRefused)
		w.publish(ctx, r.kept(step{status: progress, detail: "REFER with Replaces: " + err.Error() + ": the bridge stays"}, referTo))
		return
	case !res.IsSuccess():
		w.metrics.bridgeRelease(releaseRefused)
		w.publish(ctx, r.kept(step{status: progress, code: res.StatusCode, reason: res.Reason,
			detail: fmt.Sprintf("REFER with Replaces refused %d: the bridge stays", res.StatusCode)}, referTo))
		return
	}
	r.referTo, r.cseq, r.pending = referTo, req.CSeq().SeqNo, true
	timeout := w.notifyTimeout
	if t := w.cmd.GetAnswerTimeout(); t != nil && t.AsDuration() > 0 {
		timeout = t.AsDuration()
	}
	r.deadline = time.NewTimer(timeout)
	r.expired = r.deadline.C
	w.publish(ctx, step{status: progress, code: res.StatusCode, reason: res.Reason,
		detail: "REFER with Replaces accepted: waiting for its NOTIFY", release: &batonv1.BridgeRelease{ReferTo: printable(referTo)}})
}

// notify reads a NOTIFY fact: the final one about the pending REFER
// decides the release.
func (r *bridgeRelease) notify(ctx context.Context, f *batonv1.NotifyReceived) releaseResult {
	if !r.pending || !isOurs(f.GetEvent(), r.cseq) {
		return releaseWaiting
	}
	o, final := sipfragStep(f)
	if !final {
		return releaseWaiting
	}
	r.pending, r.expired = false, nil
	r.deadline.Stop()
	if o.status == succeededStatus {
		r.w.metrics.bridgeRelease(releaseReleased)
		return releaseDone
	}
	r.w.metrics.bridgeRelease(releaseRefused)
	detail := "REFER with Replaces failed"
	if o.code > 0 {
		detail = fmt.Sprintf("REFER with Replaces failed: NOTIFY %d", o.code)
	} else if o.detail != "" {
		detail += ": " + o.detail
	}
	r.w.publish(ctx, r.kept(step{status: progress, code: o.code, reason: o.reason, detail: detail + ": the bridge stays"}, r.referTo))
	return releaseFailed
}

// expire ends the wait for the final NOTIFY: the bridge stays.
func (r *bridgeRelease) expire(ctx context.Context) {
	r.pending, r.expired = false, nil
	r.w.metrics.bridgeRelease(releaseRefused)
	r.w.publish(ctx, r.kept(step{status: progress, detail: "REFER with Replaces: no final NOTIFY in time: the bridge stays"}, r.referTo))
}

// kept marks o as the outcome of a release that did not happen.
func (r *bridgeRelease) kept(o step, referTo string) step {
	o.release = &batonv1.BridgeRelease{Released: false, ReferTo: printable(referTo)}
	return o
}

// released is the ENDED outcome's release.
func (r *bridgeRelease) released() *batonv1.BridgeRelease {
	return &batonv1.BridgeRelease{Released: true, ReferTo: printable(r.referTo)}
}

// awaitLegEnd waits up to d for the destination's BYE on the replaced leg
// (the target ends the dialog its INVITE with Replaces took over, RFC
// 3891 3); it reports whether it came.
func (w *warmRun) awaitLegEnd(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.leg.Context().Done():
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// Results of a bridge release: the result label of
// baton_transfer_bridge_releases_total.
const (
	releaseReleased = "released"
	releaseRefused  = "kept"
	releaseNotSent  = "not_sent"
)
