// Package callview shows one recorded call: its records decoded and put
// in time order (Steps), the SIP and Kafka messages they stand for
// (Ladder), and both as HTML, an SVG ladder over a timeline table
// (WriteHTML). `baton replay --html` and the analytics dashboard's call
// page both draw with it, so a call looks the same whether it is read
// from Kafka, from an NDJSON export or from ClickHouse's events table
// (Row rebuilds the record a row was written from).
package callview

import (
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
)

// Record is one Kafka record of the call, as read.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []kgo.RecordHeader
	Timestamp time.Time
}

// Columns are the ClickHouse events columns a record is rebuilt from, in
// the order Scan reads them.
const Columns = "topic, partition, offset, event_id, type, source, call_id, time_ms, ce_time, traceparent, payload_proto"

// Row is one row of ClickHouse's events table (the analytics writer's).
type Row struct {
	Topic         string
	Partition     int32
	Offset        int64
	EventID, Type string
	Source        string
	CallID        string
	TimeMS        uint64
	CETime        string
	TraceParent   string
	Payload       string
}

// Record rebuilds the Kafka record the row was written from: key is the
// call id, value the payload bytes, headers as events.Encode writes them
// and the timestamp the event time in milliseconds, as the producer set
// it. A row written before migration 0006 has no ce_time; it is rebuilt
// from time_ms (milliseconds only) and exact reports false.
func (r Row) Record() (rec Record, exact bool) {
	at := time.UnixMilli(int64(r.TimeMS)).UTC()
	ceTime, exact := r.CETime, r.CETime != ""
	if !exact {
		ceTime = at.Format(time.RFC3339Nano)
	}
	headers := []kgo.RecordHeader{
		{Key: events.HeaderSpecVersion, Value: []byte(events.SpecVersion)},
		{Key: events.HeaderID, Value: []byte(r.EventID)},
		{Key: events.HeaderType, Value: []byte(r.Type)},
		{Key: events.HeaderSource, Value: []byte(r.Source)},
		{Key: events.HeaderTime, Value: []byte(ceTime)},
		{Key: events.HeaderSubject, Value: []byte(r.CallID)},
		{Key: events.HeaderContentType, Value: []byte(events.ContentType)},
	}
	if r.TraceParent != "" {
		headers = append(headers, kgo.RecordHeader{Key: events.HeaderTraceParent, Value: []byte(r.TraceParent)})
	}
	return Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: []byte(r.CallID),
		Value: []byte(r.Payload), Headers: headers, Timestamp: at}, exact
}

// Scanner is what Scan reads a row from: a ClickHouse driver.Rows.
type Scanner interface{ Scan(dest ...any) error }

// Scan reads one row of Columns.
func Scan(s Scanner) (Row, error) {
	var r Row
	err := s.Scan(&r.Topic, &r.Partition, &r.Offset, &r.EventID, &r.Type, &r.Source, &r.CallID, &r.TimeMS,
		&r.CETime, &r.TraceParent, &r.Payload)
	return r, err
}

// Dedup keeps the first row of each event id: a Kafka replay into
// analytics inserts a row again until ReplacingMergeTree merges it.
type Dedup struct{ seen map[string]bool }

// First reports whether r is the first row of its event id seen.
func (d *Dedup) First(r Row) bool {
	if d.seen == nil {
		d.seen = map[string]bool{}
	}
	if d.seen[r.EventID] {
		return false
	}
	d.seen[r.EventID] = true
	return true
}
