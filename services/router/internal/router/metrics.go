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
	// Evicted counts the calls evicted for max_call_duration (CallEvicted
	// published, committed).
	Evicted prometheus.Counter
	// RuleHits counts handoff decisions by the routing rule that chose the
	// destination (NoRule when none did: the agent named it, or the
	// default) and by decision (command: a handoff began; refused). A
	// handoff counts once, at its first command: fallbacks are not hits.
	// The rule label is bounded by the configured rule names.
	RuleHits *prometheus.CounterVec
}

// NoRule is the rule label of a decision no routing rule made. Rule names
// cannot take it (config.ReservedRuleName).
const NoRule = "(none)"

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
	m.Evicted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "baton_router_calls_evicted_total",
		Help: "Calls evicted for having no event for max_call_duration (CallEvicted published, committed).",
	})
	m.RuleHits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baton_router_rule_hits_total",
		Help: "Handoff decisions (committed) by the routing rule that chose the destination ((none): no rule) and decision (command, refused).",
	}, []string{"rule", "decision"})
	reg.MustRegister(m.Commands, m.Refusals, m.Outcomes, m.Transactions, m.BatchRecords, m.StateRefused, m.Evicted, m.RuleHits)
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
			if d.GetAttempt() == 1 {
				m.RuleHits.WithLabelValues(ruleLabel(d.GetRule()), "command").Inc()
			}
		case *batonv1.HandoffRefused:
			m.Refusals.WithLabelValues(d.GetReasonCode()).Inc()
			m.RuleHits.WithLabelValues(ruleLabel(d.GetRule()), "refused").Inc()
		}
	}
	for _, o := range t.outcomes {
		m.Outcomes.WithLabelValues(methodLabel(o.GetMethod()), statusLabel(o.GetStatus())).Inc()
	}
	for _, reason := range t.stateRefused {
		m.StateRefused.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) evicted(n int) {
	if m != nil && n > 0 {
		m.Evicted.Add(float64(n))
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

// ruleLabel is the rule label of a decision's rule.
func ruleLabel(rule string) string {
	if rule == "" {
		return NoRule
	}
	return rule
}

// methodLabel is "refer" for METHOD_REFER.
func methodLabel(m batonv1.Method) string {
	return strings.ToLower(strings.TrimPrefix(m.String(), "METHOD_"))
}

// statusLabel is "failed" for OUTCOME_STATUS_FAILED.
func statusLabel(s batonv1.OutcomeStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "OUTCOME_STATUS_"))
}

// Holder is a fold whose calls are measured: the router's own and the
// call view's.
type Holder interface {
	// Held is the number of live calls held.
	Held() int
	// Dropped counts the calls not held for max_calls.
	Dropped() int64
}

// RegisterHolders registers, for each fold by name (owner, view),
// baton_router_calls (live calls held) and
// baton_router_calls_dropped_total (calls not held: max_calls reached).
func RegisterHolders(reg prometheus.Registerer, folds map[string]Holder) {
	for name, f := range folds {
		labels := prometheus.Labels{"fold": name}
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "baton_router_calls", Help: "Live calls held, by fold (owner: this instance's partitions; view: every partition).",
				ConstLabels: labels,
			}, func() float64 { return float64(f.Held()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "baton_router_calls_dropped_total", Help: "Calls not held because max_calls were held, by fold.",
				ConstLabels: labels,
			}, func() float64 { return float64(f.Dropped()) }),
		)
	}
}
