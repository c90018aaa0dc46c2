package transfer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"google.golang.org/protobuf/types/known/durationpb"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/bridge"
	"github.com/baton-voice/baton/services/transfer/internal/request"
	"github.com/baton-voice/baton/services/transfer/internal/sipauth"
)

// idlePoll is how often a bridged call checks its media.
const idlePoll = 200 * time.Millisecond

// bridged runs the bridged call until one side hangs up, the media stops
// or the process shuts down, ends the other side and publishes ENDED with
// the bridge's statistics.
func (w *warmRun) bridged(ctx context.Context) {
	idle := w.inviteOpts.IdleTimeout
	tick := time.NewTicker(idlePoll)
	defer tick.Stop()
	rel := w.newRelease()
	defer rel.stop()
	// The bridge is held on the log while it is up (lost.go): run wrote
	// its first lease; renewed here.
	var renew <-chan time.Time
	if w.bridges != nil {
		t := time.NewTicker(w.bridgeLease / 3)
		defer t.Stop()
		renew = t.C
	}
	claimed := false
	legDone := w.leg.Context().Done()
	var detail, why string
	byeCaller, byeDestination := true, true
	callerHeld := false
	// destGone: the destination ended its leg while a release's REFER
	// waited for its NOTIFY (the INVITE with Replaces took the leg over,
	// or the human hung up: the NOTIFY tells).
	destGone, released := false, false
	for detail == "" {
		select {
		case <-legDone:
			if rel.pending {
				destGone, legDone = true, nil
				w.log.InfoContext(ctx, "destination ended its leg while the bridge is being released; waiting for the NOTIFY")
				continue
			}
			detail, why, byeDestination = "destination hung up", EndDestinationHangup, false
		case <-renew:
			if !w.holdBridge(ctx) {
				// Its lease passed (this process stalled) and another
				// instance ended the call: it sends the BYEs and the outcome.
				detail, why, claimed = "bridge claimed by another instance", EndBridgeLost, true
			}
		case <-rel.due:
			// A fresh lease first: the REFER holds this loop (and so the
			// renewals) up to two thirds of one.
			if w.holdBridge(ctx) {
				rel.send(ctx)
			}
			if !w.holdBridge(ctx) { // the lease carries the caller's next CSeq
				detail, why, claimed = "bridge claimed by another instance", EndBridgeLost, true
			}
		case <-rel.expired:
			rel.expire(ctx)
			if destGone {
				detail, why, byeDestination = "destination hung up", EndDestinationHangup, false
			}
		case fact := <-w.facts:
			switch f := fact.(type) {
			case *batonv1.CallEnded:
				detail, why, byeCaller = "caller hung up ("+f.GetMethod()+")", EndCallerHangup, false
			case *batonv1.NotifyReceived:
				switch rel.notify(ctx, f) {
				case releaseDone:
					detail, why, released = "caller connected to the destination (REFER with Replaces): Baton left the media path",
						EndBridgeReleased, true
				case releaseFailed:
					if destGone {
						detail, why, byeDestination = "destination hung up", EndDestinationHangup, false
					}
				}
			case *batonv1.CallUpdated:
				callerHeld = callerUpdate(w.br.Leg(bridge.Caller), f)
				w.log.InfoContext(ctx, "caller re-INVITE on the bridged call", "direction", f.GetDirection(),
					"hold", f.GetHold(), "remote_rtp", f.GetRemoteRtpAddress())
			}
		case now := <-tick.C:
			var ignore []bridge.Side
			if w.dest.onHold() {
				ignore = append(ignore, bridge.Destination) // a held call is silent
			}
			if callerHeld {
				ignore = append(ignore, bridge.Caller)
			}
			if side, silent := w.br.Idle(now, idle, ignore...); silent {
				detail, why = fmt.Sprintf("no media from the %s for %v", side, idle), EndMediaTimeout
			}
		case <-ctx.Done():
			detail, why = "transfer shut down", EndShutdown
		}
	}
	if claimed {
		w.log.WarnContext(ctx, "bridge claimed by another instance after its lease passed: left to it", "reason", why)
		return
	}
	defer w.endBridge(ctx)
	// The BYEs outlive a shutdown's cancelled ctx, briefly.
	byeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.inviteOpts.ByeTimeout)
	defer cancel()
	var release *batonv1.BridgeRelease
	if released {
		release = rel.released()
		// The destination's leg was taken over: it ends it itself; Baton
		// ends it when it does not within ByeTimeout.
		byeDestination = !destGone && !w.awaitLegEnd(ctx, w.inviteOpts.ByeTimeout)
	}
	if byeDestination {
		w.byeLeg(byeCtx)
	}
	if byeCaller {
		if req, err := request.InDialogCSeq(sip.BYE, w.cmd.GetDialog(), w.cseq+1); err == nil {
			if _, err := w.do(byeCtx, req); err != nil {
				w.log.WarnContext(ctx, "caller BYE", "err", err)
			}
		}
	}
	w.publish(ctx, step{status: ended, detail: detail, bridge: w.stats(ctx), ended: why, release: release})
}

// callerUpdate applies the caller's re-INVITE on a bridged call, which
// ingress (the dialog's UAS) answered from the bridge's address: the
// caller is sent media only while Baton's side of the session sends
// (sendrecv or sendonly), and a new media address is followed. It
// reports whether the caller holds (its silence then is not a dead leg).
func callerUpdate(leg *bridge.Leg, u *batonv1.CallUpdated) bool {
	dir := u.GetDirection()
	leg.SetReceiving(dir == "sendrecv" || dir == "sendonly" || dir == "")
	if ap, err := netip.ParseAddrPort(u.GetRemoteRtpAddress()); err == nil && !ap.Addr().IsUnspecified() {
		if cur, ok := leg.Remote(); !ok || cur.Addr() != ap.Addr() {
			leg.Move(ap)
		}
	}
	return u.GetHold()
}

// stats are the ended bridge's statistics; its RTCP and dropped packets
// are logged and its drops counted.
func (w *warmRun) stats(ctx context.Context) *batonv1.BridgeStats {
	br := w.br
	stats := br.Stats()
	for _, side := range []bridge.Side{bridge.Caller, bridge.Destination} {
		l := br.Leg(side)
		if sent, recv := l.RTCPCounts(); sent+recv > 0 {
			w.log.InfoContext(ctx, "rtcp", "leg", side.String(), "sent", sent, "received", recv, "rtt", l.RTT().String())
		}
	}
	if since := br.Since(); !since.IsZero() {
		stats.Duration = durationpb.New(w.now().Sub(since))
	}
	for _, side := range []bridge.Side{bridge.Caller, bridge.Destination} {
		if d := br.Leg(side).Drops(); d.Unauthentic+d.Replayed > 0 {
			w.log.WarnContext(ctx, "srtp packets dropped", "leg", side.String(), "unauthentic", d.Unauthentic, "replayed", d.Replayed)
		}
		if d, n := br.Leg(side).Drops(), br.Leg(side).Relatches(); d.Foreign+n > 0 {
			w.log.InfoContext(ctx, "media from other sources dropped", "leg", side.String(), "foreign", d.Foreign, "relatches", n)
		}
	}
	w.metrics.legDrops(br)
	return stats
}

// byeLeg ends the new leg, logging a failure.
func (w *warmRun) byeLeg(ctx context.Context) {
	byeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.inviteOpts.ByeTimeout)
	defer cancel()
	err := w.leg.Bye(byeCtx)
	var s *sipauth.Session
	for {
		var rej sipgo.ErrDialogResponse
		if !errors.As(err, &rej) || !sipauth.Challenged(rej.Res) {
			break
		}
		// The destination's side challenged the BYE: the same BYE in the
		// leg's dialog with credentials (sipgo numbers its CSeq).
		bye := sip.NewRequest(sip.BYE, w.leg.InviteResponse.Contact().Address)
		bye.AppendHeader(&sip.CSeqHeader{SeqNo: rej.Res.CSeq().SeqNo, MethodName: sip.BYE})
		if s == nil {
			creds, ok := w.credentialsFor(w.leg.InviteRequest, true)
			if !ok {
				break
			}
			s = sipauth.NewSession(creds)
		}
		if !w.answerChallenge(ctx, s, bye, rej.Res) {
			break
		}
		err = w.leg.WriteBye(byeCtx, bye)
	}
	if err != nil {
		w.log.WarnContext(ctx, "destination BYE", "err", err)
	}
}
