package writer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// column is one column of table T: its name and how a batch's rows become
// the column's values, one slice ([]string, []uint64, ...) per batch.
type column[T any] struct {
	name   string
	values func(rows []T) any
}

// col makes a column from a field getter.
func col[T, V any](name string, get func(*T) V) column[T] {
	return column[T]{name: name, values: func(rows []T) any {
		out := make([]V, len(rows))
		for i := range rows {
			out[i] = get(&rows[i])
		}
		return out
	}}
}

// table is a ClickHouse table the writer fills from rows of type T.
type table[T any] struct {
	name    string
	columns []column[T]
}

// columnList names the columns for INSERT (18.16 needs them named).
func (t table[T]) columnList() string {
	names := make([]string, len(t.columns))
	for i, c := range t.columns {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}

// send inserts rows, column by column: one typed slice per column instead
// of a reflected Append per row and value.
func (t table[T]) send(ctx context.Context, conn driver.Conn, rows []T) error {
	if len(rows) == 0 {
		return nil
	}
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+t.name+" ("+t.columnList()+")")
	if err != nil {
		return fmt.Errorf("prepare insert into %s: %w", t.name, err)
	}
	for i, c := range t.columns {
		if err := batch.Column(i).Append(c.values(rows)); err != nil {
			return fmt.Errorf("append %s.%s: %w", t.name, c.name, errors.Join(err, batch.Abort()))
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rows into %s: %w", len(rows), t.name, err)
	}
	return nil
}

// insert sends r to ClickHouse, one batch per table that has rows, the
// tables in parallel (each on its own pooled connection). It returns when
// every table's insert ended; any failure fails the whole batch, which is
// then written again whole (the keys make that harmless).
func insert(ctx context.Context, conn driver.Conn, r *rows) error {
	sends := []func() error{
		func() error { return eventsTable.send(ctx, conn, r.events) },
		func() error { return callsTable.send(ctx, conn, r.calls) },
		func() error { return callEndsTable.send(ctx, conn, r.callEnds) },
		func() error { return handoffsTable.send(ctx, conn, r.handoffs) },
		func() error { return outcomesTable.send(ctx, conn, r.outcomes) },
		func() error { return agentMetricsTable.send(ctx, conn, r.metrics) },
		func() error { return agentStreamsTable.send(ctx, conn, r.streams) },
		func() error { return agentConnectsTable.send(ctx, conn, r.connects) },
	}
	errs := make([]error, len(sends))
	var wg sync.WaitGroup
	for i, send := range sends {
		wg.Go(func() { errs[i] = send() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

var eventsTable = table[eventRow]{name: "events", columns: []column[eventRow]{
	col("event_id", func(r *eventRow) string { return r.EventID }),
	col("type", func(r *eventRow) string { return r.Type }),
	col("call_id", func(r *eventRow) string { return r.CallID }),
	col("source", func(r *eventRow) string { return r.Source }),
	col("time", func(r *eventRow) time.Time { return r.Time }),
	col("time_ms", func(r *eventRow) uint64 { return r.TimeMS }),
	col("topic", func(r *eventRow) string { return r.Topic }),
	col("partition", func(r *eventRow) int32 { return r.Partition }),
	col("offset", func(r *eventRow) int64 { return r.Offset }),
	col("payload_proto", func(r *eventRow) []byte { return r.PayloadProto }),
	col("ce_time", func(r *eventRow) string { return r.CETime }),
	col("traceparent", func(r *eventRow) string { return r.TraceParent }),
}}

var callsTable = table[callRow]{name: "calls", columns: []column[callRow]{
	col("call_id", func(r *callRow) string { return r.CallID }),
	col("started_at", func(r *callRow) time.Time { return r.StartedAt }),
	col("started_ms", func(r *callRow) uint64 { return r.StartedMS }),
	col("trunk", func(r *callRow) string { return r.Trunk }),
	col("source_address", func(r *callRow) string { return r.SourceAddress }),
	col("caller_number", func(r *callRow) string { return r.CallerNumber }),
	col("caller_number_raw", func(r *callRow) string { return r.CallerNumberRaw }),
	col("callee_number", func(r *callRow) string { return r.CalleeNumber }),
	col("callee_number_raw", func(r *callRow) string { return r.CalleeNumberRaw }),
	col("request_uri", func(r *callRow) string { return r.RequestURI }),
	col("variables.key", func(r *callRow) []string { return r.VariableKeys }),
	col("variables.value", func(r *callRow) []string { return r.VariableValues }),
	col("header_count", func(r *callRow) uint32 { return r.HeaderCount }),
	col("oversized_headers", func(r *callRow) uint32 { return r.OversizedHeaders }),
	col("event_id", func(r *callRow) string { return r.EventID }),
	col("version", func(r *callRow) uint64 { return r.Version }),
}}

var callEndsTable = table[callEndRow]{name: "call_ends", columns: []column[callEndRow]{
	col("call_id", func(r *callEndRow) string { return r.CallID }),
	col("ended_at", func(r *callEndRow) time.Time { return r.EndedAt }),
	col("ended_ms", func(r *callEndRow) uint64 { return r.EndedMS }),
	col("ended_by", func(r *callEndRow) string { return r.EndedBy }),
	col("method", func(r *callEndRow) string { return r.Method }),
	col("reason", func(r *callEndRow) string { return r.Reason }),
	col("duration_ms", func(r *callEndRow) uint64 { return r.DurationMS }),
	col("event_id", func(r *callEndRow) string { return r.EventID }),
}}

var handoffsTable = table[handoffRow]{name: "handoffs", columns: []column[handoffRow]{
	col("command_id", func(r *handoffRow) string { return r.CommandID }),
	col("call_id", func(r *handoffRow) string { return r.CallID }),
	col("requested_at", func(r *handoffRow) time.Time { return r.RequestedAt }),
	col("requested_ms", func(r *handoffRow) uint64 { return r.RequestedMS }),
	col("destination", func(r *handoffRow) string { return r.Destination }),
	col("method", func(r *handoffRow) string { return r.Method }),
	col("route", func(r *handoffRow) string { return r.Route }),
	col("reason", func(r *handoffRow) string { return r.Reason }),
	col("utterance", func(r *handoffRow) string { return r.Utterance }),
	col("attempt", func(r *handoffRow) uint32 { return r.Attempt }),
	col("headers.name", func(r *handoffRow) []string { return r.HeaderNames }),
	col("headers.value", func(r *handoffRow) []string { return r.HeaderValues }),
	col("event_id", func(r *handoffRow) string { return r.EventID }),
	col("rule", func(r *handoffRow) string { return r.Rule }),
}}

var outcomesTable = table[outcomeRow]{name: "transfer_outcomes", columns: []column[outcomeRow]{
	col("event_id", func(r *outcomeRow) string { return r.EventID }),
	col("command_id", func(r *outcomeRow) string { return r.CommandID }),
	col("call_id", func(r *outcomeRow) string { return r.CallID }),
	col("time", func(r *outcomeRow) time.Time { return r.Time }),
	col("time_ms", func(r *outcomeRow) uint64 { return r.TimeMS }),
	col("status", func(r *outcomeRow) string { return r.Status }),
	col("method", func(r *outcomeRow) string { return r.Method }),
	col("destination", func(r *outcomeRow) string { return r.Destination }),
	col("reason", func(r *outcomeRow) string { return r.Reason }),
	col("sip_code", func(r *outcomeRow) int32 { return r.SIPCode }),
	col("sip_reason", func(r *outcomeRow) string { return r.SIPReason }),
	col("detail", func(r *outcomeRow) string { return r.Detail }),
	col("elapsed_ms", func(r *outcomeRow) uint64 { return r.ElapsedMS }),
}}

var agentMetricsTable = table[agentMetricRow]{name: "agent_metrics", columns: []column[agentMetricRow]{
	col("event_id", func(r *agentMetricRow) string { return r.EventID }),
	col("call_id", func(r *agentMetricRow) string { return r.CallID }),
	col("time", func(r *agentMetricRow) time.Time { return r.Time }),
	col("time_ms", func(r *agentMetricRow) uint64 { return r.TimeMS }),
	col("name", func(r *agentMetricRow) string { return r.Name }),
	col("value", func(r *agentMetricRow) float64 { return r.Value }),
	col("tags.key", func(r *agentMetricRow) []string { return r.TagKeys }),
	col("tags.value", func(r *agentMetricRow) []string { return r.TagValues }),
	col("request_id", func(r *agentMetricRow) string { return r.RequestID }),
}}

var agentStreamsTable = table[agentStreamRow]{name: "agent_streams", columns: []column[agentStreamRow]{
	col("event_id", func(r *agentStreamRow) string { return r.EventID }),
	col("call_id", func(r *agentStreamRow) string { return r.CallID }),
	col("stream_sid", func(r *agentStreamRow) string { return r.StreamSID }),
	col("ended_at", func(r *agentStreamRow) time.Time { return r.EndedAt }),
	col("ended_ms", func(r *agentStreamRow) uint64 { return r.EndedMS }),
	col("reason", func(r *agentStreamRow) string { return r.Reason }),
	col("action", func(r *agentStreamRow) string { return r.Action }),
	col("detail", func(r *agentStreamRow) string { return r.Detail }),
	col("frames_out", func(r *agentStreamRow) uint64 { return r.FramesOut }),
	col("frames_in", func(r *agentStreamRow) uint64 { return r.FramesIn }),
	col("frames_played", func(r *agentStreamRow) uint64 { return r.FramesPlayed }),
	col("late", func(r *agentStreamRow) uint64 { return r.Late }),
	col("dropped", func(r *agentStreamRow) uint64 { return r.Dropped }),
	col("cleared", func(r *agentStreamRow) uint64 { return r.Cleared }),
	col("max_queue_ms", func(r *agentStreamRow) uint64 { return r.MaxQueueMS }),
	col("marks", func(r *agentStreamRow) uint64 { return r.Marks }),
	col("bad_messages", func(r *agentStreamRow) uint64 { return r.BadMessages }),
}}

var agentConnectsTable = table[agentConnectRow]{name: "agent_connects", columns: []column[agentConnectRow]{
	col("event_id", func(r *agentConnectRow) string { return r.EventID }),
	col("call_id", func(r *agentConnectRow) string { return r.CallID }),
	col("stream_sid", func(r *agentConnectRow) string { return r.StreamSID }),
	col("connected_at", func(r *agentConnectRow) time.Time { return r.ConnectedAt }),
	col("connected_ms", func(r *agentConnectRow) uint64 { return r.ConnectedMS }),
	col("url", func(r *agentConnectRow) string { return r.URL }),
	col("format", func(r *agentConnectRow) string { return r.Format }),
	col("connect_ms", func(r *agentConnectRow) uint64 { return r.ConnectMS }),
	col("source", func(r *agentConnectRow) string { return r.Source }),
}}
