// Package dashboard holds the dashboard queries over Baton's ClickHouse
// tables and the web page the analytics service serves with them.
//
// The SQL lives in schemas/panels: panels.sql (which `baton report` also
// prints) and agent.sql; the Grafana dashboard in deploy/grafana runs
// both. Every query reads deduplicated rows (FINAL tables and the views of
// migrations 0004 and 0005), so a replayed batch changes no figure, and
// runs with the same rows on ClickHouse 18.16 and 26.x.
package dashboard

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/baton-voice/baton/schemas/panels"
)

// DefaultLimit is the row limit of list panels.
const DefaultLimit = 50

// ReasonHour is the handoff count of one reason in one hour.
type ReasonHour struct {
	Hour     time.Time `json:"hour"`
	Reason   string    `json:"reason"`
	Handoffs uint64    `json:"handoffs"`
}

// DestinationRate is how the handoffs to one destination by one method
// ended. SuccessRate is Succeeded / (Succeeded + Failed), 0 when none
// ended; pending handoffs do not count.
type DestinationRate struct {
	Destination string  `json:"destination"`
	Method      string  `json:"method"`
	Handoffs    uint64  `json:"handoffs"`
	Succeeded   uint64  `json:"succeeded"`
	Failed      uint64  `json:"failed"`
	Pending     uint64  `json:"pending"`
	SuccessRate float64 `json:"success_rate"`
}

// TransferTime are the percentiles of the time from a handoff command to
// the caller connected, over the handoffs of one method that succeeded.
// quantileExact: the value at position floor(n*level) of the sorted times.
type TransferTime struct {
	Method    string `json:"method"`
	Transfers uint64 `json:"transfers"`
	P50MS     uint64 `json:"p50_ms"`
	P90MS     uint64 `json:"p90_ms"`
	P99MS     uint64 `json:"p99_ms"`
	MaxMS     uint64 `json:"max_ms"`
}

// DialedNumber is the call count of one dialed (callee) number.
type DialedNumber struct {
	Number string `json:"number"`
	Calls  uint64 `json:"calls"`
}

// Handoff is one recent handoff. TimeToTransferMS is nil until it
// succeeded. Trunk and Context are its call's: the trunk, and the call
// variables (X- headers) the operator chose (Queries.WithContext).
type Handoff struct {
	Trunk            string            `json:"trunk"`
	Context          map[string]string `json:"context,omitempty"`
	RequestedAt      time.Time         `json:"requested_at"`
	CallID           string            `json:"call_id"`
	CommandID        string            `json:"command_id"`
	Reason           string            `json:"reason"`
	Destination      string            `json:"destination"`
	Method           string            `json:"method"`
	Outcome          string            `json:"outcome"`
	SIPCode          int32             `json:"sip_code"`
	TimeToTransferMS *uint64           `json:"time_to_transfer_ms"`
}

// StreamReasonHour is the count of agent streams that ended for one
// reason in one hour.
type StreamReasonHour struct {
	Hour    time.Time `json:"hour"`
	Reason  string    `json:"reason"`
	Streams uint64    `json:"streams"`
}

// AgentFailure is the count of agent streams that failed for one reason
// and were handled by one on_agent_failure action, and of their calls.
type AgentFailure struct {
	Reason  string `json:"reason"`
	Action  string `json:"action"`
	Streams uint64 `json:"streams"`
	Calls   uint64 `json:"calls"`
}

// PlayoutHour is the playout of the agent streams that ended in one
// hour: 20 ms frames played, late, dropped and cleared, and the 95th
// percentile and maximum of each stream's deepest playout queue.
type PlayoutHour struct {
	Hour           time.Time `json:"hour"`
	Streams        uint64    `json:"streams"`
	FramesPlayed   uint64    `json:"frames_played"`
	LateFrames     uint64    `json:"late_frames"`
	DroppedFrames  uint64    `json:"dropped_frames"`
	ClearedFrames  uint64    `json:"cleared_frames"`
	P95MaxQueueMS  uint64    `json:"p95_max_queue_ms"`
	DeepestQueueMS uint64    `json:"deepest_queue_ms"`
}

// RuleHits is how many handoffs one routing rule chose (their first
// command), "(none)" for those no rule chose.
type RuleHits struct {
	Rule         string `json:"rule"`
	Hits         uint64 `json:"hits"`
	Destinations uint64 `json:"destinations"`
}

// MetricSummary summarises one agent metric's samples.
type MetricSummary struct {
	Name    string  `json:"name"`
	Samples uint64  `json:"samples"`
	Calls   uint64  `json:"calls"`
	Avg     float64 `json:"avg"`
	Min     float64 `json:"min"`
	P50     float64 `json:"p50"`
	P95     float64 `json:"p95"`
	Max     float64 `json:"max"`
}

// SIPFailure counts the failed handoffs to one destination decided by
// one SIP status.
type SIPFailure struct {
	SIPCode     int32  `json:"sip_code"`
	SIPReason   string `json:"sip_reason"`
	Destination string `json:"destination"`
	Failures    uint64 `json:"failures"`
	Calls       uint64 `json:"calls"`
}

// TrunkHandoffs is how the handoffs of one trunk's calls ended.
type TrunkHandoffs struct {
	Trunk     string `json:"trunk"`
	Handoffs  uint64 `json:"handoffs"`
	Succeeded uint64 `json:"succeeded"`
	Failed    uint64 `json:"failed"`
	Pending   uint64 `json:"pending"`
}

// DestinationTime are the percentiles of the time to transfer to one
// destination by one method.
type DestinationTime struct {
	Destination string `json:"destination"`
	Method      string `json:"method"`
	Transfers   uint64 `json:"transfers"`
	P50MS       uint64 `json:"p50_ms"`
	P90MS       uint64 `json:"p90_ms"`
	MaxMS       uint64 `json:"max_ms"`
}

// Report is every panel over one window and filter.
type Report struct {
	From                 time.Time          `json:"from"`
	To                   time.Time          `json:"to"`
	Filter               Filter             `json:"filter"`
	ContextColumns       []string           `json:"context_columns"`
	ServerVersion        string             `json:"server_version"`
	HandoffsByReason     []ReasonHour       `json:"handoffs_by_reason"`
	SuccessByDestination []DestinationRate  `json:"success_by_destination"`
	TimeToTransfer       []TransferTime     `json:"time_to_transfer"`
	CallsByDialedNumber  []DialedNumber     `json:"calls_by_dialed_number"`
	RecentHandoffs       []Handoff          `json:"recent_handoffs"`
	FailuresBySIPCode    []SIPFailure       `json:"failures_by_sip_code"`
	HandoffsByTrunk      []TrunkHandoffs    `json:"handoffs_by_trunk"`
	TimeByDestination    []DestinationTime  `json:"time_to_transfer_by_destination"`
	AgentStreamsByReason []StreamReasonHour `json:"agent_streams_by_reason"`
	AgentFailures        []AgentFailure     `json:"agent_failures"`
	AgentPlayout         []PlayoutHour      `json:"agent_playout"`
	AgentMetricsByName   []MetricSummary    `json:"agent_metrics_by_name"`
	RulesByHits          []RuleHits         `json:"rules_by_hits"`
}

// Filter narrows the handoff panels (panels.Filter); empty fields match
// anything.
type Filter = panels.Filter

// Queries runs the panels against one database.
type Queries struct {
	conn driver.Conn
	// context are the call variables shown with each recent handoff.
	context []string
}

// New returns the queries over conn, whose database holds Baton's tables.
func New(conn driver.Conn) *Queries { return &Queries{conn: conn} }

// MaxContextColumns bounds the call variables a dashboard shows.
const MaxContextColumns = 16

// WithContext shows these call variables (their names as CallStarted
// has them, e.g. Customer-Id for X-Customer-Id) with each recent
// handoff. Names must be 1-64 letters, digits, '-' or '_'.
func (q *Queries) WithContext(names []string) (*Queries, error) {
	if len(names) > MaxContextColumns {
		return nil, fmt.Errorf("dashboard context: %d variables, at most %d", len(names), MaxContextColumns)
	}
	for _, n := range names {
		if !validVariable(n) {
			return nil, fmt.Errorf("dashboard context: variable %q: want 1-64 letters, digits, '-' or '_'", n)
		}
	}
	c := *q
	c.context = append([]string(nil), names...)
	return &c, nil
}

func validVariable(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for _, r := range n {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-' && r != '_' {
			return false
		}
	}
	return true
}

// Report runs every panel over [from, to), lists limited to limit rows.
func (q *Queries) Report(ctx context.Context, from, to time.Time, limit int) (*Report, error) {
	return q.ReportFilter(ctx, from, to, limit, Filter{})
}

// ReportFilter is Report with the handoff panels narrowed by f.
func (q *Queries) ReportFilter(ctx context.Context, from, to time.Time, limit int, f Filter) (*Report, error) {
	v, err := ServerVersion(ctx, q.conn)
	if err != nil {
		return nil, err
	}
	r := &Report{From: from.UTC(), To: to.UTC(), Filter: f, ContextColumns: append([]string{}, q.context...), ServerVersion: v.String()}
	w := window{from: from, to: to, limit: limit, filter: f}
	if r.HandoffsByReason, err = q.HandoffsByReason(ctx, w); err != nil {
		return nil, err
	}
	if r.SuccessByDestination, err = q.SuccessByDestination(ctx, w); err != nil {
		return nil, err
	}
	if r.TimeToTransfer, err = q.TimeToTransfer(ctx, w); err != nil {
		return nil, err
	}
	if r.CallsByDialedNumber, err = q.CallsByDialedNumber(ctx, w); err != nil {
		return nil, err
	}
	if r.RecentHandoffs, err = q.RecentHandoffs(ctx, w); err != nil {
		return nil, err
	}
	if r.FailuresBySIPCode, err = q.FailuresBySIPCode(ctx, w); err != nil {
		return nil, err
	}
	if r.HandoffsByTrunk, err = q.HandoffsByTrunk(ctx, w); err != nil {
		return nil, err
	}
	if r.TimeByDestination, err = q.TimeToTransferByDestination(ctx, w); err != nil {
		return nil, err
	}
	if r.AgentStreamsByReason, err = q.AgentStreamsByReason(ctx, w); err != nil {
		return nil, err
	}
	if r.AgentFailures, err = q.AgentFailures(ctx, w); err != nil {
		return nil, err
	}
	if r.AgentPlayout, err = q.AgentPlayout(ctx, w); err != nil {
		return nil, err
	}
	if r.AgentMetricsByName, err = q.AgentMetricsByName(ctx, w); err != nil {
		return nil, err
	}
	if r.RulesByHits, err = q.RulesByHits(ctx, w); err != nil {
		return nil, err
	}
	return r, nil
}

// window is what every panel query takes: [from, to), the list limit and
// the filter.
type window struct {
	from, to time.Time
	limit    int
	filter   Filter
}

// FailuresBySIPCode is the failures_by_sip_code panel.
func (q *Queries) FailuresBySIPCode(ctx context.Context, w window) ([]SIPFailure, error) {
	return query(ctx, q.conn, panels.FailuresBySIPCode, w, func(s scanner) (SIPFailure, error) {
		var r SIPFailure
		err := s.Scan(&r.SIPCode, &r.SIPReason, &r.Destination, &r.Failures, &r.Calls)
		return r, err
	})
}

// HandoffsByTrunk is the handoffs_by_trunk panel.
func (q *Queries) HandoffsByTrunk(ctx context.Context, w window) ([]TrunkHandoffs, error) {
	return query(ctx, q.conn, panels.HandoffsByTrunk, w, func(s scanner) (TrunkHandoffs, error) {
		var r TrunkHandoffs
		err := s.Scan(&r.Trunk, &r.Handoffs, &r.Succeeded, &r.Failed, &r.Pending)
		return r, err
	})
}

// TimeToTransferByDestination is the time_to_transfer_by_destination panel.
func (q *Queries) TimeToTransferByDestination(ctx context.Context, w window) ([]DestinationTime, error) {
	return query(ctx, q.conn, panels.TimeToTransferByDestination, w, func(s scanner) (DestinationTime, error) {
		var r DestinationTime
		err := s.Scan(&r.Destination, &r.Method, &r.Transfers, &r.P50MS, &r.P90MS, &r.MaxMS)
		return r, err
	})
}

// HandoffsByReason is the handoffs_by_reason panel.
func (q *Queries) HandoffsByReason(ctx context.Context, w window) ([]ReasonHour, error) {
	return query(ctx, q.conn, panels.HandoffsByReason, w, func(s scanner) (ReasonHour, error) {
		var r ReasonHour
		err := s.Scan(&r.Hour, &r.Reason, &r.Handoffs)
		r.Hour = r.Hour.UTC()
		return r, err
	})
}

// SuccessByDestination is the success_by_destination panel.
func (q *Queries) SuccessByDestination(ctx context.Context, w window) ([]DestinationRate, error) {
	return query(ctx, q.conn, panels.SuccessByDestination, w, func(s scanner) (DestinationRate, error) {
		var r DestinationRate
		err := s.Scan(&r.Destination, &r.Method, &r.Handoffs, &r.Succeeded, &r.Failed, &r.Pending, &r.SuccessRate)
		return r, err
	})
}

// TimeToTransfer is the time_to_transfer panel.
func (q *Queries) TimeToTransfer(ctx context.Context, w window) ([]TransferTime, error) {
	return query(ctx, q.conn, panels.TimeToTransfer, w, func(s scanner) (TransferTime, error) {
		var r TransferTime
		err := s.Scan(&r.Method, &r.Transfers, &r.P50MS, &r.P90MS, &r.P99MS, &r.MaxMS)
		return r, err
	})
}

// CallsByDialedNumber is the calls_by_dialed_number panel.
func (q *Queries) CallsByDialedNumber(ctx context.Context, w window) ([]DialedNumber, error) {
	return query(ctx, q.conn, panels.CallsByDialedNumber, w, func(s scanner) (DialedNumber, error) {
		var r DialedNumber
		err := s.Scan(&r.Number, &r.Calls)
		return r, err
	})
}

// RecentHandoffs is the recent_handoffs panel, newest first, with each
// call's trunk and chosen context variables.
func (q *Queries) RecentHandoffs(ctx context.Context, w window) ([]Handoff, error) {
	hs, err := query(ctx, q.conn, panels.RecentHandoffs, w, func(s scanner) (Handoff, error) {
		var r Handoff
		err := s.Scan(&r.RequestedAt, &r.CallID, &r.CommandID, &r.Reason, &r.Destination, &r.Method, &r.Outcome,
			&r.SIPCode, &r.TimeToTransferMS)
		r.RequestedAt = r.RequestedAt.UTC()
		return r, err
	})
	if err != nil || len(hs) == 0 {
		return hs, err
	}
	calls, err := q.callContext(ctx, hs)
	if err != nil {
		return nil, err
	}
	for i := range hs {
		c := calls[hs[i].CallID]
		hs[i].Trunk = c.trunk
		if len(q.context) > 0 {
			hs[i].Context = map[string]string{}
			for _, name := range q.context {
				hs[i].Context[name] = c.vars[name]
			}
		}
	}
	return hs, nil
}

type callVars struct {
	trunk string
	vars  map[string]string
}

// callContext reads the trunk and variables of the handoffs' calls.
func (q *Queries) callContext(ctx context.Context, hs []Handoff) (map[string]callVars, error) {
	ids := make([]string, 0, len(hs))
	for _, h := range hs {
		ids = append(ids, panels.Quote(h.CallID))
	}
	rows, err := q.conn.Query(ctx, "SELECT call_id, trunk, variables.key, variables.value FROM calls FINAL WHERE call_id IN ("+
		strings.Join(ids, ", ")+")")
	if err != nil {
		return nil, fmt.Errorf("recent handoffs: call context: %w", err)
	}
	defer func() { _ = rows.Close() }()
	out := map[string]callVars{}
	for rows.Next() {
		var id string
		var c callVars
		var keys, values []string
		if err := rows.Scan(&id, &c.trunk, &keys, &values); err != nil {
			return nil, fmt.Errorf("recent handoffs: call context: %w", err)
		}
		c.vars = map[string]string{}
		for i, k := range keys {
			if i < len(values) {
				c.vars[k] = values[i]
			}
		}
		out[id] = c
	}
	return out, rows.Err()
}

// AgentStreamsByReason is the agent_streams_by_reason panel.
func (q *Queries) AgentStreamsByReason(ctx context.Context, w window) ([]StreamReasonHour, error) {
	return query(ctx, q.conn, panels.AgentStreamsByReason, w, func(s scanner) (StreamReasonHour, error) {
		var r StreamReasonHour
		err := s.Scan(&r.Hour, &r.Reason, &r.Streams)
		r.Hour = r.Hour.UTC()
		return r, err
	})
}

// AgentFailures is the agent_failures panel, the most frequent first.
func (q *Queries) AgentFailures(ctx context.Context, w window) ([]AgentFailure, error) {
	return query(ctx, q.conn, panels.AgentFailures, w, func(s scanner) (AgentFailure, error) {
		var r AgentFailure
		err := s.Scan(&r.Reason, &r.Action, &r.Streams, &r.Calls)
		return r, err
	})
}

// AgentPlayout is the agent_playout panel.
func (q *Queries) AgentPlayout(ctx context.Context, w window) ([]PlayoutHour, error) {
	return query(ctx, q.conn, panels.AgentPlayout, w, func(s scanner) (PlayoutHour, error) {
		var r PlayoutHour
		err := s.Scan(&r.Hour, &r.Streams, &r.FramesPlayed, &r.LateFrames, &r.DroppedFrames, &r.ClearedFrames,
			&r.P95MaxQueueMS, &r.DeepestQueueMS)
		r.Hour = r.Hour.UTC()
		return r, err
	})
}

// AgentMetricsByName is the agent_metrics_by_name panel.
func (q *Queries) AgentMetricsByName(ctx context.Context, w window) ([]MetricSummary, error) {
	return query(ctx, q.conn, panels.AgentMetricsByName, w, func(s scanner) (MetricSummary, error) {
		var r MetricSummary
		err := s.Scan(&r.Name, &r.Samples, &r.Calls, &r.Avg, &r.Min, &r.P50, &r.P95, &r.Max)
		return r, err
	})
}

// RulesByHits is the rules_by_hits panel.
func (q *Queries) RulesByHits(ctx context.Context, w window) ([]RuleHits, error) {
	return query(ctx, q.conn, panels.RulesByHits, w, func(s scanner) (RuleHits, error) {
		var r RuleHits
		err := s.Scan(&r.Rule, &r.Hits, &r.Destinations)
		return r, err
	})
}

type scanner interface{ Scan(dest ...any) error }

// query runs a panel and scans every row with scan. Empty results are
// empty slices, so the JSON API never returns null for a list.
func query[T any](ctx context.Context, conn driver.Conn, name string, w window,
	scan func(scanner) (T, error)) ([]T, error) {
	p, err := panels.Lookup(name)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, p.RenderFilter(w.from, w.to, max(w.limit, 1), w.filter))
	if err != nil {
		return nil, fmt.Errorf("panel %s: %w", name, err)
	}
	defer func() { _ = rows.Close() }()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("panel %s: scan: %w", name, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("panel %s: %w", name, err)
	}
	return out, nil
}

// Version is a ClickHouse server version, as SELECT version() gives it.
type Version struct {
	Major, Minor int
	Raw          string
}

func (v Version) String() string { return v.Raw }

// AtLeast reports whether v is major.minor or later.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

// ParseVersion reads "18.16.1" or "24.8.4.13".
func ParseVersion(s string) (Version, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) < 2 {
		return Version{}, fmt.Errorf("clickhouse version %q: want major.minor", s)
	}
	major, err := strconv.Atoi(parts[0])
	if err != nil {
		return Version{}, fmt.Errorf("clickhouse version %q: major: %w", s, err)
	}
	minor, err := strconv.Atoi(parts[1])
	if err != nil {
		return Version{}, fmt.Errorf("clickhouse version %q: minor: %w", s, err)
	}
	return Version{Major: major, Minor: minor, Raw: strings.TrimSpace(s)}, nil
}

// ServerVersion asks the server its version. Every panel runs on 18.16 and
// 24+ as written, so no query is gated on it today; it is reported with
// the figures and is the one place a future gate reads (see
// schemas/clickhouse/README.md).
func ServerVersion(ctx context.Context, conn driver.Conn) (Version, error) {
	var s string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&s); err != nil {
		return Version{}, fmt.Errorf("server version: %w", err)
	}
	return ParseVersion(s)
}
