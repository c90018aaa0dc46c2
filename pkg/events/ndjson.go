package events

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protojson"
)

// The NDJSON record format, one JSON object per line, written by `baton
// export` and `router replay` and read by `baton replay --file` and
// `router replay`: the record's exact bytes (the value as base64, by
// encoding/json) so it replays byte for byte, plus the decoded event for
// people reading the file. It is defined here once so both sides agree.
type ndjsonLine struct {
	Topic     string          `json:"topic"`
	Partition int32           `json:"partition"`
	Offset    int64           `json:"offset"`
	Timestamp time.Time       `json:"timestamp"`
	Key       string          `json:"key"`
	Headers   []ndjsonHeader  `json:"headers"`
	Value     []byte          `json:"value"`
	Event     json.RawMessage `json:"event,omitempty"`
}

type ndjsonHeader struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// MaxNDJSONLine bounds one line read back (a record with every header of a
// large INVITE fits easily).
const MaxNDJSONLine = 16 << 20

// NDJSONWriter writes records as NDJSON lines.
type NDJSONWriter struct {
	enc *json.Encoder
}

// NewNDJSONWriter writes to w (buffer it for many records).
func NewNDJSONWriter(w io.Writer) *NDJSONWriter {
	return &NDJSONWriter{enc: json.NewEncoder(w)}
}

// Write writes r as one line; a value that decodes as an event carries it
// in "event" too.
func (w *NDJSONWriter) Write(r *kgo.Record) error {
	line := ndjsonLine{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp.UTC(),
		Key: string(r.Key), Value: r.Value}
	for _, h := range r.Headers {
		line.Headers = append(line.Headers, ndjsonHeader{Key: h.Key, Value: string(h.Value)})
	}
	if ev, err := Decode(r); err == nil {
		if data, err := protojson.Marshal(ev.Data); err == nil {
			line.Event = data
		}
	}
	if err := w.enc.Encode(line); err != nil {
		return fmt.Errorf("write record %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	return nil
}

// NDJSONReader reads records written by NDJSONWriter.
type NDJSONReader struct {
	sc   *bufio.Scanner
	line int
}

// NewNDJSONReader reads from r.
func NewNDJSONReader(r io.Reader) *NDJSONReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxNDJSONLine)
	return &NDJSONReader{sc: sc}
}

// Next returns the next record, io.EOF after the last; blank lines are
// skipped. An error names the line.
func (r *NDJSONReader) Next() (*kgo.Record, error) {
	for r.sc.Scan() {
		r.line++
		if len(r.sc.Bytes()) == 0 {
			continue
		}
		var line ndjsonLine
		if err := json.Unmarshal(r.sc.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("line %d: %w", r.line, err)
		}
		if line.Topic == "" {
			return nil, fmt.Errorf("line %d: no topic: not a baton export", r.line)
		}
		rec := &kgo.Record{Topic: line.Topic, Partition: line.Partition, Offset: line.Offset,
			Timestamp: line.Timestamp, Key: []byte(line.Key), Value: line.Value}
		for _, h := range line.Headers {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.Key, Value: []byte(h.Value)})
		}
		return rec, nil
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: longer than %d bytes: %w", r.line+1, MaxNDJSONLine, err)
		}
		return nil, fmt.Errorf("read NDJSON: %w", err)
	}
	return nil, io.EOF
}
