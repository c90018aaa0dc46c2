package transfer

// Bridges that outlive their instance (issue 20, 4; docs/decisions/0020).
// A bridge lives in the memory and the sockets of the transfer process
// that set it up: when that process dies, nothing carries the media and
// the caller hears silence until they hang up. So every bridge is held on
// the attempt log with a lease (a BridgeHeld record renewed every third
// of Options.BridgeLease, tombstoned when the bridge ends), and every
// instance looks for held bridges whose lease has passed: it claims one
// (the first claim in the log wins), ends both dialogs with BYEs (the
// caller's with ingress's dialog, the destination's with the leg's, both
// from the record) and publishes ENDED with reason bridge_lost, on which
// ingress ends the call.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/transfer/internal/attempts"
	"github.com/baton-voice/baton/services/transfer/internal/request"
)

// EndBridgeLost: the transfer instance holding the bridge stopped (its
// lease on the log passed); another instance ended the call.
const EndBridgeLost = "bridge_lost"

// BridgeLog is the durable record of the bridges held (attempts.Log is
// the real one).
type BridgeLog interface {
	// HoldBridge renews a bridge's lease; attempts.ErrBridgeClaimed once
	// another instance claimed it.
	HoldBridge(ctx context.Context, m *batonv1.BridgeHeld) error
	// EndBridge says the bridge ended.
	EndBridge(ctx context.Context, commandID string) error
	// LostBridges are the unclaimed bridges whose lease ended before now.
	LostBridges(now time.Time) []*batonv1.BridgeHeld
	// ClaimBridge claims a lost bridge: true when this instance's claim
	// came first.
	ClaimBridge(ctx context.Context, m *batonv1.BridgeHeld) (bool, error)
}

// bridgesOf is l, or the attempt log when it is a BridgeLog; nil when
// leases are off.
func bridgesOf(l BridgeLog, a AttemptLog, lease time.Duration) BridgeLog {
	if lease <= 0 {
		return nil
	}
	if l != nil {
		return l
	}
	if b, ok := a.(BridgeLog); ok {
		return b
	}
	return nil
}

// holdBridge writes the bridge's lease: at BRIDGED and on every renewal.
// It reports false when another instance claimed the bridge.
func (w *warmRun) holdBridge(ctx context.Context) bool {
	if w.bridges == nil {
		return true
	}
	now := w.now()
	if w.bridgedAt.IsZero() {
		w.bridgedAt = now
	}
	caller := proto.CloneOf(w.cmd.GetDialog())
	caller.NextLocalCseq = w.cseq + 1
	m := &batonv1.BridgeHeld{
		CommandId: w.cmd.GetCommandId(), CallId: w.callID, Destination: w.cmd.GetDestination(),
		BridgedAt: timestamppb.New(w.bridgedAt), LeaseUntil: timestamppb.New(now.Add(w.bridgeLease)),
		Caller: caller, DestinationLeg: legDialog(w.leg.InviteRequest, w.leg.InviteResponse),
	}
	// Bounded like every produce (kafka.Config.ProduceTimeout): during a
	// broker outage the bridged loop must still see the call's end.
	pctx, cancel := context.WithTimeout(ctx, w.produceTimeout)
	err := w.bridges.HoldBridge(pctx, m)
	cancel()
	switch {
	case errors.Is(err, attempts.ErrBridgeClaimed):
		return false
	case err != nil:
		// The lease may pass: another instance would then end the call.
		w.log.WarnContext(ctx, "bridge lease not renewed", "err", err)
	}
	return true
}

// endBridge says on the log that the bridge ended.
func (w *warmRun) endBridge(ctx context.Context) {
	if w.bridges == nil {
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.produceTimeout)
	defer cancel()
	if err := w.bridges.EndBridge(pctx, w.cmd.GetCommandId()); err != nil {
		w.log.WarnContext(ctx, "bridge end not recorded", "err", err)
	}
}

// legDialog is Baton's dialog with the destination, as a UAC (RFC 3261
// 12.1.2): its BYE's Request-URI is the destination's Contact, its route
// set the 2xx's Record-Route reversed, sent where the 2xx came from.
func legDialog(req *sip.Request, res *sip.Response) *batonv1.Dialog {
	if req == nil || res == nil {
		return nil
	}
	fromTag, _ := req.From().Params.Get("tag")
	toTag, _ := res.To().Params.Get("tag")
	target := req.Recipient.String()
	if c := res.Contact(); c != nil {
		target = c.Address.String()
	}
	var routes []string
	for _, h := range res.GetHeaders("Record-Route") {
		routes = append(routes, h.Value())
	}
	slices.Reverse(routes)
	d := &batonv1.Dialog{
		CallId: req.CallID().Value(), LocalTag: fromTag, RemoteTag: toTag,
		LocalUri: req.From().Address.String(), RemoteUri: req.To().Address.String(),
		RemoteTarget: target, RouteSet: routes, Transport: sipx.TransportOf(req.Transport()),
		NextLocalCseq: req.CSeq().SeqNo + 1,
	}
	if c := req.Contact(); c != nil {
		d.LocalContact = "<" + c.Address.String() + ">"
	}
	if hop, err := netip.ParseAddrPort(res.Source()); err == nil {
		d.NextHop, d.NextHopTransport = hop.String(), d.Transport
	}
	return d
}

// sweepLostBridges looks, every third of the lease until ctx ends, for
// bridges whose instance stopped renewing them, claims each and releases
// the ones whose claim came first (in work, like an execution). A claimed
// bridge is no longer lost (attempts.Log.LostBridges), so each is claimed
// once per instance.
func (s *Service) sweepLostBridges(ctx, work context.Context) {
	every := s.deps.bridgeLease / 3
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, m := range s.deps.bridges.LostBridges(s.deps.now()) {
			id := m.GetCommandId()
			if s.reg.known(id) {
				continue // this process runs it
			}
			pctx, cancel := context.WithTimeout(ctx, s.deps.produceTimeout)
			won, err := s.deps.bridges.ClaimBridge(pctx, m)
			cancel()
			if err != nil {
				s.logger.WarnContext(ctx, "lost bridge not claimed", "call_id", m.GetCallId(), "command_id", id, "err", err)
				continue
			}
			if !won {
				continue
			}
			s.wg.Go(func() { s.releaseLost(work, m) })
		}
	}
}

// releaseLost ends a bridged call whose instance died: BYE to the caller
// (in ingress's dialog) and to the destination (in the leg's), then ENDED
// bridge_lost, then the bridge's end on the log. Its elapsed runs from
// when the call was bridged.
func (s *Service) releaseLost(ctx context.Context, m *batonv1.BridgeHeld) {
	cmd := &batonv1.HandoffCommand{CommandId: m.GetCommandId(), CallId: m.GetCallId(), Method: batonv1.Method_METHOD_INVITE,
		Destination: m.GetDestination(), Dialog: m.GetCaller()}
	e := &execution{
		deps:   s.deps,
		log:    s.logger.With("call_id", m.GetCallId(), "command_id", m.GetCommandId()),
		cmd:    cmd,
		method: cmd.GetMethod(),
		callID: m.GetCallId(),
		start:  m.GetBridgedAt().AsTime(),
	}
	lease := m.GetLeaseUntil().AsTime().UTC().Format(time.RFC3339Nano)
	e.log.WarnContext(ctx, "bridge lost: its transfer instance stopped renewing it; ending the call", "instance", m.GetInstance(),
		"lease_until", lease)
	byeCtx, cancel := context.WithTimeout(ctx, s.deps.inviteOpts.ByeTimeout)
	defer cancel()
	var byes []string
	for _, side := range []struct {
		name string
		d    *batonv1.Dialog
	}{{"caller", m.GetCaller()}, {"destination", m.GetDestinationLeg()}} {
		req, err := request.InDialogCSeq(sip.BYE, side.d, side.d.GetNextLocalCseq())
		if err != nil {
			e.log.WarnContext(ctx, "lost bridge: BYE not sent", "leg", side.name, "err", err)
			byes = append(byes, side.name+" not sent")
			continue
		}
		res, err := e.do(byeCtx, req)
		if err != nil {
			e.log.WarnContext(ctx, "lost bridge: BYE", "leg", side.name, "err", err)
			byes = append(byes, side.name+" unanswered")
			continue
		}
		e.log.InfoContext(ctx, "lost bridge: leg ended", "leg", side.name, "sip_code", res.StatusCode)
		byes = append(byes, fmt.Sprintf("%s %d", side.name, res.StatusCode))
	}
	detail := fmt.Sprintf("transfer instance %s holding the bridge stopped (lease ended %s): call ended (BYE: %s)",
		m.GetInstance(), lease, strings.Join(byes, ", "))
	e.publish(ctx, step{status: ended, detail: detail, ended: EndBridgeLost})
	pctx, cancelEnd := context.WithTimeout(ctx, s.deps.produceTimeout)
	defer cancelEnd()
	if err := s.deps.bridges.EndBridge(pctx, m.GetCommandId()); err != nil {
		e.log.WarnContext(ctx, "lost bridge: end not recorded", "err", err)
	}
}
