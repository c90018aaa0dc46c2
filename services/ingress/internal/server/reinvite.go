package server

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/ingress/internal/rtp"
	"github.com/baton-voice/baton/services/ingress/internal/sdp"
)

// onReInvite answers a re-INVITE in an answered dialog (hold, resume, new
// media address or codec). An offer in the request is answered in the 200
// with the mirrored direction; a request without SDP gets ingress's offer
// in the 200 and the answer is read from the ACK (RFC 3261 14.2, RFC 3264).
// An offer with no codec ingress speaks gets 488 and changes nothing: the
// call stays up as it was. Ingress only answers; it never re-INVITEs.
func (s *Server) onReInvite(ctx context.Context, c *call, req *sip.Request, tx sip.ServerTransaction) {
	log := s.log.With("call_id", c.id)
	cseq := req.CSeq().SeqNo
	ri := &reinvite{cseq: cseq, acks: make(chan *sip.Request, 1), done: make(chan struct{})}

	// The ACK of the last re-INVITE may be on its way through another
	// goroutine; give it a moment before calling the request pending.
	awaitReinvite(c)
	c.mu.Lock()
	switch {
	case c.state == statePending:
		c.mu.Unlock()
		// The first INVITE has no final answer yet (RFC 3261 14.2).
		s.reply(req, tx, sip.StatusInternalServerError, "Server Internal Error", sip.NewHeader("Retry-After", "1"))
		return
	case cseq <= c.remoteCSeq:
		c.mu.Unlock()
		s.reply(req, tx, sip.StatusInternalServerError, "Server Internal Error") // out of order, 12.2.2
		return
	case c.reinvite != nil:
		c.mu.Unlock()
		// An offer/answer is still open: the ACK of the last one is due.
		s.reply(req, tx, sip.StatusRequestPending, "Request Pending")
		return
	}
	c.remoteCSeq = cseq
	params := sdp.Params{Host: s.cfg.ContactHost(), Port: c.media.Port(), SessionID: c.sdpSession, Version: c.sdpVersion + 1}
	c.mu.Unlock()

	body := req.Body()
	var (
		answer sdp.Answer
		local  []byte
	)
	if len(body) > 0 {
		var err error
		answer, err = sdp.Negotiate(body, params)
		if err != nil {
			log.InfoContext(ctx, "re-invite offer refused", "err", err)
			s.reply(req, tx, sip.StatusNotAcceptableHere, "Not Acceptable Here")
			return
		}
		local = answer.SDP
	} else {
		local = sdp.Offer(params)
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
	if len(body) > 0 {
		c.applyMedia(answer, time.Now())
	}

	if len(body) > 0 {
		// Queued before the 200 so that whatever the far end does next
		// is published after it.
		log.InfoContext(ctx, "re-invite answered", "direction", answer.Direction, "codec", answer.Codec.Name, "remote_rtp", answer.RemoteAddr)
		s.pub.publishAsync(ctx, c.id, callUpdated(c.id, cseq, answer, local, body))
	}
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", local)
	res.AppendHeader(sip.NewHeader("Contact", s.contactFor(req)))
	res.AppendHeader(sip.NewHeader("Allow", allow))
	ct := sip.ContentTypeHeader("application/sdp")
	res.AppendHeader(&ct)
	if err := tx.Respond(res); err != nil {
		log.WarnContext(ctx, "send 200 ok to re-invite", "err", err)
	}

	ack := s.awaitReinviteAck(ctx, c, ri, tx, res)
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
	c.applyMedia(answer, time.Now())
	log.InfoContext(ctx, "re-invite answered in ack", "direction", answer.Direction, "codec", answer.Codec.Name, "remote_rtp", answer.RemoteAddr)
	s.pub.publishAsync(ctx, c.id, callUpdated(c.id, cseq, answer, local, ack.Body()))
}

// awaitReinviteAck retransmits the 200 until the ACK with the re-INVITE's
// CSeq arrives; nil when it never does.
func (s *Server) awaitReinviteAck(ctx context.Context, c *call, ri *reinvite, tx sip.ServerTransaction, res *sip.Response) *sip.Request {
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
		case <-c.ended:
			return nil
		case <-ctx.Done():
			return nil
		case <-giveUp.C:
			s.log.WarnContext(ctx, "no ack for 200 ok to re-invite", "call_id", c.id)
			return nil
		case <-retransmit.C:
			if err := tx.Respond(res); err != nil {
				s.log.WarnContext(ctx, "retransmit 200 ok", "call_id", c.id, "err", err)
			}
			interval = min(2*interval, sip.T2)
			retransmit.Reset(interval)
		}
	}
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

// onRTPDigit publishes the RFC 4733 digits of a call.
func (s *Server) onRTPDigit(ctx context.Context, callID string) func(rtp.DTMF) {
	return func(d rtp.DTMF) {
		s.pub.publishAsync(ctx, callID, &batonv1.DtmfReceived{CallId: callID, Digit: d.Digit, DurationMs: d.DurationMS, Source: "rfc4733"})
	}
}

// Reasons an INFO body is refused.
var errDTMFBody = errors.New("dtmf body")

// parseInfoDTMF reads an INFO body: application/dtmf-relay
// ("Signal=5\r\nDuration=160") or application/dtmf ("5").
func parseInfoDTMF(contentType string, body []byte) (rtp.DTMF, error) {
	var signal, duration string
	switch strings.ToLower(contentType) {
	case "application/dtmf-relay":
		for line := range strings.SplitSeq(string(body), "\n") {
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "signal":
				signal = strings.TrimSpace(v)
			case "duration":
				duration = strings.TrimSpace(v)
			}
		}
	case "application/dtmf":
		signal = strings.TrimSpace(string(body))
	default:
		return rtp.DTMF{}, errors.Join(errDTMFBody, errors.New("content type "+contentType))
	}
	digit, ok := dtmfDigit(signal)
	if !ok {
		return rtp.DTMF{}, errors.Join(errDTMFBody, errors.New("signal "+quote(signal)))
	}
	var ms uint32
	if duration != "" {
		n, err := parseUint(duration)
		if err != nil {
			return rtp.DTMF{}, errors.Join(errDTMFBody, errors.New("duration "+quote(duration)))
		}
		ms = n
	}
	return rtp.DTMF{Digit: digit, DurationMS: ms}, nil
}

// dtmfDigit names a signal: one of 0-9 * # A-D (any case), or the RFC 4733
// codes 10-16 some relays send instead.
func dtmfDigit(s string) (string, bool) {
	if len(s) == 1 {
		ch := strings.ToUpper(s)
		if strings.ContainsAny(ch, "0123456789*#ABCD") {
			return ch, true
		}
		return "", false
	}
	switch strings.ToLower(s) {
	case "10":
		return "*", true
	case "11":
		return "#", true
	case "12", "13", "14", "15":
		return string(rune('A' + s[1] - '2')), true
	case "16", "flash":
		return "flash", true
	}
	return "", false
}

func quote(s string) string {
	if len(s) > 32 {
		s = s[:32] + "..."
	}
	return strconv.Quote(s)
}

func parseUint(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}
