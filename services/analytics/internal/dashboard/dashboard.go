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
// succeeded.
type Handoff struct {
	RequestedAt      time.Time `json:"requested_at"`
	CallID           string    `json:"call_id"`
	CommandID        string    `json:"command_id"`
	Reason           string    `json:"reason"`
	Destination      string    `json:"destination"`
	Method           string    `json:"method"`
	Outcome          string    `json:"outcome"`
	SIPCode          int32     `json:"sip_code"`
	TimeToTransferMS *uint64   `json:"time_to_transfer_ms"`
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

// Report is every panel over one window.
type Report struct {
	From                 time.Time          `json:"from"`
	To                   time.Time          `json:"to"`
	ServerVersion        string             `json:"server_version"`
	HandoffsByReason     []ReasonHour       `json:"handoffs_by_reason"`
	SuccessByDestination []DestinationRate  `json:"success_by_destination"`
	TimeToTransfer       []TransferTime     `json:"time_to_transfer"`
	CallsByDialedNumber  []DialedNumber     `json:"calls_by_dialed_number"`
	RecentHandoffs       []Handoff          `json:"recent_handoffs"`
	AgentStreamsByReason []StreamReasonHour `json:"agent_streams_by_reason"`
	AgentFailures        []AgentFailure     `json:"agent_failures"`
	AgentPlayout         []PlayoutHour      `json:"agent_playout"`
	AgentMetricsByName   []MetricSummary    `json:"agent_metrics_by_name"`
}

// Queries runs the panels against one database.
type Queries struct {
	conn driver.Conn
}

// New returns the queries over conn, whose database holds Baton's tables.
func New(conn driver.Conn) *Queries { return &Queries{conn: conn} }

// Report runs every panel over [from, to), lists limited to limit rows.
func (q *Queries) Report(ctx context.Context, from, to time.Time, limit int) (*Report, error) {
	v, err := ServerVersion(ctx, q.conn)
	if err != nil {
		return nil, err
	}
	r := &Report{From: from.UTC(), To: to.UTC(), ServerVersion: v.String()}
	if r.HandoffsByReason, err = q.HandoffsByReason(ctx, from, to); err != nil {
		return nil, err
	}
	if r.SuccessByDestination, err = q.SuccessByDestination(ctx, from, to); err != nil {
		return nil, err
	}
	if r.TimeToTransfer, err = q.TimeToTransfer(ctx, from, to); err != nil {
		return nil, err
	}
	if r.CallsByDialedNumber, err = q.CallsByDialedNumber(ctx, from, to, limit); err != nil {
		return nil, err
	}
	if r.RecentHandoffs, err = q.RecentHandoffs(ctx, from, to, limit); err != nil {
		return nil, err
	}
	if r.AgentStreamsByReason, err = q.AgentStreamsByReason(ctx, from, to); err != nil {
		return nil, err
	}
	if r.AgentFailures, err = q.AgentFailures(ctx, from, to); err != nil {
		return nil, err
	}
	if r.AgentPlayout, err = q.AgentPlayout(ctx, from, to); err != nil {
		return nil, err
	}
	if r.AgentMetricsByName, err = q.AgentMetricsByName(ctx, from, to, limit); err != nil {
		return nil, err
	}
	return r, nil
}

// HandoffsByReason is the handoffs_by_reason panel.
func (q *Queries) HandoffsByReason(ctx context.Context, from, to time.Time) ([]ReasonHour, error) {
	return query(ctx, q.conn, panels.HandoffsByReason, from, to, 0, func(s scanner) (ReasonHour, error) {
		var r ReasonHour
		err := s.Scan(&r.Hour, &r.Reason, &r.Handoffs)
		r.Hour = r.Hour.UTC()
		return r, err
	})
}

// SuccessByDestination is the success_by_destination panel.
func (q *Queries) SuccessByDestination(ctx context.Context, from, to time.Time) ([]DestinationRate, error) {
	return query(ctx, q.conn, panels.SuccessByDestination, from, to, 0, func(s scanner) (DestinationRate, error) {
		var r DestinationRate
		err := s.Scan(&r.Destination, &r.Method, &r.Handoffs, &r.Succeeded, &r.Failed, &r.Pending, &r.SuccessRate)
		return r, err
	})
}

// TimeToTransfer is the time_to_transfer panel.
func (q *Queries) TimeToTransfer(ctx context.Context, from, to time.Time) ([]TransferTime, error) {
	return query(ctx, q.conn, panels.TimeToTransfer, from, to, 0, func(s scanner) (TransferTime, error) {
		var r TransferTime
		err := s.Scan(&r.Method, &r.Transfers, &r.P50MS, &r.P90MS, &r.P99MS, &r.MaxMS)
		return r, err
	})
}

// CallsByDialedNumber is the calls_by_dialed_number panel.
func (q *Queries) CallsByDialedNumber(ctx context.Context, from, to time.Time, limit int) ([]DialedNumber, error) {
	return query(ctx, q.conn, panels.CallsByDialedNumber, from, to, limit, func(s scanner) (DialedNumber, error) {
		var r DialedNumber
		err := s.Scan(&r.Number, &r.Calls)
		return r, err
	})
}

// RecentHandoffs is the recent_handoffs panel, newest first.
func (q *Queries) RecentHandoffs(ctx context.Context, from, to time.Time, limit int) ([]Handoff, error) {
	return query(ctx, q.conn, panels.RecentHandoffs, from, to, limit, func(s scanner) (Handoff, error) {
		var r Handoff
		err := s.Scan(&r.RequestedAt, &r.CallID, &r.CommandID, &r.Reason, &r.Destination, &r.Method, &r.Outcome,
			&r.SIPCode, &r.TimeToTransferMS)
		r.RequestedAt = r.RequestedAt.UTC()
		return r, err
	})
}

// AgentStreamsByReason is the agent_streams_by_reason panel.
func (q *Queries) AgentStreamsByReason(ctx context.Context, from, to time.Time) ([]StreamReasonHour, error) {
	return query(ctx, q.conn, panels.AgentStreamsByReason, from, to, 0, func(s scanner) (StreamReasonHour, error) {
		var r StreamReasonHour
		err := s.Scan(&r.Hour, &r.Reason, &r.Streams)
		r.Hour = r.Hour.UTC()
		return r, err
	})
}

// AgentFailures is the agent_failures panel, the most frequent first.
func (q *Queries) AgentFailures(ctx context.Context, from, to time.Time) ([]AgentFailure, error) {
	return query(ctx, q.conn, panels.AgentFailures, from, to, 0, func(s scanner) (AgentFailure, error) {
		var r AgentFailure
		err := s.Scan(&r.Reason, &r.Action, &r.Streams, &r.Calls)
		return r, err
	})
}

// AgentPlayout is the agent_playout panel.
func (q *Queries) AgentPlayout(ctx context.Context, from, to time.Time) ([]PlayoutHour, error) {
	return query(ctx, q.conn, panels.AgentPlayout, from, to, 0, func(s scanner) (PlayoutHour, error) {
		var r PlayoutHour
		err := s.Scan(&r.Hour, &r.Streams, &r.FramesPlayed, &r.LateFrames, &r.DroppedFrames, &r.ClearedFrames,
			&r.P95MaxQueueMS, &r.DeepestQueueMS)
		r.Hour = r.Hour.UTC()
		return r, err
	})
}

// AgentMetricsByName is the agent_metrics_by_name panel.
func (q *Queries) AgentMetricsByName(ctx context.Context, from, to time.Time, limit int) ([]MetricSummary, error) {
	return query(ctx, q.conn, panels.AgentMetricsByName, from, to, limit, func(s scanner) (MetricSummary, error) {
		var r MetricSummary
		err := s.Scan(&r.Name, &r.Samples, &r.Calls, &r.Avg, &r.Min, &r.P50, &r.P95, &r.Max)
		return r, err
	})
}

type scanner interface{ Scan(dest ...any) error }

// query runs a panel and scans every row with scan. Empty results are
// empty slices, so the JSON API never returns null for a list.
func query[T any](ctx context.Context, conn driver.Conn, name string, from, to time.Time, limit int,
	scan func(scanner) (T, error)) ([]T, error) {
	p, err := panels.Lookup(name)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, p.Render(from, to, max(limit, 1)))
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
