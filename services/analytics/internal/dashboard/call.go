package dashboard

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/baton-voice/baton/pkg/callview"
	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/schemas/panels"
)

// MaxCallEvents bounds the events one call page reads.
const MaxCallEvents = 2000

// MaxCallIDLen bounds a call id in a request (the events' subject bound).
const MaxCallIDLen = 256

// CallEvent is one event of a call as analytics stored it, its payload
// decoded and written as protojson.
type CallEvent struct {
	EventID   string    `json:"event_id"`
	Type      string    `json:"type"`
	Source    string    `json:"source"`
	Time      time.Time `json:"time"`
	OffsetMS  int64     `json:"offset_ms"`
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	Payload   string    `json:"payload"`
}

// TimelineStep is one step of the call as `baton replay` prints it.
type TimelineStep struct {
	Time  time.Time `json:"time"`
	Topic string    `json:"topic"`
	Type  string    `json:"type"`
	What  string    `json:"what"`
}

// LadderArrow is one message of the call's ladder, between two lanes
// (SBC, ingress, router, transfer); From == To is a note on a lane.
type LadderArrow struct {
	At    time.Time `json:"at"`
	From  string    `json:"from"`
	To    string    `json:"to"`
	Label string    `json:"label"`
}

// Call is one call's timeline.
type Call struct {
	CallID string      `json:"call_id"`
	Events []CallEvent `json:"events"`
	// Timeline and Ladder are what `baton replay` shows for the same
	// records: the events rebuilt as the Kafka records they were
	// written from and drawn by pkg/callview.
	Timeline []TimelineStep `json:"timeline"`
	Ladder   []LadderArrow  `json:"ladder"`
	// Truncated says the call has more than MaxCallEvents events.
	Truncated bool `json:"truncated"`

	steps  []callview.Step
	arrows []callview.Arrow
}

// LadderSVG is the call's ladder as `baton replay --html` draws it.
func (c *Call) LadderSVG() string { return callview.LadderSVG(c.arrows) }

// TimelineTable is the call's timeline as `baton replay --html` draws it.
func (c *Call) TimelineTable() string { return callview.TimelineTable(c.steps) }

// ErrNoCall is returned when ClickHouse holds no event of the call.
var ErrNoCall = errors.New("no events of this call in ClickHouse")

// Call reads a call's events from the events table in time order (at
// most MaxCallEvents), rebuilds each as the Kafka record it was written
// from (callview.Row, as `baton replay --clickhouse` does) and decodes it
// with pkg/events, the decoder the services use.
func (q *Queries) Call(ctx context.Context, callID string) (*Call, error) {
	if callID == "" || len(callID) > MaxCallIDLen {
		return nil, fmt.Errorf("call id: want 1-%d bytes", MaxCallIDLen)
	}
	rows, err := q.conn.Query(ctx, "SELECT "+callview.Columns+" FROM events FINAL WHERE call_id = "+panels.Quote(callID)+
		" ORDER BY time_ms, topic, partition, offset, event_id LIMIT "+strconv.Itoa(MaxCallEvents+1))
	if err != nil {
		return nil, fmt.Errorf("call events: %w", err)
	}
	defer func() { _ = rows.Close() }()
	c := &Call{CallID: callID, Events: []CallEvent{}}
	var recs []callview.Record
	var seen callview.Dedup
	var first int64
	for rows.Next() {
		r, err := callview.Scan(rows)
		if err != nil {
			return nil, fmt.Errorf("call events: scan: %w", err)
		}
		if !seen.First(r) {
			continue // FINAL merges duplicates; this keeps it so if a server does not
		}
		if len(c.Events) == MaxCallEvents {
			c.Truncated = true
			break
		}
		rec, _ := r.Record()
		recs = append(recs, rec)
		e := CallEvent{EventID: r.EventID, Type: r.Type, Source: r.Source, Time: time.UnixMilli(int64(r.TimeMS)).UTC(),
			Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Payload: decodePayload(rec)}
		if len(c.Events) == 0 {
			first = int64(r.TimeMS)
		}
		e.OffsetMS = int64(r.TimeMS) - first
		c.Events = append(c.Events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("call events: %w", err)
	}
	if len(c.Events) == 0 {
		return nil, ErrNoCall
	}
	c.steps = callview.Steps(recs)
	c.arrows = callview.Ladder(c.steps)
	c.Timeline = make([]TimelineStep, 0, len(c.steps))
	for _, s := range c.steps {
		c.Timeline = append(c.Timeline, TimelineStep{Time: s.Time().UTC(), Topic: s.Record.Topic, Type: s.Event.Type, What: s.Summary()})
	}
	lanes := callview.Lanes()
	c.Ladder = make([]LadderArrow, 0, len(c.arrows))
	for _, a := range c.arrows {
		c.Ladder = append(c.Ladder, LadderArrow{At: a.At.UTC(), From: lanes[a.From], To: lanes[a.To], Label: a.Label})
	}
	return c, nil
}

// decodePayload returns the payload as protojson, or why it cannot: the
// record rebuilt from the row is read by events.Decode, which checks it
// as a consumer would.
func decodePayload(r callview.Record) string {
	ev, err := events.Decode(&kgo.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value,
		Headers: r.Headers, Timestamp: r.Timestamp})
	if err != nil {
		return "(undecodable: " + err.Error() + ")"
	}
	data, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ev.Data)
	if err != nil {
		return "(undecodable: " + err.Error() + ")"
	}
	return string(data)
}
