package dashboard

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protojson"

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

// Call is one call's timeline.
type Call struct {
	CallID string      `json:"call_id"`
	Events []CallEvent `json:"events"`
	// Truncated says the call has more than MaxCallEvents events.
	Truncated bool `json:"truncated"`
}

// ErrNoCall is returned when ClickHouse holds no event of the call.
var ErrNoCall = errors.New("no events of this call in ClickHouse")

// Call reads a call's events from the events table in time order, each
// payload decoded by pkg/events (the same decoder the services use).
func (q *Queries) Call(ctx context.Context, callID string) (*Call, error) {
	if callID == "" || len(callID) > MaxCallIDLen {
		return nil, fmt.Errorf("call id: want 1-%d bytes", MaxCallIDLen)
	}
	rows, err := q.conn.Query(ctx, "SELECT event_id, type, source, time_ms, topic, partition, offset, payload_proto "+
		"FROM events FINAL WHERE call_id = "+panels.Quote(callID)+
		" ORDER BY time_ms, topic, partition, offset, event_id LIMIT "+strconv.Itoa(MaxCallEvents+1))
	if err != nil {
		return nil, fmt.Errorf("call events: %w", err)
	}
	defer func() { _ = rows.Close() }()
	c := &Call{CallID: callID, Events: []CallEvent{}}
	var first int64
	for rows.Next() {
		var e CallEvent
		var ms uint64
		var payload string
		if err := rows.Scan(&e.EventID, &e.Type, &e.Source, &ms, &e.Topic, &e.Partition, &e.Offset, &payload); err != nil {
			return nil, fmt.Errorf("call events: scan: %w", err)
		}
		if len(c.Events) == MaxCallEvents {
			c.Truncated = true
			break
		}
		e.Time = time.UnixMilli(int64(ms)).UTC()
		if len(c.Events) == 0 {
			first = int64(ms)
		}
		e.OffsetMS = int64(ms) - first
		e.Payload = decodePayload(callID, e, []byte(payload))
		c.Events = append(c.Events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("call events: %w", err)
	}
	if len(c.Events) == 0 {
		return nil, ErrNoCall
	}
	return c, nil
}

// decodePayload returns the payload as protojson, or why it cannot: the
// record is rebuilt from the row (the CloudEvents attributes analytics
// kept) and read by events.Decode, which checks it as a consumer would.
func decodePayload(callID string, e CallEvent, payload []byte) string {
	rec := &kgo.Record{Topic: e.Topic, Partition: e.Partition, Offset: e.Offset, Key: []byte(callID), Value: payload,
		Headers: []kgo.RecordHeader{
			{Key: events.HeaderSpecVersion, Value: []byte(events.SpecVersion)},
			{Key: events.HeaderID, Value: []byte(e.EventID)},
			{Key: events.HeaderType, Value: []byte(e.Type)},
			{Key: events.HeaderSource, Value: []byte(e.Source)},
			{Key: events.HeaderTime, Value: []byte(e.Time.Format(time.RFC3339Nano))},
			{Key: events.HeaderSubject, Value: []byte(callID)},
			{Key: events.HeaderContentType, Value: []byte(events.ContentType)},
		}}
	ev, err := events.Decode(rec)
	if err != nil {
		return "(undecodable: " + err.Error() + ")"
	}
	data, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ev.Data)
	if err != nil {
		return "(undecodable: " + err.Error() + ")"
	}
	return string(data)
}
