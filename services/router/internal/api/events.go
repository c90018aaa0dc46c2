package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/baton-voice/baton/services/router/internal/handoff"
	"github.com/baton-voice/baton/services/router/internal/push"
)

// DefaultHeartbeat is how often an idle event stream gets a comment line.
const DefaultHeartbeat = 15 * time.Second

// streamWriteTimeout bounds one write to an event stream: a client that
// does not read is cut rather than held.
const streamWriteTimeout = 10 * time.Second

// WithStreams serves GET /v1/calls/{id}/events from hub, which must hear
// the committed transitions of the same fold the server reads calls from
// (the call view's), with a comment line every heartbeat (0:
// DefaultHeartbeat). It must be called before the server serves.
func (s *Server) WithStreams(hub *push.Hub, heartbeat time.Duration) *Server {
	s.hub = hub
	s.heartbeat = heartbeat
	if s.heartbeat <= 0 {
		s.heartbeat = DefaultHeartbeat
	}
	return s
}

// streamEvents is GET /v1/calls/{id}/events: the call's handoff
// transitions as server-sent events, id the source event's id. With
// Last-Event-ID it resumes after that event, from the transitions the
// view keeps of the call; an id it no longer keeps replays all it keeps.
// It ends after the call's last transition (call_ended, call_evicted),
// when the client lags too far behind, and at shutdown.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request) {
	if s.hub == nil {
		problem(w, http.StatusServiceUnavailable, "no event streams", "this instance serves no event streams")
		return
	}
	id := r.PathValue("id")
	// Subscribed before the history is read: nothing committed in between
	// is missed (a transition in both is sent once, by its Seq).
	sub, err := s.hub.Subscribe(id)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		status := http.StatusTooManyRequests
		if errors.Is(err, push.ErrClosed) {
			status = http.StatusServiceUnavailable
		}
		problem(w, status, "event stream refused", err.Error())
		return
	}
	defer sub.Close()
	v, ok := s.live(w, r)
	if !ok {
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if rc.Flush() != nil {
		return
	}
	var sent uint32
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		for _, t := range v.Transitions {
			if t.ID == last {
				sent = t.Seq
			}
		}
	}
	send := func(t handoff.Transition) bool {
		if t.Seq <= sent {
			return true
		}
		sent = t.Seq
		data, err := json.Marshal(push.PayloadOf(t))
		if err != nil {
			return false
		}
		return s.write(rc, w, fmt.Sprintf("id: %s\nevent: %s\ndata: %s\n\n", t.ID, t.Type, data)) && !push.Final(t)
	}
	for _, t := range v.Transitions {
		if !send(t) {
			return
		}
	}
	beat := time.NewTicker(s.heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-beat.C:
			if !s.write(rc, w, ": heartbeat\n\n") {
				return
			}
		case t, open := <-sub.C:
			if !open {
				if sub.Dropped() {
					s.logger.InfoContext(r.Context(), "event stream cut: the client lags", "call_id", id)
				}
				return
			}
			if !send(t) {
				return
			}
		}
	}
}

// write sends one chunk and flushes it, within streamWriteTimeout.
func (s *Server) write(rc *http.ResponseController, w http.ResponseWriter, chunk string) bool {
	if err := rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)); err != nil {
		return false
	}
	if _, err := fmt.Fprint(w, chunk); err != nil {
		return false
	}
	return rc.Flush() == nil
}
