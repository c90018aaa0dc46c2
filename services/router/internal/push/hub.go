package push

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// Defaults of the stream bounds (api.max_streams, api.max_streams_per_call).
const (
	DefaultMaxStreams        = 1000
	DefaultMaxStreamsPerCall = 4
	// streamBuffer is how many transitions a stream may lag by before it
	// is dropped (its client reconnects with Last-Event-ID).
	streamBuffer = 64
)

// Errors of Subscribe.
var (
	ErrTooManyStreams = errors.New("too many event streams on this instance")
	ErrTooManyForCall = errors.New("too many event streams for this call")
	ErrClosed         = errors.New("event streams closed: shutting down")
)

// Hub fans a fold's committed transitions out to the event streams of
// their calls. It is the call view's handoff.Sink: Transitions never
// blocks; a stream whose buffer is full is dropped (its channel closed)
// rather than buffered without bound.
type Hub struct {
	maxStreams, maxPerCall int
	metrics                *HubMetrics

	mu     sync.Mutex
	subs   map[string]map[*Sub]struct{}
	n      int
	closed bool
}

// HubMetrics are the streams' Prometheus metrics. A nil *HubMetrics counts
// nothing.
type HubMetrics struct {
	// Streams is the event streams open now.
	Streams prometheus.Gauge
	// Refused counts streams refused, by reason (instance: max_streams,
	// call: max_streams_per_call, closed).
	Refused *prometheus.CounterVec
	// Dropped counts streams cut for lagging streamBuffer transitions.
	Dropped prometheus.Counter
}

// NewHubMetrics registers the streams' metrics on reg.
func NewHubMetrics(reg prometheus.Registerer) *HubMetrics {
	m := &HubMetrics{
		Streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_router_event_streams", Help: "Server-sent event streams (GET /v1/calls/{id}/events) open on this instance.",
		}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_router_event_streams_refused_total",
			Help: "Event streams refused (429), by reason: instance (api.max_streams), call (api.max_streams_per_call), closed.",
		}, []string{"reason"}),
		Dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_router_event_streams_dropped_total",
			Help: "Event streams cut because their client read too slowly (it may resume with Last-Event-ID).",
		}),
	}
	reg.MustRegister(m.Streams, m.Refused, m.Dropped)
	return m
}

// NewHub bounds the streams: maxStreams on the instance, maxPerCall per
// call (0: the defaults).
func NewHub(maxStreams, maxPerCall int, metrics *HubMetrics) *Hub {
	if maxStreams <= 0 {
		maxStreams = DefaultMaxStreams
	}
	if maxPerCall <= 0 {
		maxPerCall = DefaultMaxStreamsPerCall
	}
	return &Hub{maxStreams: maxStreams, maxPerCall: maxPerCall, metrics: metrics, subs: map[string]map[*Sub]struct{}{}}
}

// Sub is one stream's subscription to a call's transitions. C is closed
// when the stream is dropped for lagging, or the hub closes.
type Sub struct {
	C       <-chan handoff.Transition
	c       chan handoff.Transition
	callID  string
	hub     *Hub
	dropped bool // under hub.mu
}

// Dropped reports whether the stream was cut for lagging (rather than
// closed by the hub).
func (s *Sub) Dropped() bool {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.dropped
}

// Subscribe opens a subscription to callID's transitions.
func (h *Hub) Subscribe(callID string) (*Sub, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	reason, err := "", error(nil)
	switch {
	case h.closed:
		reason, err = "closed", ErrClosed
	case h.n >= h.maxStreams:
		reason, err = "instance", ErrTooManyStreams
	case len(h.subs[callID]) >= h.maxPerCall:
		reason, err = "call", ErrTooManyForCall
	}
	if err != nil {
		if h.metrics != nil {
			h.metrics.Refused.WithLabelValues(reason).Inc()
		}
		return nil, err
	}
	c := make(chan handoff.Transition, streamBuffer)
	s := &Sub{C: c, c: c, callID: callID, hub: h}
	if h.subs[callID] == nil {
		h.subs[callID] = map[*Sub]struct{}{}
	}
	h.subs[callID][s] = struct{}{}
	h.n++
	if h.metrics != nil {
		h.metrics.Streams.Inc()
	}
	return s, nil
}

// Close ends the subscription.
func (s *Sub) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.remove(s)
}

// remove takes s out and closes its channel, once; h.mu is held.
func (h *Hub) remove(s *Sub) {
	subs := h.subs[s.callID]
	if _, ok := subs[s]; !ok {
		return
	}
	delete(subs, s)
	if len(subs) == 0 {
		delete(h.subs, s.callID)
	}
	h.n--
	close(s.c)
	if h.metrics != nil {
		h.metrics.Streams.Dec()
	}
}

// Transitions is handoff.Sink: each transition goes to its call's
// streams; a stream with no room left is dropped.
func (h *Hub) Transitions(ts []handoff.Transition) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range ts {
		for s := range h.subs[t.CallID] {
			select {
			case s.c <- t:
			default:
				s.dropped = true
				h.remove(s)
				if h.metrics != nil {
					h.metrics.Dropped.Inc()
				}
			}
		}
	}
}

// Close ends every subscription and refuses new ones (shutdown).
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, subs := range h.subs {
		for s := range subs {
			h.remove(s)
		}
	}
}
