package chreplay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/baton-voice/baton/cmd/baton/internal/replay"
	"github.com/baton-voice/baton/pkg/callview"
	"github.com/baton-voice/baton/schemas/panels"
)

// Window selects the calls of a period: those that started in [From, To),
// optionally on one trunk, optionally only those with a recorded handoff
// command to one destination.
type Window struct {
	From, To    time.Time
	Trunk       string
	Destination string
	Topics      []string
}

// Validate refuses an empty or reversed period.
func (w Window) Validate() error {
	if w.From.IsZero() || w.To.IsZero() {
		return errors.New("a period needs a start and an end")
	}
	if !w.From.Before(w.To) {
		return fmt.Errorf("period start %s is not before its end %s", w.From.UTC().Format(time.RFC3339), w.To.UTC().Format(time.RFC3339))
	}
	return nil
}

// callsWhere is the condition on the calls table (one row per CallStarted).
func (w Window) callsWhere() string {
	q := fmt.Sprintf("started_at >= toDateTime(%d) AND started_at < toDateTime(%d)", w.From.Unix(), w.To.Unix())
	if w.Trunk != "" {
		q += " AND trunk = " + panels.Quote(w.Trunk)
	}
	if w.Destination != "" {
		q += " AND call_id IN (SELECT call_id FROM handoffs WHERE destination = " + panels.Quote(w.Destination) + ")"
	}
	return q
}

// CallsQuery lists the window's call ids in call id order.
func (w Window) CallsQuery() string {
	return "SELECT call_id FROM calls WHERE " + w.callsWhere() + " GROUP BY call_id ORDER BY call_id"
}

// CountQuery counts the window's calls.
func (w Window) CountQuery() string {
	return "SELECT uniqExact(call_id) FROM calls WHERE " + w.callsWhere()
}

// EventsQuery reads the events of a batch of calls, call by call.
func EventsQuery(callIDs, topics []string) string {
	q := "SELECT " + Columns + " FROM events WHERE call_id IN (" + quoteList(callIDs) + ")"
	if len(topics) > 0 {
		q += " AND topic IN (" + quoteList(topics) + ")"
	}
	return q + " ORDER BY call_id, topic, partition, offset, event_id"
}

// Count is how many calls the window holds.
func Count(ctx context.Context, conn driver.Conn, w Window) (uint64, error) {
	var n uint64
	if err := conn.QueryRow(ctx, w.CountQuery()).Scan(&n); err != nil {
		return 0, fmt.Errorf("count calls: %w", err)
	}
	return n, nil
}

// Call is one call's records.
type Call struct {
	ID      string
	Records []replay.Record
}

// Stream reads the window's calls in batches of up to batch calls and
// hands each batch to fn, in call id order. The call ids arrive as one
// streamed query; the events of a batch are read by primary key. Only one
// batch is held at a time, so memory does not grow with the period.
func Stream(ctx context.Context, conn driver.Conn, w Window, batch int, fn func(context.Context, []Call) error) error {
	if err := w.Validate(); err != nil {
		return err
	}
	if batch < 1 {
		return fmt.Errorf("batch size %d: want at least 1", batch)
	}
	ids, err := conn.Query(ctx, w.CallsQuery())
	if err != nil {
		return fmt.Errorf("list calls: %w", err)
	}
	defer func() { _ = ids.Close() }()
	page := make([]string, 0, batch)
	flush := func() error {
		if len(page) == 0 {
			return nil
		}
		calls, err := readCalls(ctx, conn, page, w.Topics)
		if err != nil {
			return err
		}
		page = page[:0]
		return fn(ctx, calls)
	}
	for ids.Next() {
		var id string
		if err := ids.Scan(&id); err != nil {
			return fmt.Errorf("list calls: %w", err)
		}
		page = append(page, id)
		if len(page) == batch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := ids.Err(); err != nil {
		return fmt.Errorf("list calls: %w", err)
	}
	return flush()
}

// readCalls reads the events of ids, one record per event id, grouped by
// call in the order of ids.
func readCalls(ctx context.Context, conn driver.Conn, ids, topics []string) ([]Call, error) {
	rows, err := conn.Query(ctx, EventsQuery(ids, topics))
	if err != nil {
		return nil, fmt.Errorf("read %d calls: %w", len(ids), err)
	}
	defer func() { _ = rows.Close() }()
	byID := make(map[string]*Call, len(ids))
	var seen callview.Dedup
	for rows.Next() {
		r, err := Scan(rows)
		if err != nil {
			return nil, fmt.Errorf("read %d calls: %w", len(ids), err)
		}
		if !seen.First(r) {
			continue
		}
		c := byID[r.CallID]
		if c == nil {
			c = &Call{ID: r.CallID}
			byID[r.CallID] = c
		}
		rec, _ := r.Record()
		c.Records = append(c.Records, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %d calls: %w", len(ids), err)
	}
	out := make([]Call, 0, len(ids))
	for _, id := range ids {
		if c := byID[id]; c != nil {
			out = append(out, *c)
		}
	}
	return out, nil
}
