package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/services/ingress/internal/agent"
	"github.com/baton-voice/baton/services/ingress/internal/audio"
	"github.com/baton-voice/baton/services/ingress/internal/config"
	"github.com/baton-voice/baton/services/ingress/internal/rtp"
)

// reasonAgentFailure is CallEnded's reason when ingress hangs up because
// the call's agent could not be reached or dropped (on_agent_failure).
const reasonAgentFailure = "agent_failure"

// agentRoute is an agent endpoint as calls dial it.
type agentRoute struct {
	ep       agent.Endpoint
	fail     config.AgentFailure
	failClip rtp.Clip
}

// agentRoutes turns the configured agents into routes, by name.
func agentRoutes(cfg config.Config) (map[string]*agentRoute, error) {
	out := map[string]*agentRoute{}
	for _, raw := range cfg.Agents {
		a := raw.WithDefaults()
		h := http.Header{}
		if a.Auth.Header != "" {
			h.Set(a.Auth.Header, a.AuthValue())
		}
		format := agent.FormatMulaw
		if a.Format == config.FormatL16 {
			format = agent.FormatL16
		}
		r := &agentRoute{fail: a.OnFailure, ep: agent.Endpoint{
			Name: a.Name, URL: a.URL, Header: h, Format: format, ConnectTimeout: a.ConnectTimeout,
			Playout: a.PlayoutBuffer, WriteTimeout: a.WriteTimeout, MaxMessage: a.MaxMessageBytes,
		}}
		if a.OnFailure.WAV != "" {
			clip, err := audio.Load(a.OnFailure.WAV)
			if err != nil {
				return nil, err
			}
			r.failClip = clip
		}
		out[a.Name] = r
	}
	return out, nil
}

// agentFor picks the agent of a call that started, nil when it has none.
func (s *Server) agentFor(started *batonv1.CallStarted) (*agentRoute, string) {
	a, source := s.cfg.AgentFor(started.GetCalleeNumber(), started.GetTrunk())
	if a == nil {
		return nil, ""
	}
	return s.agents[a.Name], source
}

// startParams are the start message's customParameters: the numbers,
// the trunk and the call's X- variables (as CallStarted has them).
func startParams(started *batonv1.CallStarted) map[string]string {
	p := map[string]string{}
	for k, v := range started.GetVariables() {
		p[k] = v
	}
	p["caller"] = started.GetCallerNumber()
	p["callee"] = started.GetCalleeNumber()
	p["trunk"] = started.GetTrunk()
	return p
}

// agentSelected keeps the router's latest choice of the call's agent.
func (c *inboundCall) agentSelected(m *batonv1.AgentSelected) {
	for {
		select {
		case c.selected <- m:
			return
		default:
			select { // a newer choice replaces one not read yet
			case <-c.selected:
			default:
			}
		}
	}
}

// agentChoice is how the call picks its agent: ingress's own choice (r,
// source; r may be nil), and, when wait is positive, the router's
// AgentSelected that arrives within wait after the ACK, which overrides
// it (lookup finds the named agent).
type agentChoice struct {
	r      *agentRoute
	source string
	wait   time.Duration
	lookup func(name string) *agentRoute
}

// choose waits for the router's choice (when asked to) and returns the
// agent to dial and its source; nil when the call has none, or ended.
func (c *inboundCall) choose(ctx context.Context, ch agentChoice) (*agentRoute, string) {
	if ch.wait <= 0 {
		return ch.r, ch.source
	}
	t := time.NewTimer(ch.wait)
	defer t.Stop()
	select {
	case sel := <-c.selected:
		if r := ch.lookup(sel.GetAgent()); r != nil {
			return r, "router:" + sel.GetSource()
		}
		c.env.log.WarnContext(ctx, "the router chose an agent ingress does not list; using ingress's choice",
			"call_id", c.id, "agent", sel.GetAgent(), "source", sel.GetSource())
	case <-t.C:
	case <-c.done:
		return nil, ""
	}
	return ch.r, ch.source
}

// startAgent opens the call's agent stream, once the call is confirmed.
// It runs until the call ends: choosing the agent (the router's choice
// may override ingress's), dialling, then waiting for the stream to fail
// (on_agent_failure) or the call to end.
func (c *inboundCall) startAgent(ctx context.Context, ch agentChoice, started *batonv1.CallStarted) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.env.background.Go(func() {
		defer cancel()
		r, source := c.choose(ctx, ch)
		if r == nil {
			return
		}
		failed := make(chan [2]string, 1)
		hooks := agent.Hooks{
			Failed: func(reason, detail string) { failed <- [2]string{reason, detail} },
			MarkPlayed: func(name string) {
				c.env.facts.publishAsync(ctx, c.id, &batonv1.AgentMarkPlayed{CallId: c.id, StreamSid: c.agentSid(), Name: name})
			},
		}
		began := time.Now()
		dialCtx, stopDial := context.WithCancel(ctx)
		go func() {
			select {
			case <-c.done:
			case <-dialCtx.Done():
			}
			stopDial()
		}()
		st, err := agent.Dial(dialCtx, r.ep, agent.Start{CallSid: c.id, Parameters: startParams(started)}, hooks,
			c.env.log.With("call_id", c.id, "agent", r.ep.Name))
		stopDial()
		if err != nil {
			reason := agent.ReasonConnectFailed
			var de *agent.DialError
			if errors.As(err, &de) {
				reason = de.Reason
			}
			c.mu.Lock()
			ending := c.ending
			c.mu.Unlock()
			if ending {
				return // the call ended while dialling
			}
			c.env.log.WarnContext(ctx, "agent not reached", "call_id", c.id, "agent", r.ep.Name,
				"url", observability.RedactURL(r.ep.URL), "reason", reason, "err", err)
			c.agentFailed(ctx, r, "", reason, err.Error(), agent.Stats{})
			return
		}
		// Under the lock, so that the call's end either sees the stream
		// (and its AgentDisconnected follows this AgentConnected, before
		// CallEnded) or comes first (and the stream is closed unseen).
		c.mu.Lock()
		if c.ending {
			c.mu.Unlock()
			st.Close(agent.ReasonCallEnded)
			return
		}
		c.media.SetAudioSink(st.Caller)
		c.agent = st
		c.env.stats.AgentStreams.Add(1)
		c.env.facts.publishAsync(ctx, c.id, &batonv1.AgentConnected{CallId: c.id, StreamSid: st.StreamSid(),
			Url: observability.RedactURL(r.ep.URL), Format: r.ep.Format, ConnectMs: time.Since(began).Milliseconds(), Source: source})
		c.mu.Unlock()
		c.env.log.InfoContext(ctx, "agent connected", "call_id", c.id, "agent", r.ep.Name, "stream_sid", st.StreamSid(),
			"source", source)
		c.media.PlayFrom(st)
		select {
		case f := <-failed:
			if c.takeAgent(st) {
				stats := st.Close(f[0])
				c.env.log.WarnContext(ctx, "agent stream failed", "call_id", c.id, "stream_sid", st.StreamSid(),
					"reason", f[0], "err", f[1])
				c.agentFailed(ctx, r, st.StreamSid(), f[0], f[1], stats)
			}
		case <-c.done:
		}
	})
}

// agentSid is the stream id of the call's agent stream, empty without one.
func (c *inboundCall) agentSid() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent == nil {
		return ""
	}
	return c.agent.StreamSid()
}

// takeAgent detaches st from the call, if it is still the call's: only
// the one that takes it reports its end.
func (c *inboundCall) takeAgent(st *agent.Stream) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent != st || st == nil {
		return false
	}
	c.agent = nil
	c.media.SetAudioSink(nil)
	return true
}

// closeAgent ends the call's agent stream, if any, for reason (the call
// ended, or its media moved to a transfer bridge) and publishes it.
func (c *inboundCall) closeAgent(ctx context.Context, reason string) {
	c.mu.Lock()
	st := c.agent
	c.mu.Unlock()
	if !c.takeAgent(st) {
		return
	}
	stats := st.Close(reason)
	c.countEnd(stats, false)
	c.env.facts.publishAsync(ctx, c.id, &batonv1.AgentDisconnected{CallId: c.id, StreamSid: st.StreamSid(),
		Reason: reason, Action: "none", Stats: statsOf(stats)})
}

// agentDTMF passes a digit the caller pressed to the agent.
func (c *inboundCall) agentDTMF(digit string) {
	c.mu.Lock()
	st := c.agent
	c.mu.Unlock()
	if st != nil {
		st.DTMF(digit)
	}
}

// agentFailed carries out on_agent_failure: it publishes the
// disconnection with the action taken, then hangs up (after the WAV for
// play_then_hangup) or asks the router for a handoff.
func (c *inboundCall) agentFailed(ctx context.Context, r *agentRoute, sid, reason, detail string, stats agent.Stats) {
	c.countEnd(stats, true)
	c.env.facts.publishAsync(ctx, c.id, &batonv1.AgentDisconnected{CallId: c.id, StreamSid: sid, Reason: reason,
		Detail: truncateDetail(detail), Action: r.fail.Action, Stats: statsOf(stats)})
	switch r.fail.Action {
	case config.FailHandoff:
		if r.failClip.Frames() > 0 {
			c.media.Play(r.failClip)
		}
		c.env.facts.publishAsync(ctx, c.id, &batonv1.HandoffRequested{CallId: c.id, RequestId: "agent-failure-" + c.id,
			Destination: r.fail.Destination, Reason: reasonAgentFailure, RequestedBy: "baton/ingress"})
	case config.FailPlayThenHangup:
		c.media.Play(r.failClip)
		t := time.NewTimer(time.Duration(r.failClip.Frames())*20*time.Millisecond + 200*time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			c.end(ctx, byBaton(reasonAgentFailure))
		case <-c.done:
		}
	default:
		c.end(ctx, byBaton(reasonAgentFailure))
	}
}

// countEnd adds an ended stream's figures to the server's counters.
func (c *inboundCall) countEnd(s agent.Stats, failed bool) {
	st := c.env.stats
	if failed {
		st.AgentFailures.Add(1)
	}
	st.AgentLateFrames.Add(s.Late)
	st.AgentDroppedFrames.Add(s.Dropped)
	st.AgentBadMessages.Add(s.BadMessages)
}

func statsOf(s agent.Stats) *batonv1.AgentStreamStats {
	return &batonv1.AgentStreamStats{
		FramesOut: s.FramesOut, FramesIn: s.FramesIn, FramesPlayed: s.FramesPlayed, Late: s.Late,
		Dropped: s.Dropped, Cleared: s.Cleared, MaxQueueMs: s.MaxQueueMS, Marks: s.Marks, BadMessages: s.BadMessages,
	}
}

// truncateDetail keeps an error's text short enough for an event.
func truncateDetail(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) > 256 {
		return s[:256] + "..."
	}
	return s
}
