package server

import (
	"context"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/ingress/internal/headers"
)

// The far end's requests in c's dialog, once the Server's lookup found c
// (Call-ID, our tag in To, theirs in From); a request that matches no
// call gets 481 there, and never reaches these.

// onAck takes an ACK in the dialog: the one a re-INVITE's 200 waits for
// (its CSeq), else the ACK of the 2xx to the INVITE.
func (c *inboundCall) onAck(req *sip.Request) {
	c.mu.Lock()
	ri := c.reinvite
	c.mu.Unlock()
	if ri != nil && req.CSeq() != nil && req.CSeq().SeqNo == ri.cseq {
		select {
		case ri.acks <- req:
		default: // a retransmitted ACK; the first is being handled
		}
		return
	}
	c.ack()
}

// onBye ends the call for the far end.
func (c *inboundCall) onBye(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
	// The far end considers the call over whatever we answer, so BYE is
	// answered 200 even when the CallEnded publish fails (it is logged).
	c.awaitReinvite()
	c.end(ctx, byRemote(sip.BYE, headers.Value(req.Headers(), "Reason")))
	reply(c.env.log, req, tx, sip.StatusOK, "OK")
}

// onNotify publishes a NOTIFY (a REFER's progress, RFC 3515) as
// NotifyReceived, with the status line of a message/sipfrag body, and
// answers 200 once Kafka has it; 503 when it does not.
func (c *inboundCall) onNotify(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
	hs := req.Headers()
	n := &batonv1.NotifyReceived{
		CallId:            c.id,
		Event:             headers.Value(hs, "Event"),
		SubscriptionState: headers.Value(hs, "Subscription-State"),
	}
	if cseq := req.CSeq(); cseq != nil {
		n.Cseq = cseq.SeqNo
	}
	if ct := req.ContentType(); ct != nil && strings.EqualFold(mediaType(ct.Value()), "message/sipfrag") {
		if frag, err := sipx.ParseSipfrag(req.Body()); err == nil {
			n.SipfragStatus = int32(frag.Status)
			n.SipfragReason = frag.Reason
		} else {
			c.env.log.WarnContext(ctx, "notify body", "call_id", c.id, "err", err)
		}
	}
	if err := c.env.facts.publish(ctx, c.id, n); err != nil {
		c.env.log.ErrorContext(ctx, "publish notify", "call_id", c.id, "err", err)
		reply(c.env.log, req, tx, sip.StatusServiceUnavailable, "Service Unavailable", sip.NewHeader("Retry-After", c.env.retryAfter))
		return
	}
	reply(c.env.log, req, tx, sip.StatusOK, "OK")
}

// onInfo accepts INFO in the dialog: a DTMF relay body becomes a
// DtmfReceived fact; an empty INFO (a keepalive) is just answered.
func (c *inboundCall) onInfo(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
	if len(req.Body()) == 0 {
		reply(c.env.log, req, tx, sip.StatusOK, "OK")
		return
	}
	ct := ""
	if h := req.ContentType(); h != nil {
		ct = mediaType(h.Value())
	}
	d, err := parseInfoDTMF(ct, req.Body())
	if err != nil {
		c.env.log.InfoContext(ctx, "info refused", "call_id", c.id, "err", err)
		reply(c.env.log, req, tx, sip.StatusBadRequest, "Bad Request")
		return
	}
	// Queued before the answer, so it precedes what the far end does next.
	c.env.facts.publishAsync(ctx, c.id, &batonv1.DtmfReceived{CallId: c.id, Digit: d.Digit, DurationMs: d.DurationMS, Source: "info"})
	c.agentDTMF(d.Digit)
	reply(c.env.log, req, tx, sip.StatusOK, "OK")
}

// mediaType is the type/subtype of a Content-Type value, without parameters.
func mediaType(v string) string {
	t, _, _ := strings.Cut(v, ";")
	return strings.TrimSpace(t)
}
