// Package metrics is ingress's Prometheus instrumentation. It watches what
// ingress publishes through a franz-go hook (calls started and ended,
// publish latency) and exposes the SIP server's refusal counters, so the
// SIP code needs no metric calls of its own.
//
// New calls per second is rate(baton_ingress_calls_total[1m]).
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
)

// Hook counts ingress's published facts; add it to the producer with
// kgo.WithHooks.
type Hook struct {
	topic   string
	calls   prometheus.Counter
	ended   prometheus.Counter
	active  prometheus.Gauge
	failed  *prometheus.CounterVec
	latency *prometheus.HistogramVec
	now     func() time.Time
}

// NewHook registers the publish metrics on reg; topic is the calls topic.
func NewHook(reg prometheus.Registerer, topic string) *Hook {
	h := &Hook{
		topic: topic,
		calls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_ingress_calls_total",
			Help: "Calls answered and published (CallStarted acknowledged by Kafka); new calls per second is its rate.",
		}),
		ended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_ingress_calls_ended_total", Help: "Calls ended and published (CallEnded acknowledged by Kafka).",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_ingress_active_calls", Help: "Calls started and not yet ended, as published.",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_ingress_publish_errors_total", Help: "Facts Kafka did not acknowledge, by event type.",
		}, []string{"type"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "baton_ingress_publish_latency_seconds",
			Help:    "From a fact's event time to Kafka's acknowledgement, by event type.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"type"}),
		now: time.Now,
	}
	reg.MustRegister(h.calls, h.ended, h.active, h.failed, h.latency)
	return h
}

var _ kgo.HookProduceRecordUnbuffered = (*Hook)(nil)

// OnProduceRecordUnbuffered sees every record once Kafka answered for it
// (or it failed). It only reads the record.
func (h *Hook) OnProduceRecordUnbuffered(r *kgo.Record, err error) {
	if r.Topic != h.topic {
		return
	}
	typ := header(r, events.HeaderType)
	if err != nil {
		h.failed.WithLabelValues(typ).Inc()
		return
	}
	h.latency.WithLabelValues(typ).Observe(h.now().Sub(r.Timestamp).Seconds())
	switch typ {
	case events.TypeCallStarted:
		h.calls.Inc()
		h.active.Inc()
	case events.TypeCallEnded:
		h.ended.Inc()
		h.active.Dec()
	}
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Counters is the SIP server's refusal counters (server.Stats.Snapshot).
type Counters func() map[string]uint64

// RegisterCounters exposes the server's counters: refusals by reason
// (acl: source not allowed, invalid: refused by validation, overload_calls
// and overload_rate: 503 at max_calls or max_cps, trunk_overload_calls and
// trunk_overload_rate: 503 at a trunk's own limits, draining: 503 at
// shutdown) and messages dropped without an answer.
func RegisterCounters(reg prometheus.Registerer, counters Counters) {
	// The reason label, and the server counter it reads.
	reasons := map[string]string{
		"acl":            "acl_dropped",
		"invalid":        "invalid",
		"overload_calls": "overload_calls",
		"overload_rate":  "overload_rate",
		"draining":       "draining",
		// A trunk's own max_calls or max_cps (trunks[].max_calls, max_cps).
		"trunk_overload_calls": "trunk_overload_calls",
		"trunk_overload_rate":  "trunk_overload_rate",
		// limits.max_unacked_per_source / max_unacked_unverified.
		"unacked_source": "unacked_source",
	}
	for reason, key := range reasons {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "baton_ingress_rejected_total",
			Help:        "SIP requests refused, by reason.",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(counters()[key]) }))
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "baton_ingress_numbers_refused_total",
		Help: "Caller or callee number sources refused for control characters or invalid UTF-8 (the number is then empty or read from the next source).",
	}, func() float64 { return float64(counters()["refused_numbers"]) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "baton_ingress_rtp_foreign_total",
		Help: "RTP datagrams dropped for coming from a source the call is not latched to (counted when the call ends).",
	}, func() float64 { return float64(counters()["foreign_rtp"]) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "baton_ingress_rtp_idle_dropped_total",
		Help: "RTP datagrams that reached a socket kept for reuse (rtp.reuse) between calls: heard by no call.",
	}, func() float64 { return float64(counters()["rtp_idle_dropped"]) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "baton_ingress_rtp_sockets_idle",
		Help: "RTP sockets kept bound between calls for reuse (rtp.reuse; at most limits.max_calls).",
	}, func() float64 { return float64(counters()["rtp_sockets_idle"]) }))
	for reason, key := range map[string]string{
		"acl": "connections_refused_acl", "full": "connections_refused_full", "per_source": "connections_refused_source",
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "baton_ingress_sip_connections_refused_total",
			Help:        "TCP and TLS connections closed at accept: source not in a trunk (acl), limits.max_connections (full), limits.max_connections_per_source (per_source).",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(counters()[key]) }))
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "baton_ingress_sip_connections_timed_out_total",
		Help: "TCP and TLS connections closed for silence (connection_first_read_timeout or connection_idle_timeout).",
	}, func() float64 { return float64(counters()["connections_timed_out"]) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "baton_ingress_next_hop_to_source_total",
		Help: "Calls whose Contact or first Record-Route named a destination outside their trunk (or a host name): in-dialog requests go to the INVITE's source.",
	}, func() float64 { return float64(counters()["next_hop_to_source"]) }))
	for _, m := range []struct{ name, key, help string }{
		{"baton_ingress_agent_streams_total", "agent_streams", "Agent streams opened (AgentConnected)."},
		{"baton_ingress_agent_failures_total", "agent_failures", "Agent streams that could not be opened or failed mid-call; on_agent_failure ran for each."},
		{"baton_ingress_agent_late_frames_total", "agent_late_frames", "20 ms frames of agent audio sent more than a frame late (added when a stream ends)."},
		{"baton_ingress_agent_dropped_frames_total", "agent_dropped_frames", "20 ms frames of agent audio dropped beyond the playout bound (added when a stream ends)."},
		{"baton_ingress_agent_bad_messages_total", "agent_bad_messages", "Messages from agents ignored: malformed JSON, unknown events, payloads not base64 (added when a stream ends)."},
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: m.name, Help: m.help},
			func() float64 { return float64(counters()[m.key]) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "baton_ingress_sip_connections_open", Help: "TCP and TLS connections open now.",
	}, func() float64 { return float64(counters()["connections_open"]) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "baton_ingress_dropped_total", Help: "SIP messages discarded without an answer (garbage, malformed, stray).",
	}, func() float64 { c := counters(); return float64(c["dropped"] + c["stray_responses"]) }))
}
