package api

import (
	"context"
	"net/http"
	"sync"
	"time"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// DefaultMaxMarkWaits bounds the handoffs one instance holds waiting for
// their mark; beyond it a request is answered 429.
const DefaultMaxMarkWaits = 1000

// Mark wait results beside handoff's (the result label of
// baton_router_api_mark_waits_total).
const (
	// waitCallGone: the call ended or was evicted during the wait; nothing
	// is published (there is nothing to hand off).
	waitCallGone = "call_gone"
	// waitAbandoned: the instance shut down during the wait.
	waitAbandoned = "abandoned"
	// waitFull: refused with 429, DefaultMaxMarkWaits (api.max_mark_waits)
	// requests already waiting.
	waitFull = "full"
)

// markWait is a handoff request held until its mark plays.
type markWait struct {
	callID  string
	msg     *batonv1.HandoffRequested
	timeout time.Duration
}

// markWaits holds the waiting requests: at most max at once, queued for
// Run, which owns their goroutines.
type markWaits struct {
	mu      sync.Mutex
	max     int
	n       int
	stopped bool
	queue   chan markWait
}

func newMarkWaits(limit int) *markWaits {
	return &markWaits{max: limit, queue: make(chan markWait, limit)}
}

// WithMaxMarkWaits sets how many handoffs may wait for their mark at once
// (api.max_mark_waits); it must be called before the server serves.
func (s *Server) WithMaxMarkWaits(n int) *Server {
	if n > 0 {
		s.waits = newMarkWaits(n)
	}
	return s
}

// add queues w unless max are waiting or Run has stopped.
func (m *markWaits) add(w markWait) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped || m.n >= m.max {
		return false
	}
	m.n++
	m.queue <- w // never blocks: n bounds what is queued
	return true
}

func (m *markWaits) done() {
	m.mu.Lock()
	m.n--
	m.mu.Unlock()
}

// stop refuses new waits and returns those queued but not started.
func (m *markWaits) stop() []markWait {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopped = true
	var left []markWait
	for {
		select {
		case w := <-m.queue:
			left = append(left, w)
			m.n--
		default:
			return left
		}
	}
}

// afterMark handles a handoff request with after_mark: published at once
// with mark_wait no_stream (no agent stream connected) or already_played,
// otherwise answered 202 and published by Run once the mark plays, or
// with mark_wait timeout when it has not played within timeout.
func (s *Server) afterMark(w http.ResponseWriter, r *http.Request, callID string, msg *batonv1.HandoffRequested, timeout time.Duration) {
	st := s.calls.MarkState(callID, msg.GetAfterMark())
	var now string
	switch {
	case !st.Stream:
		now = handoff.MarkNoStream
	case st.Played:
		now = handoff.MarkAlreadyPlayed
	}
	if now != "" {
		msg.MarkWait = now
		if !s.publish(w, r, callID, msg) {
			return
		}
		s.metrics.markWait(now)
		w.Header().Set("Location", "/v1/calls/"+callID+"/handoff")
		writeJSON(w, http.StatusAccepted, Accepted{RequestID: msg.GetRequestId(), CallID: callID, MarkWait: now})
		return
	}
	if !s.waits.add(markWait{callID: callID, msg: msg, timeout: timeout}) {
		s.metrics.markWait(waitFull)
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusTooManyRequests, "too many waiting handoffs",
			"this instance holds as many handoffs waiting for a mark as it may; retry")
		return
	}
	s.metrics.waiting(1)
	s.logger.InfoContext(r.Context(), "handoff waits for its mark", "call_id", callID, "request_id", msg.GetRequestId(),
		"after_mark", msg.GetAfterMark(), "timeout", timeout.String())
	w.Header().Set("Location", "/v1/calls/"+callID+"/handoff")
	writeJSON(w, http.StatusAccepted, Accepted{RequestID: msg.GetRequestId(), CallID: callID, MarkWait: "waiting"})
}

// Run serves the handoffs waiting for a mark until ctx ends; then it
// abandons those still waiting (logged and counted: the agent asks again
// of another instance) and returns once their goroutines have.
func (s *Server) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			for _, w := range s.waits.stop() {
				s.abandon(ctx, w)
			}
			return
		case w := <-s.waits.queue:
			wg.Go(func() { s.wait(ctx, w) })
		}
	}
}

func (s *Server) abandon(ctx context.Context, w markWait) {
	s.metrics.waiting(-1)
	s.metrics.markWait(waitAbandoned)
	s.logger.WarnContext(ctx, "shutdown: handoff waiting for its mark abandoned", "call_id", w.callID,
		"request_id", w.msg.GetRequestId(), "after_mark", w.msg.GetAfterMark())
}

// wait publishes w's request once the committed state shows its mark
// played (played), the agent stream gone (no_stream), or its timeout
// passed (timeout: the handoff goes ahead).
func (s *Server) wait(ctx context.Context, w markWait) {
	defer s.waits.done()
	timer := time.NewTimer(w.timeout)
	defer timer.Stop()
	for {
		changed := s.calls.Changed() // taken before reading: no Commit is missed
		st := s.calls.MarkState(w.callID, w.msg.GetAfterMark())
		result := ""
		switch {
		case !st.Found:
			s.metrics.waiting(-1)
			s.metrics.markWait(waitCallGone)
			s.logger.WarnContext(ctx, "call gone while its handoff waited for a mark; not published", "call_id", w.callID,
				"request_id", w.msg.GetRequestId(), "after_mark", w.msg.GetAfterMark())
			return
		case st.Played:
			result = handoff.MarkPlayed
		case !st.Stream:
			result = handoff.MarkNoStream
		}
		if result == "" {
			select {
			case <-ctx.Done():
				s.abandon(ctx, w)
				return
			case <-timer.C:
				result = handoff.MarkTimeout
			case <-changed:
				continue
			}
		}
		s.metrics.waiting(-1)
		s.metrics.markWait(result)
		w.msg.MarkWait = result
		if err := s.send(ctx, w.callID, w.msg); err != nil {
			s.logger.ErrorContext(ctx, "publish handoff after its mark", "call_id", w.callID,
				"request_id", w.msg.GetRequestId(), "mark_wait", result, "err", err)
			return
		}
		s.logger.InfoContext(ctx, "handoff asked for after its mark", "call_id", w.callID,
			"request_id", w.msg.GetRequestId(), "after_mark", w.msg.GetAfterMark(), "mark_wait", result)
		return
	}
}
