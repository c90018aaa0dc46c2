package handoff

import (
	"context"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// Inbound REFER (docs/decisions/0019): the far end REFERred a call and
// ingress's refer.policy handed it over. The router decides it like an
// agent's handoff request for the Refer-To target, on the same path:
// max_handoffs_per_call, a handoff already in progress, the allowlist
// and the denied numbers all apply, and a refusal is a HandoffRefused
// whose request_id is the REFER's refer_id (ingress NOTIFYs 603 on it).
const (
	// InboundReferReason is the handoff reason of an inbound REFER.
	InboundReferReason = "inbound_refer"
	// InboundReferRequester is its requested_by.
	InboundReferRequester = "inbound-refer"
)

// inboundRefer folds an InboundReferReceived as a HandoffRequested for
// its target.
func (f *Fold) inboundRefer(ctx context.Context, table *Table, ev events.Event, msg *batonv1.InboundReferReceived) *Decision {
	id := ev.Subject
	c := f.calls[id]
	if c == nil || (msg.GetCallId() != "" && msg.GetCallId() != id) {
		f.logger.WarnContext(ctx, "inbound refer for an unknown call; skipped", "call_id", id, "refer_id", msg.GetReferId())
		return nil
	}
	if c.handled[ev.ID] {
		return nil // handoffRequested logs the duplicate
	}
	// The requests of this handoff number above ingress's 100 Trying
	// NOTIFY, so the far end never sees a CSeq go down (RFC 3261 12.2.2).
	if n := msg.GetNotifyCseq(); c.dialog != nil && n >= c.dialog.GetNextLocalCseq() && n < 1<<31-1 {
		c = f.mutable(id)
		c.dialog = proto.CloneOf(c.dialog)
		c.dialog.NextLocalCseq = n + 1
	}
	target := referTarget(table, msg.GetReferTo())
	req := &batonv1.HandoffRequested{
		CallId:      id,
		RequestId:   msg.GetReferId(),
		Destination: target,
		Reason:      InboundReferReason,
		RequestedBy: InboundReferRequester,
	}
	return f.handoffRequested(ctx, table, ev, req)
}

// asTransferee is the destination an inbound REFER's handoff uses, its
// first command and every fallback alike: Baton is the transferee (RFC
// 3515) and calls the target itself. REFERring the far end back to the
// target it asked Baton to reach would loop, so a REFER destination
// becomes an INVITE leg (TLS with SRTP unless it names its encryption).
func asTransferee(d Destination) Destination {
	if d.Method != batonv1.Method_METHOD_REFER {
		return d
	}
	d.Method = batonv1.Method_METHOD_INVITE
	d.ContextIn = ""
	if d.Encryption == "" {
		d.Encryption = EncryptionTLSSRTP
	}
	return d
}

// noReferTarget stands for a REFER without a usable target: it is no
// destination name and no route, so it is refused unknown_destination
// (an empty target would let the rules and the default pick one).
const noReferTarget = "(no refer-to)"

// referTarget is the handoff target of a Refer-To: the name of the
// configured destination whose route it is (its method, headers and
// encryption then apply), else the URI itself, which only the allowlist
// can admit; never a destination by name.
func referTarget(table *Table, referTo string) string {
	referTo = strings.TrimSpace(referTo)
	if !strings.Contains(referTo, ":") {
		// Not a URI: a destination's name must not be reachable by a
		// REFER naming it.
		return noReferTarget
	}
	var match string
	for name, d := range table.Destinations {
		if strings.EqualFold(d.Route, referTo) && (match == "" || name < match) {
			match = name // the smallest name, so the choice is stable
		}
	}
	if match != "" {
		return match
	}
	return referTo
}
