package synthcalls

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/baton-voice/baton/cmd/baton/internal/replay"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// Recorder adds to calls the decisions the router made when they were
// "recorded": `router replay` with the configuration of the time. It
// numbers them on the handoffs topic as a log would.
type Recorder struct {
	RouterBin, Rules string
	offsets          map[int32]int64
}

// Record decides calls with r's configuration and appends the decisions
// to each call's records.
func (r *Recorder) Record(ctx context.Context, calls []Call) error {
	if r.offsets == nil {
		r.offsets = map[int32]int64{}
	}
	var all []replay.Record
	index := make(map[string]int, len(calls))
	for i, c := range calls {
		all = append(all, c.Records...)
		index[c.ID] = i
	}
	decided, err := replay.Redecide(ctx, r.RouterBin, r.Rules, all)
	if err != nil {
		return fmt.Errorf("record decisions: %w", err)
	}
	for _, d := range decided {
		i, ok := index[string(d.Key)]
		if !ok {
			return fmt.Errorf("record decisions: a decision for unknown call %q", d.Key)
		}
		d.Partition = calls[i].Records[0].Partition
		d.Offset = r.offsets[d.Partition]
		d.Timestamp = d.Timestamp.Truncate(time.Millisecond)
		r.offsets[d.Partition]++
		calls[i].Records = append(calls[i].Records, d)
	}
	return nil
}

// Load writes calls to ClickHouse as analytics would: every event in
// events (payload bytes, ce_time, traceparent), each CallStarted in calls
// and each HandoffCommand in handoffs. conn's database must be migrated.
func Load(ctx context.Context, conn driver.Conn, calls []Call) error {
	evb, err := conn.PrepareBatch(ctx, "INSERT INTO events (event_id, type, call_id, source, time, time_ms, topic, partition, offset, "+
		"payload_proto, ce_time, traceparent)")
	if err != nil {
		return fmt.Errorf("load events: %w", err)
	}
	cb, err := conn.PrepareBatch(ctx, "INSERT INTO calls (call_id, started_at, started_ms, trunk, caller_number, callee_number, event_id, version)")
	if err != nil {
		return fmt.Errorf("load calls: %w", err)
	}
	hb, err := conn.PrepareBatch(ctx, "INSERT INTO handoffs (command_id, call_id, requested_at, requested_ms, destination, method, route, "+
		"reason, attempt, event_id)")
	if err != nil {
		return fmt.Errorf("load handoffs: %w", err)
	}
	defer func() { _, _, _ = evb.Abort(), cb.Abort(), hb.Abort() }() // no-ops once sent
	for _, c := range calls {
		for _, rec := range c.Records {
			ev, err := events.Decode(recordOf(rec))
			if err != nil {
				return fmt.Errorf("load call %s: %w", c.ID, err)
			}
			at, ms := ev.Time.UTC().Truncate(time.Second), uint64(ev.Time.UnixMilli())
			if err := evb.Append(ev.ID, ev.Type, c.ID, ev.Source, at, ms, rec.Topic, rec.Partition, rec.Offset, string(rec.Value),
				header(rec, events.HeaderTime), header(rec, events.HeaderTraceParent)); err != nil {
				return fmt.Errorf("load call %s: %w", c.ID, err)
			}
			switch m := ev.Data.(type) {
			case *batonv1.CallStarted:
				err = cb.Append(c.ID, at, ms, m.GetTrunk(), m.GetCallerNumber(), m.GetCalleeNumber(), ev.ID, ms)
			case *batonv1.HandoffCommand:
				err = hb.Append(m.GetCommandId(), c.ID, at, ms, m.GetDestination(), methodName(m.GetMethod()), m.GetRoute(),
					m.GetReason(), m.GetAttempt(), ev.ID)
			}
			if err != nil {
				return fmt.Errorf("load call %s: %w", c.ID, err)
			}
		}
	}
	for name, b := range map[string]driver.Batch{"events": evb, "calls": cb, "handoffs": hb} {
		if err := b.Send(); err != nil {
			return fmt.Errorf("load %s: %w", name, err)
		}
	}
	return nil
}

// methodName is the method as analytics writes it: REFER, INVITE, BYE.
func methodName(m batonv1.Method) string {
	if m == batonv1.Method_METHOD_UNSPECIFIED {
		return ""
	}
	return strings.TrimPrefix(m.String(), "METHOD_")
}

func header(rec replay.Record, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
