package server

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/baton-voice/baton/services/ingress/internal/sdp"
	"github.com/baton-voice/baton/services/ingress/internal/trunks"
)

// onInvite takes an INVITE. In a dialog (a To tag) it is the call's
// re-INVITE. Otherwise the Server admits the call (orphans of a restart,
// the source's un-ACKed handshakes, the SDP offer, an RTP port, the trunk,
// the call table and its limits) and publishes its CallStarted; then the
// call answers and waits for the ACK itself (inboundCall.answer).
func (s *Server) onInvite(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
	callID := ""
	if h := req.CallID(); h != nil {
		callID = h.Value()
	}
	log := s.log.With("call_id", callID)
	ctx, span := s.tracer.Start(ctx, "ingress invite", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("call_id", callID)))
	defer span.End()
	if to := req.To(); to != nil && to.Params.Has("tag") {
		c := s.lookup(req)
		if c == nil {
			reply(s.log, req, tx, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
			return
		}
		c.onReInvite(ctx, req, tx, s.contactFor(req))
		return
	}
	if s.refuseOrphan(callID, func() { reply(s.log, req, tx, sip.StatusInternalServerError, "Server Internal Error") }) {
		return
	}
	src := sourceAddr(req)
	handshakeDone, refused := s.handshakes.begin(src, req.Transport() != "UDP", time.Now())
	if refused != notRefused {
		s.stats.UnackedSource.Add(1)
		s.rejectLog.Log(s.log, "invite refused: too many calls from this source without an ack", "source", src.String(),
			"verified", refused == overUnackedVerified, "call_id", callID)
		reply(s.log, req, tx, sip.StatusServiceUnavailable, "Service Unavailable", sip.NewHeader("Retry-After", s.retryAfter))
		return
	}
	defer handshakeDone()
	// The CANCEL callback goes in before the 100: a CANCEL may follow the
	// first provisional answer at once (RFC 3261 9.1), and sipgo answers
	// it 487 whether or not anyone listens.
	c := newInboundCall(callID, s.env)
	tx.OnCancel(c.onCancel)
	reply(s.log, req, tx, sip.StatusTrying, "Trying")

	if ct := req.ContentType(); len(req.Body()) == 0 || ct == nil || !strings.EqualFold(mediaType(ct.Value()), "application/sdp") {
		log.InfoContext(ctx, "invite without sdp offer")
		reply(s.log, req, tx, sip.StatusNotAcceptableHere, "Not Acceptable Here")
		return
	}
	media, err := s.rtp.Open(c.rtpDigits(ctx), s.mediaSources(req))
	if err != nil {
		log.ErrorContext(ctx, "allocate rtp port", "err", err)
		reply(s.log, req, tx, sip.StatusServiceUnavailable, "Service Unavailable", sip.NewHeader("Retry-After", s.retryAfter))
		return
	}
	closeMedia := func() {
		if _, err := media.Close(); err != nil {
			log.WarnContext(ctx, "close rtp", "err", err)
		}
	}
	start := time.Now()
	sessionID := uint64(start.Unix())
	answer, err := sdp.Negotiate(req.Body(), sdp.Params{Host: s.cfg.ContactHost(), Port: media.Port(), SessionID: sessionID})
	if err != nil {
		closeMedia()
		log.InfoContext(ctx, "offer refused", "err", err)
		reply(s.log, req, tx, sip.StatusNotAcceptableHere, "Not Acceptable Here")
		return
	}
	localTag := sip.GenerateTagN(16)
	trunk := s.trunkOf(req)
	if trunk == nil {
		// The filter let it through, so the ACL changed or the source
		// is not what it was; never answer an unknown source.
		closeMedia()
		s.stats.ACLDropped.Add(1)
		return
	}
	facts, err := readInvite(req, dialogParams{localTag: localTag, localContact: s.contactFor(req), trunk: trunk, localSDP: answer.SDP})
	if err != nil {
		closeMedia()
		log.InfoContext(ctx, "invite refused", "err", err)
		reply(s.log, req, tx, sip.StatusBadRequest, "Bad Request")
		return
	}
	if hop, transport, signalled := nextHop(facts.started.Dialog, s.trunks, trunk); hop != "" {
		facts.started.Dialog.NextHop, facts.started.Dialog.NextHopTransport = hop, transport
		if !signalled {
			s.stats.NextHopToSource.Add(1)
			s.rejectLog.Log(s.log, "the caller's contact or record-route names a destination outside its trunk; in-dialog requests go to the invite's source",
				"call_id", callID, "source", req.Source())
		}
	}
	for _, sk := range facts.skipped {
		log.WarnContext(ctx, "custom header not made a variable", "header", sk.Name, "err", sk.Err)
	}
	if n := len(facts.callerRefused) + len(facts.calleeRefused); n > 0 {
		// The value is not logged: it is what must not reach a terminal.
		s.stats.RefusedNumbers.Add(uint64(n))
		log.WarnContext(ctx, "number refused: control characters or not UTF-8 after decoding",
			"caller_sources", facts.callerRefused, "callee_sources", facts.calleeRefused)
	}

	setup := callSetup{dialog: facts.started.Dialog, trunk: trunk, udp: s.udpFor(req), media: media, answer: answer,
		start: start, sessionID: sessionID}
	if cseq := req.CSeq(); cseq != nil {
		setup.cseq = cseq.SeqNo
	}
	c.open(setup)
	if err := s.add(c); errors.Is(err, errOverCalls) || errors.Is(err, errOverTrunkCalls) {
		closeMedia()
		if errors.Is(err, errOverCalls) {
			s.stats.OverloadCalls.Add(1)
		} else {
			s.stats.TrunkOverloadCalls.Add(1)
		}
		log.WarnContext(ctx, "call refused", "err", err)
		reply(s.log, req, tx, sip.StatusServiceUnavailable, "Service Unavailable", sip.NewHeader("Retry-After", s.retryAfter))
		return
	} else if err != nil {
		// Same Call-ID, no To tag, another transaction: a merged request
		// (RFC 3261 8.2.2.2), never a second call.
		closeMedia()
		log.WarnContext(ctx, "invite for a call that exists")
		reply(s.log, req, tx, sip.StatusLoopDetected, "Loop Detected")
		return
	}
	if err := s.pub.publish(ctx, callID, facts.started); err != nil {
		s.remove(c)
		closeMedia()
		log.ErrorContext(ctx, "call refused: publish call started", "err", err)
		reply(s.log, req, tx, sip.StatusServiceUnavailable, "Service Unavailable", sip.NewHeader("Retry-After", s.retryAfter))
		return
	}
	// From here the call is its own: answered, ACKed, ended.
	acked := c.answer(ctx, req, tx, s.contactFor(req), answer)
	handshakeDone()
	if acked {
		s.handshakes.acked(src, time.Now())
		r, source := s.agentFor(facts.started)
		switch {
		case r != nil || s.cfg.AgentSelectionWait > 0:
			c.startAgent(ctx, agentChoice{r: r, source: source, wait: s.cfg.AgentSelectionWait,
				lookup: func(name string) *agentRoute { return s.agents[name] }}, facts.started)
		case s.clip.Frames() > 0:
			media.Play(s.clip)
		}
	}
}

// sourceAddr is the address req came from (zero when unknown).
func sourceAddr(req *sip.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// mediaSources says which addresses, besides the SDP's, may send a call's
// RTP: those of the INVITE's trunk (an SBC whose media leaves from another
// address of its range). Anyone else's packets are dropped and counted.
func (s *Server) mediaSources(req *sip.Request) func(netip.Addr) bool {
	t := s.trunkOf(req)
	return func(a netip.Addr) bool { return t != nil && s.trunks.Lookup(a) == t }
}

// trunkOf returns the trunk of req's source address, nil when none.
func (s *Server) trunkOf(req *sip.Request) *trunks.Trunk {
	src := sourceAddr(req)
	if !src.IsValid() {
		return nil
	}
	return s.trunks.Lookup(src)
}
