package server

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/services/ingress/internal/agent"
	"github.com/baton-voice/baton/services/ingress/internal/sdp"
)

// watchMedia ends, with ingress's BYE, every answered call whose caller
// should send RTP and sent none for timeout. It returns when ctx ends.
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
					c.end(ctx, byBaton(reasonMediaTimeout))
				}()
			}
		}
	}
}

// silent returns the calls in the table whose media timed out
// (mediaTimedOut).
func (s *Server) silent(now time.Time, timeout time.Duration) []*inboundCall {
	s.mu.Lock()
	calls := make([]*inboundCall, 0, len(s.calls))
	for _, c := range s.calls {
		calls = append(calls, c)
	}
	s.mu.Unlock()
	var out []*inboundCall
	for _, c := range calls {
		if c.mediaTimedOut(now, timeout) {
			out = append(out, c)
		}
	}
	return out
}

// mediaTimedOut reports whether c is answered, its caller is expected to
// send RTP, and its last packet (or media change, when later) is timeout
// old; it reports each call once.
func (c *inboundCall) mediaTimedOut(now time.Time, timeout time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	watched, since := c.state != statePending && c.remoteSends && !c.hangingUp && !c.mediaMoved, c.mediaSince
	if !watched || now.Sub(since) < timeout {
		return false
	}
	if last := c.media.LastPacket(); last.After(since) {
		since = last
	}
	if now.Sub(since) < timeout {
		return false
	}
	c.hangingUp = true
	return true
}

// moveMedia turns the media watch off for c, whose RTP now flows through
// transfer's bridge. callerSDP is what transfer's re-INVITE gave the
// caller: the caller's later re-INVITEs reach ingress (the dialog's UAS)
// and are answered from it, so the caller's media stays on the bridge.
func (c *inboundCall) moveMedia(ctx context.Context, callerSDP string) {
	var br sdp.Bridge
	if callerSDP != "" {
		var err error
		if br, err = sdp.ReadBridge([]byte(callerSDP)); err != nil {
			c.env.log.WarnContext(ctx, "bridged call: transfer's sdp unusable; re-INVITEs answered from the anchor",
				"call_id", c.id, "err", err)
		}
	}
	c.mu.Lock()
	c.mediaMoved = true
	if br.Port != 0 {
		c.bridge = br
		c.sdpVersion = max(c.sdpVersion, br.Version)
		c.localSDP = []byte(callerSDP)
	}
	c.mu.Unlock()
	c.env.log.InfoContext(ctx, "media moved to a transfer bridge; no media timeout for the call", "call_id", c.id)
	// The caller now talks to a person: the agent's stream ends.
	c.closeAgent(ctx, agent.ReasonHandoff)
}

// dialogEndedBy says whether an outcome means transfer's BYE ended the
// caller's dialog with Baton, and the reason to record: a BYE handoff
// answered (2xx, or 481: already gone); the agent leg ended after a REFER
// (ENDED agent_leg_bye); a bridged call ended by anything but the
// caller's own BYE, which reaches ingress itself.
func dialogEndedBy(o *batonv1.TransferOutcome) (string, bool) {
	switch o.GetStatus() {
	case batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED:
		if o.GetMethod() == batonv1.Method_METHOD_BYE {
			return reasonHandoffBye, true
		}
	case batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED:
		if o.GetMethod() == batonv1.Method_METHOD_BYE && o.GetSipCode() == 481 {
			return reasonHandoffBye, true
		}
	case batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED:
		if r := o.GetReason(); r != "" && r != "caller_hangup" && r != "shutdown" {
			return r, true
		}
	}
	return "", false
}

// reasonHandoffBye is CallEnded's reason for a BYE handoff (the SBC took
// the call back).
const reasonHandoffBye = "handoff_bye"

// follow reads what other stages publish about ingress's calls, from now
// on, until ctx ends:
//   - transfer outcomes: BRIDGED turns the media watch off for the call
//     (its RTP now goes to the bridge, whose idle timeout takes over) and
//     gives it the bridge's side of the session; an outcome that says
//     transfer's own BYE ended the dialog (dialogEndedBy) ends the call,
//     once, when it happened, with transfer's reason;
//   - on the calls topic, the router's AgentSelected (when
//     agent_selection_wait is set): the agent the call dials.
func (s *Server) follow(ctx context.Context) {
	topics := []string{s.cfg.Kafka.Topics.Transfers}
	if s.cfg.AgentSelectionWait > 0 {
		topics = append(topics, s.cfg.Kafka.Topics.Calls)
	}
	if s.cfg.Refer.Routes() {
		// The router's decisions on inbound REFERs (refer.go).
		topics = append(topics, s.cfg.Kafka.Topics.Handoffs)
	}
	opts := append(kafka.ClientOpts(s.cfg.Kafka, s.log),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(time.Now().UnixMilli())),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		s.log.ErrorContext(ctx, "follow transfer outcomes and agent selections", "err", err)
		return
	}
	defer cl.Close()
	lim := observability.NewRateLog(1)
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(topic string, _ int32, err error) {
			lim.Log(s.log, "read transfer outcomes and agent selections", "topic", topic, "err", err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			ev, err := events.Decode(r)
			if err != nil {
				return // not ingress's business
			}
			switch m := ev.Data.(type) {
			case *batonv1.TransferOutcome:
				if c := s.callByID(m.GetCallId()); c != nil {
					c.referOutcome(m)
				}
				s.transferOutcome(ctx, m)
			case *batonv1.HandoffCommand:
				if c := s.callByID(ev.Subject); c != nil {
					c.referCommand(m)
				}
			case *batonv1.HandoffRefused:
				if c := s.callByID(ev.Subject); c != nil {
					c.referRefused(m)
				}
			case *batonv1.AgentSelected:
				if c := s.callByID(ev.Subject); c != nil {
					c.agentSelected(m)
				}
			}
		})
	}
}

// transferOutcome applies what a transfer outcome means for its call.
func (s *Server) transferOutcome(ctx context.Context, o *batonv1.TransferOutcome) {
	c := s.callByID(o.GetCallId())
	if c == nil {
		return
	}
	if o.GetStatus() == batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED {
		c.moveMedia(ctx, o.GetCallerSdp())
	}
	if reason, over := dialogEndedBy(o); over {
		// Transfer's BYE ended the caller's dialog: the call is over now,
		// and ingress sends no BYE of its own. Counted in flight like a
		// request, so shutdown waits for it.
		if !s.enter() {
			return // shutting down: every call is dropped anyway
		}
		go func() {
			defer s.inflight.Done()
			c.end(context.WithoutCancel(ctx), byTransfer(reason))
		}()
	}
}
