package server

import (
	"bytes"
	"context"
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/ingress/internal/rtp"
	"github.com/baton-voice/baton/services/ingress/internal/sdp"
)

// reinvite is a re-INVITE whose 200 OK waits for the ACK; the ACK carries
// the answer when ingress made the offer.
type reinvite struct {
	cseq uint32
	acks chan *sip.Request
	done chan struct{} // closed when the re-INVITE is through
}

// onReInvite answers a re-INVITE in an answered dialog (hold, resume, new
// media address or codec). An offer in the request is answered in the 200
// with the mirrored direction; a request without SDP gets ingress's offer
// in the 200 and the answer is read from the ACK (RFC 3261 14.2, RFC 3264).
// An offer with no codec ingress speaks gets 488 and changes nothing: the
// call stays up as it was. Ingress only answers; it never re-INVITEs.
// contact is the Contact of the 200.
func (c *inboundCall) onReInvite(ctx context.Context, req *sip.Request, tx sip.ServerTransaction, contact string) {
	log := c.env.log.With("call_id", c.id)
	cseq := req.CSeq().SeqNo
	ri := &reinvite{cseq: cseq, acks: make(chan *sip.Request, 1), done: make(chan struct{})}

	// The ACK of the last re-INVITE may be on its way through another
	// goroutine; give it a moment before calling the request pending.
	c.awaitReinvite()
	c.mu.Lock()
	switch {
	case c.state == statePending:
		c.mu.Unlock()
		// The first INVITE has no final answer yet (RFC 3261 14.2).
		reply(c.env.log, req, tx, sip.StatusInternalServerError, "Server Internal Error", sip.NewHeader("Retry-After", "1"))
		return
	case cseq <= c.remoteCSeq:
		c.mu.Unlock()
		reply(c.env.log, req, tx, sip.StatusInternalServerError, "Server Internal Error") // out of order, 12.2.2
		return
	case c.reinvite != nil:
		c.mu.Unlock()
		// An offer/answer is still open: the ACK of the last one is due.
		reply(c.env.log, req, tx, sip.StatusRequestPending, "Request Pending")
		return
	}
	c.remoteCSeq = cseq
	// Built at the session's current version first: an answer equal to
	// the last description sent (a session refresh, RFC 4028) keeps it;
	// any change moves it on by one (RFC 3264 8).
	params := sdp.Params{Host: c.env.sdpHost, Port: c.media.Port(), SessionID: c.sdpSession, Version: c.sdpVersion}
	last := c.localSDP
	// A bridged call's media is the bridge's: answer with its address,
	// and leave the anchor alone (issue 19, 2).
	bridged := c.mediaMoved && c.bridge.Port != 0
	if bridged {
		params.MediaHost, params.Port = c.bridge.Host, c.bridge.Port
	}
	c.mu.Unlock()

	body := req.Body()
	var (
		answer sdp.Answer
		local  []byte
	)
	describe := func() error {
		if len(body) == 0 {
			local = sdp.Offer(params)
			return nil
		}
		var err error
		answer, err = sdp.Negotiate(body, params)
		local = answer.SDP
		return err
	}
	if err := describe(); err != nil {
		log.InfoContext(ctx, "re-invite offer refused", "err", err)
		reply(c.env.log, req, tx, sip.StatusNotAcceptableHere, "Not Acceptable Here")
		return
	}
	if !bytes.Equal(local, last) {
		params.Version++
		if err := describe(); err != nil {
			log.InfoContext(ctx, "re-invite offer refused", "err", err)
			reply(c.env.log, req, tx, sip.StatusNotAcceptableHere, "Not Acceptable Here")
			return
		}
	}

	c.mu.Lock()
	c.sdpVersion = params.Version
	c.localSDP = local
	c.reinvite = ri
	if len(body) > 0 {
		c.codec = answer.Codec.Name
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.reinvite == ri {
			c.reinvite = nil
		}
		c.mu.Unlock()
		close(ri.done)
	}()
	if len(body) > 0 && !bridged {
		c.applyMedia(answer, time.Now())
	}

	if len(body) > 0 {
		// Queued before the 200 so that whatever the far end does next
		// is published after it.
		log.InfoContext(ctx, "re-invite answered", "direction", answer.Direction, "codec", answer.Codec.Name, "remote_rtp", answer.RemoteAddr)
		c.env.facts.publishAsync(ctx, c.id, callUpdated(c.id, cseq, answer, local, body))
	}
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", local)
	res.AppendHeader(sip.NewHeader("Contact", contact))
	res.AppendHeader(sip.NewHeader("Allow", allow))
	ct := sip.ContentTypeHeader("application/sdp")
	res.AppendHeader(&ct)
	if err := tx.Respond(res); err != nil {
		log.WarnContext(ctx, "send 200 ok to re-invite", "err", err)
	}

	ack := c.awaitReinviteAck(ctx, ri, tx, res)
	if ack == nil || len(body) > 0 {
		return
	}
	// Ingress offered: the ACK holds the answer.
	answer, err := sdp.ReadAnswer(ack.Body(), local)
	if err != nil {
		// The dialog lives on (it is not dead, only its last offer
		// failed): the media stays as it was and the mismatch is logged.
		log.WarnContext(ctx, "re-invite answer in ack unusable; media unchanged", "err", err)
		return
	}
	c.mu.Lock()
	c.codec = answer.Codec.Name
	c.mu.Unlock()
	if !bridged {
		c.applyMedia(answer, time.Now())
	}
	log.InfoContext(ctx, "re-invite answered in ack", "direction", answer.Direction, "codec", answer.Codec.Name, "remote_rtp", answer.RemoteAddr)
	c.env.facts.publishAsync(ctx, c.id, callUpdated(c.id, cseq, answer, local, ack.Body()))
}

// awaitReinviteAck retransmits the 200 until the ACK with the re-INVITE's
// CSeq arrives; nil when it never does.
func (c *inboundCall) awaitReinviteAck(ctx context.Context, ri *reinvite, tx sip.ServerTransaction, res *sip.Response) *sip.Request {
	interval := sip.T1
	retransmit := time.NewTimer(interval)
	defer retransmit.Stop()
	giveUp := time.NewTimer(64 * sip.T1)
	defer giveUp.Stop()
	for {
		select {
		case ack := <-ri.acks:
			return ack
		case ack := <-tx.Acks():
			return ack
		case <-c.done:
			return nil
		case <-ctx.Done():
			return nil
		case <-giveUp.C:
			c.env.log.WarnContext(ctx, "no ack for 200 ok to re-invite", "call_id", c.id)
			return nil
		case <-retransmit.C:
			if err := tx.Respond(res); err != nil {
				c.env.log.WarnContext(ctx, "retransmit 200 ok", "call_id", c.id, "err", err)
			}
			interval = min(2*interval, sip.T2)
			retransmit.Reset(interval)
		}
	}
}

// awaitReinvite lets a BYE that follows an ACK wait, briefly, for the
// re-INVITE the ACK completes, so its CallUpdated is published before the
// CallEnded (sipgo runs each request on its own goroutine, and an ACK gets
// no answer the far end could wait for).
func (c *inboundCall) awaitReinvite() {
	c.mu.Lock()
	ri := c.reinvite
	c.mu.Unlock()
	if ri == nil {
		return
	}
	t := time.NewTimer(sip.T1)
	defer t.Stop()
	select {
	case <-ri.done:
	case <-t.C:
	}
}

// applyMedia puts an offer/answer into force on c's RTP session and
// restarts c's media clock.
func (c *inboundCall) applyMedia(a sdp.Answer, now time.Time) {
	c.media.SetMedia(mediaOf(a))
	c.mu.Lock()
	c.remoteSends, c.mediaSince = remoteSends(a), now
	c.mu.Unlock()
}

// remoteSends reports whether an offer/answer lets the caller send RTP:
// its direction sendrecv or sendonly, and not on hold (a caller holding
// may send music or nothing at all).
func remoteSends(a sdp.Answer) bool {
	return !a.Hold && (a.RemoteDirection == "sendrecv" || a.RemoteDirection == "sendonly")
}

func callUpdated(callID string, cseq uint32, a sdp.Answer, local, remote []byte) *batonv1.CallUpdated {
	return &batonv1.CallUpdated{
		CallId:           callID,
		Direction:        a.Direction,
		RemoteDirection:  a.RemoteDirection,
		Hold:             a.Hold,
		Codec:            a.Codec.Name,
		RemoteRtpAddress: a.RemoteAddr,
		LocalSdp:         string(local),
		RemoteSdp:        string(remote),
		Cseq:             cseq,
	}
}

// mediaOf is what an offer/answer means for the RTP session: the codec,
// where to send, and whether Baton may send at all.
func mediaOf(a sdp.Answer) (rtp.Media, netip.AddrPort, bool) {
	m := rtp.Media{Codec: a.Codec.Name, PayloadType: a.Codec.PayloadType, ClockRate: a.Codec.ClockRate, EventPayloadType: a.TelephoneEvent}
	remote, err := netip.ParseAddrPort(a.RemoteAddr)
	if err != nil {
		remote = netip.AddrPort{} // a host name or nothing: no audio is sent
	}
	return m, remote, a.Direction == "sendrecv" || a.Direction == "sendonly"
}
