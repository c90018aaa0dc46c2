package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/ingress/internal/sdp"
)

// Reasons of the calls ingress ends itself: CallEnded carries one with
// ended_by BATON and method BYE (docs/decisions/0009).
const (
	// reasonAckTimeout: the 200 OK to the INVITE was retransmitted for
	// 64*T1 and no ACK came (RFC 3261 13.3.1.4).
	reasonAckTimeout = "ack_timeout"
	// reasonMediaTimeout: no RTP arrived for rtp.media_timeout while the
	// caller was expected to send.
	reasonMediaTimeout = "media_timeout"
)

// byeCSeq is the CSeq number of ingress's BYE. Transfer numbers the
// dialog's requests from CallStarted's next_local_cseq (1) up, one or a
// few per handoff; a number far above them is never below one the far end
// has seen (which it would refuse with 500, RFC 3261 12.2.2), and after
// the BYE the dialog is gone, so nothing needs a higher one.
const byeCSeq = 1 << 30

// errNoDialog means a call lacks what a BYE needs.
var errNoDialog = errors.New("no usable dialog for a bye")

// hangUp ends c from Baton's side: it takes the call out of the table,
// sends BYE in the dialog, publishes CallEnded{BATON, BYE, reason} and
// waits, at most until ctx ends or the BYE's transaction times out, for the
// BYE's answer. Only the first of hangUp, a BYE or a CANCEL ends a call.
func (s *Server) hangUp(ctx context.Context, c *call, reason string) {
	if !s.remove(c) {
		return
	}
	tx, branch, err := s.sendBye(ctx, c)
	if err != nil {
		s.log.WarnContext(ctx, "bye not sent", "call_id", c.id, "reason", reason, "err", err)
	}
	s.ended(ctx, c, batonv1.Party_PARTY_BATON, sip.BYE, reason)
	if tx != nil {
		s.awaitBye(ctx, c, tx, branch)
	}
}

// sendBye starts the BYE's client transaction; its answer passes the read
// filter because its branch is in s.byes until awaitBye is done.
func (s *Server) sendBye(ctx context.Context, c *call) (sip.ClientTransaction, string, error) {
	req, err := s.byeRequest(c)
	if err != nil {
		return nil, "", err
	}
	branch, _ := req.Via().Params.Get("branch")
	s.byes.Store(branch, struct{}{})
	built := func(*sipgo.Client, *sip.Request) error { return nil } // every header is there
	tx, err := s.client.TransactionRequest(ctx, req, built)
	if err != nil {
		s.byes.Delete(branch)
		return nil, "", fmt.Errorf("send bye: %w", err)
	}
	return tx, branch, nil
}

// awaitBye logs the BYE's final answer, or that none came.
func (s *Server) awaitBye(ctx context.Context, c *call, tx sip.ClientTransaction, branch string) {
	defer s.byes.Delete(branch)
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			s.log.InfoContext(ctx, "bye answered", "call_id", c.id, "status", res.StatusCode)
			return
		case <-tx.Done():
			s.log.WarnContext(ctx, "bye unanswered", "call_id", c.id, "err", tx.Err())
			return
		case <-ctx.Done():
			return
		}
	}
}

// awaitsAnswer reports whether a response with this Via branch answers a
// BYE ingress sent.
func (s *Server) awaitsAnswer(branch string) bool {
	if branch == "" {
		return false
	}
	_, ok := s.byes.Load(branch)
	return ok
}

// byeRequest builds the BYE of c's dialog as the UAS sees it
// (sipx.InDialog, the rule transfer's in-dialog requests share), sent from
// the listener the INVITE came to, with CSeq byeCSeq.
func (s *Server) byeRequest(c *call) (*sip.Request, error) {
	c.mu.Lock()
	d, udp := c.dialog, c.udp
	c.mu.Unlock()
	if d == nil {
		return nil, errNoDialog
	}
	req, err := sipx.InDialog(sip.BYE, d, byeCSeq)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoDialog, err)
	}
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: req.Transport(), Params: sip.NewParams()}
	via.Params.Add("branch", sip.GenerateBranch())
	if udp != nil && req.Transport() == "UDP" {
		// From the listener the INVITE came to: the address the caller
		// knows from our Contact.
		la := udp.LocalAddr().(*net.UDPAddr)
		req.Laddr = sip.Addr{IP: la.IP, Port: la.Port}
		via.Host, via.Port = s.cfg.ExternalHost, la.Port
		if via.Host == "" {
			via.Host = la.IP.String()
		}
	}
	req.PrependHeader(via)
	req.AppendHeader(sip.NewHeader("User-Agent", "baton-ingress"))
	return req, nil
}

// udpFor is the UDP listener req most likely came to: the first of its
// source's address family, else the first; nil for TCP and TLS.
func (s *Server) udpFor(req *sip.Request) *net.UDPConn {
	if req.Transport() != "UDP" || len(s.udp) == 0 {
		return nil
	}
	if src, err := netip.ParseAddrPort(req.Source()); err == nil {
		for _, c := range s.udp {
			if family(addrPort(c.LocalAddr()).Addr()) == family(src.Addr()) {
				return c
			}
		}
	}
	return s.udp[0]
}

// remoteSends reports whether an offer/answer lets the caller send RTP:
// its direction sendrecv or sendonly, and not on hold (a caller holding
// may send music or nothing at all).
func remoteSends(a sdp.Answer) bool {
	return !a.Hold && (a.RemoteDirection == "sendrecv" || a.RemoteDirection == "sendonly")
}

// applyMedia puts an offer/answer into force on c's RTP session and
// restarts c's media clock.
func (c *call) applyMedia(a sdp.Answer, now time.Time) {
	c.media.SetMedia(mediaOf(a))
	c.mu.Lock()
	c.remoteSends, c.mediaSince = remoteSends(a), now
	c.mu.Unlock()
}

// watchMedia ends, with hangUp, every answered call whose caller should
// send RTP and sent none for timeout. It returns when ctx ends.
func (s *Server) watchMedia(ctx context.Context, timeout time.Duration) {
	tick := time.NewTicker(min(max(timeout/10, 50*time.Millisecond), time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			for _, c := range s.silent(now, timeout) {
				if !s.enter() {
					return // shutting down: every call is dropped anyway
				}
				s.log.WarnContext(ctx, "no media; ending the call", "call_id", c.id, "media_timeout", timeout.String())
				go func() {
					defer s.inflight.Done()
					s.hangUp(ctx, c, reasonMediaTimeout)
				}()
			}
		}
	}
}

// silent returns the answered calls whose caller is expected to send RTP
// and whose last packet (or media change, when later) is timeout old.
func (s *Server) silent(now time.Time, timeout time.Duration) []*call {
	s.mu.Lock()
	calls := make([]*call, 0, len(s.calls))
	for _, c := range s.calls {
		calls = append(calls, c)
	}
	s.mu.Unlock()
	var out []*call
	for _, c := range calls {
		c.mu.Lock()
		watched, since := c.state != statePending && c.remoteSends && !c.hangingUp && !c.mediaMoved, c.mediaSince
		if watched && now.Sub(since) >= timeout {
			if last := c.media.LastPacket(); last.After(since) {
				since = last
			}
			if now.Sub(since) >= timeout {
				c.hangingUp = true
				out = append(out, c)
			}
		}
		c.mu.Unlock()
	}
	return out
}

// followTransfers reads transfer outcomes published from now on and turns
// the media watch off for each call whose media transfer moved to its
// bridge (BRIDGED, a warm transfer's re-INVITE): the caller's RTP then goes
// to the bridge, whose own idle timeout takes over. It returns when ctx
// ends.
func (s *Server) followTransfers(ctx context.Context) {
	opts := append(kafka.ClientOpts(s.cfg.Kafka, s.log),
		kgo.ConsumeTopics(s.cfg.Kafka.Topics.Transfers),
		kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(time.Now().UnixMilli())),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		s.log.ErrorContext(ctx, "follow transfer outcomes", "err", err)
		return
	}
	defer cl.Close()
	lim := &rateLog{perSecond: 1}
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(topic string, _ int32, err error) {
			lim.log(s.log, "read transfer outcomes", "topic", topic, "err", err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			ev, err := events.Decode(r)
			if err != nil {
				return // not ingress's business
			}
			if o, ok := ev.Data.(*batonv1.TransferOutcome); ok && o.GetStatus() == batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED {
				s.mediaMoved(ctx, o.GetCallId())
			}
		})
	}
}

// mediaMoved turns the media watch off for callID, whose RTP now flows
// through transfer's bridge.
func (s *Server) mediaMoved(ctx context.Context, callID string) {
	s.mu.Lock()
	c := s.calls[callID]
	s.mu.Unlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	c.mediaMoved = true
	c.mu.Unlock()
	s.log.InfoContext(ctx, "media moved to a transfer bridge; no media timeout for the call", "call_id", callID)
}
