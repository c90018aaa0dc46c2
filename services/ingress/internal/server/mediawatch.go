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
// transfer's bridge.
func (c *inboundCall) moveMedia(ctx context.Context) {
	c.mu.Lock()
	c.mediaMoved = true
	c.mu.Unlock()
	c.env.log.InfoContext(ctx, "media moved to a transfer bridge; no media timeout for the call", "call_id", c.id)
	// The caller now talks to a person: the agent's stream ends.
	c.closeAgent(ctx, agent.ReasonHandoff)
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
	lim := observability.NewRateLog(1)
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(topic string, _ int32, err error) {
			lim.Log(s.log, "read transfer outcomes", "topic", topic, "err", err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			ev, err := events.Decode(r)
			if err != nil {
				return // not ingress's business
			}
			if o, ok := ev.Data.(*batonv1.TransferOutcome); ok && o.GetStatus() == batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED {
				if c := s.callByID(o.GetCallId()); c != nil {
					c.moveMedia(ctx)
				}
			}
		})
	}
}
