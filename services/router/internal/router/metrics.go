package router

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// Metrics are the router's Prometheus metrics; all count committed
// transactions only, so a batch handled again after an abort is counted
// once.
type Metrics struct {
	// Commands counts handoff commands by method (refer, invite, bye).
	Commands *prometheus.CounterVec
	// Refusals counts refused handoff requests by reason code.
	Refusals *prometheus.CounterVec
	// Outcomes counts the transfer outcomes the router folded, by method
	// and status: handoffs by outcome.
	Outcomes *prometheus.CounterVec
	// Transactions counts batches by result (committed, aborted, failed:
	// could not begin or end).
	Transactions *prometheus.CounterVec
	// BatchRecords is the number of records per polled batch.
	BatchRecords prometheus.Histogram
	// StateRefused counts agent state writes (CallStateChanged) the fold
	// did not apply because they would break a per-call cap, by reason
	// (state_too_many_keys, state_too_large).
	StateRefused *prometheus.CounterVec
}

// NewMetrics registers the router's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_router_commands_total", Help: "Handoff commands produced (committed), by method.",
		}, []string{"method"}),
		Refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_router_refusals_total", Help: "Handoff requests refused (committed), by reason code.",
		}, []string{"reason"}),
		Outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_router_outcomes_total", Help: "Transfer outcomes folded (committed), by method and status.",
		}, []string{"method", "status"}),
		Transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_router_transactions_total", Help: "Batches handled, by transaction result.",
		}, []string{"result"}),
		BatchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "baton_router_batch_records", Help: "Records per polled batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8),
		}),
		StateRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_router_state_writes_refused_total",
			Help: "Agent state writes the fold did not apply for breaking a per-call cap (committed), by reason.",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.Commands, m.Refusals, m.Outcomes, m.Transactions, m.BatchRecords, m.StateRefused)
	return m
}

// tally is what one batch did, counted when its transaction commits.
type tally struct {
	decisions []proto.Message
	outcomes  []*batonv1.TransferOutcome
	// stateRefused are the reasons of the state writes the fold refused.
	stateRefused []string
}

func (t *tally) reset() {
	t.decisions = t.decisions[:0]
	t.outcomes = t.outcomes[:0]
	t.stateRefused = t.stateRefused[:0]
}

// count adds a committed batch to m (nil: no metrics).
func (m *Metrics) count(records int, t *tally) {
	if m == nil {
		return
	}
	m.Transactions.WithLabelValues("committed").Inc()
	m.BatchRecords.Observe(float64(records))
	for _, d := range t.decisions {
		switch d := d.(type) {
		case *batonv1.HandoffCommand:
			m.Commands.WithLabelValues(methodLabel(d.GetMethod())).Inc()
		case *batonv1.HandoffRefused:
			m.Refusals.WithLabelValues(d.GetReasonCode()).Inc()
		}
	}
	for _, o := range t.outcomes {
		m.Outcomes.WithLabelValues(methodLabel(o.GetMethod()), statusLabel(o.GetStatus())).Inc()
	}
	for _, reason := range t.stateRefused {
		m.StateRefused.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) aborted() {
	if m != nil {
		m.Transactions.WithLabelValues("aborted").Inc()
	}
}

// failed counts a transaction that could not begin or end.
func (m *Metrics) failed() {
	if m != nil {
		m.Transactions.WithLabelValues("failed").Inc()
	}
}

// methodLabel is "refer" for METHOD_REFER.
func methodLabel(m batonv1.Method) string {
	return strings.ToLower(strings.TrimPrefix(m.String(), "METHOD_"))
}

// statusLabel is "failed" for OUTCOME_STATUS_FAILED.
func statusLabel(s batonv1.OutcomeStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "OUTCOME_STATUS_"))
}
