package transfer

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/bridge"
)

// Metrics are transfer's Prometheus metrics. A nil *Metrics counts
// nothing.
type Metrics struct {
	// Commands counts the commands taken (executed or reported as not
	// executed), by method.
	Commands *prometheus.CounterVec
	// Outcomes counts the outcomes published, by method and status.
	Outcomes *prometheus.CounterVec
	// Refused counts the commands that failed before any SIP was sent,
	// by method and reason (invalid_header, invalid_route, …).
	Refused *prometheus.CounterVec
	// ReferRetries counts the REFERs sent again, by reason (481_early: the
	// far end answered 481 soon after the call started, when it may not
	// have the dialog yet).
	ReferRetries *prometheus.CounterVec
	// BridgePackets, BridgeBytes, BridgeLost and BridgeDropped add up the
	// media of ended warm-transfer bridges, by direction
	// (caller_to_destination, destination_to_caller).
	BridgePackets *prometheus.CounterVec
	BridgeBytes   *prometheus.CounterVec
	BridgeLost    *prometheus.CounterVec
	BridgeDropped *prometheus.CounterVec
	// BridgeSRTPDropped is the part of BridgeDropped SRTP refused, by
	// direction and reason (unauthentic: failed authentication, a
	// tampered packet; replayed: an index already received).
	BridgeSRTPDropped *prometheus.CounterVec
	// BridgeForeign is the part of BridgeDropped that came from a source
	// the leg was not latched to (a stranger at its port, or another port
	// of the peer's address before it re-latched), by direction.
	BridgeForeign *prometheus.CounterVec
	// BridgeRelatches counts the legs moved to another port of their
	// peer's address after sustained traffic from it (NAT rebinding), by
	// direction.
	BridgeRelatches *prometheus.CounterVec
	// AuthChallenges counts the digest challenges (401/407) to transfer's
	// requests, by method and result (answered, stale_retried, rejected,
	// unsupported).
	AuthChallenges *prometheus.CounterVec
	// ReferFallbacks counts the REFERs that fell back, by fallback
	// (invite, bye) and why (refused: the REFER's answer; notify: a
	// failed sipfrag; learned: the trunk is known to refuse REFER).
	ReferFallbacks *prometheus.CounterVec
	// BridgeReleases counts the bridged calls Baton tried to leave with a
	// REFER with Replaces, by result (released, kept: refused or failed,
	// not_sent).
	BridgeReleases *prometheus.CounterVec
}

// NewMetrics registers transfer's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	bridge := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "baton_transfer_bridge_" + name + "_total", Help: help},
			[]string{"direction"})
	}
	m := &Metrics{
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_transfer_commands_total", Help: "Handoff commands taken, by method.",
		}, []string{"method"}),
		Outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_transfer_outcomes_total", Help: "Transfer outcomes published, by method and status.",
		}, []string{"method", "status"}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_transfer_refused_total", Help: "Commands failed before any SIP was sent, by method and reason.",
		}, []string{"method", "reason"}),
		ReferRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_transfer_refer_retries_total", Help: "REFERs sent again after an answer that may be early, by reason.",
		}, []string{"reason"}),
		BridgePackets: bridge("packets", "RTP packets received on ended bridges, by direction."),
		BridgeBytes:   bridge("bytes", "RTP bytes received on ended bridges, by direction."),
		BridgeLost:    bridge("lost_packets", "RTP packets lost (sequence gaps) on ended bridges, by direction."),
		BridgeDropped: bridge("dropped_packets", "RTP packets received but not forwarded on ended bridges, by direction."),
		BridgeSRTPDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_transfer_bridge_srtp_dropped_packets_total",
			Help: "SRTP packets refused on ended bridges (part of the dropped packets), by direction and reason.",
		}, []string{"direction", "reason"}),
		BridgeForeign: bridge("foreign_packets",
			"RTP packets dropped on ended bridges because they came from a source the leg was not latched to (part of the dropped packets), by direction."),
		BridgeRelatches: bridge("relatches", "Bridge legs moved to another port of their peer's address after sustained traffic (NAT rebinding), by direction."),
		AuthChallenges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_transfer_auth_challenges_total", Help: "Digest challenges to transfer's requests, by method and result.",
		}, []string{"method", "result"}),
		ReferFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_transfer_refer_fallbacks_total", Help: "REFERs that fell back to INVITE or BYE, by fallback and why.",
		}, []string{"fallback", "why"}),
		BridgeReleases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_transfer_bridge_releases_total", Help: "Bridged calls Baton tried to leave with a REFER with Replaces, by result.",
		}, []string{"result"}),
	}
	reg.MustRegister(m.Commands, m.Outcomes, m.Refused, m.ReferRetries, m.BridgePackets, m.BridgeBytes, m.BridgeLost, m.BridgeDropped,
		m.BridgeSRTPDropped, m.BridgeForeign, m.BridgeRelatches, m.AuthChallenges, m.ReferFallbacks, m.BridgeReleases)
	return m
}

// RegisterInFlight exposes the number of executions under way.
func (s *Service) RegisterInFlight(reg prometheus.Registerer) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "baton_transfer_in_flight", Help: "Transfers executing now.",
	}, func() float64 { return float64(s.reg.inFlight()) }))
}

func (m *Metrics) command(method batonv1.Method) {
	if m != nil {
		m.Commands.WithLabelValues(label(method.String(), "METHOD_")).Inc()
	}
}

func (m *Metrics) refused(method batonv1.Method, reason string) {
	if m != nil {
		m.Refused.WithLabelValues(label(method.String(), "METHOD_"), reason).Inc()
	}
}

func (m *Metrics) referRetry(reason string) {
	if m != nil {
		m.ReferRetries.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) auth(method, result string) {
	if m != nil {
		m.AuthChallenges.WithLabelValues(strings.ToLower(method), result).Inc()
	}
}

func (m *Metrics) referFallback(fallback, why string) {
	if m != nil {
		m.ReferFallbacks.WithLabelValues(fallback, why).Inc()
	}
}

func (m *Metrics) bridgeRelease(result string) {
	if m != nil {
		m.BridgeReleases.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) outcome(o *batonv1.TransferOutcome) {
	if m == nil {
		return
	}
	// The bridge's media is counted before the outcome, so whoever sees the
	// outcome counted also sees its media.
	if b := o.GetBridge(); b != nil {
		for dir, st := range map[string]*batonv1.MediaStreamStats{
			"caller_to_destination": b.GetCallerToDestination(),
			"destination_to_caller": b.GetDestinationToCaller(),
		} {
			m.BridgePackets.WithLabelValues(dir).Add(float64(st.GetPackets()))
			m.BridgeBytes.WithLabelValues(dir).Add(float64(st.GetBytes()))
			m.BridgeLost.WithLabelValues(dir).Add(float64(st.GetLost()))
			m.BridgeDropped.WithLabelValues(dir).Add(float64(st.GetDropped()))
		}
	}
	m.Outcomes.WithLabelValues(label(o.GetMethod().String(), "METHOD_"), label(o.GetStatus().String(), "OUTCOME_STATUS_")).Inc()
}

// legDrops counts an ended bridge's SRTP and foreign drops and its
// re-latches, before its outcome.
func (m *Metrics) legDrops(br *bridge.Bridge) {
	if m == nil {
		return
	}
	for dir, side := range map[string]bridge.Side{"caller_to_destination": bridge.Caller, "destination_to_caller": bridge.Destination} {
		d := br.Leg(side).Drops()
		m.BridgeSRTPDropped.WithLabelValues(dir, "unauthentic").Add(float64(d.Unauthentic))
		m.BridgeSRTPDropped.WithLabelValues(dir, "replayed").Add(float64(d.Replayed))
		m.BridgeForeign.WithLabelValues(dir).Add(float64(d.Foreign))
		m.BridgeRelatches.WithLabelValues(dir).Add(float64(br.Leg(side).Relatches()))
	}
}

// label is "refer" for METHOD_REFER.
func label(name, prefix string) string { return strings.ToLower(strings.TrimPrefix(name, prefix)) }
