package replay

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/baton-voice/baton/pkg/events"
)

// exportLine is one record in NDJSON: exact bytes (value as base64 by
// encoding/json) so it replays byte for byte, plus the decoded event for
// people reading the file.
type exportLine struct {
	Topic     string          `json:"topic"`
	Partition int32           `json:"partition"`
	Offset    int64           `json:"offset"`
	Timestamp time.Time       `json:"timestamp"`
	Key       string          `json:"key"`
	Headers   []exportHeader  `json:"headers"`
	Value     []byte          `json:"value"`
	Event     json.RawMessage `json:"event,omitempty"`
}

type exportHeader struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// maxLine bounds one NDJSON line read back (a record with every header of
// a large INVITE fits easily).
const maxLine = 16 << 20

// WriteNDJSON writes one line per record.
func WriteNDJSON(w io.Writer, recs []Record) error {
	enc := json.NewEncoder(w)
	for _, r := range recs {
		line := exportLine{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp.UTC(),
			Key: string(r.Key), Value: r.Value}
		for _, h := range r.Headers {
			line.Headers = append(line.Headers, exportHeader{Key: h.Key, Value: string(h.Value)})
		}
		if ev, err := events.Decode(&kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}); err == nil {
			if data, err := protojson.Marshal(ev.Data); err == nil {
				line.Event = data
			}
		}
		if err := enc.Encode(line); err != nil {
			return fmt.Errorf("write record %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
		}
	}
	return nil
}

// ReadNDJSON reads records written by WriteNDJSON, keeping only those of
// callID when it is not empty.
func ReadNDJSON(r io.Reader, callID string) ([]Record, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var out []Record
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var line exportLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if line.Topic == "" {
			return nil, fmt.Errorf("line %d: no topic: not a baton export", n)
		}
		if callID != "" && line.Key != callID {
			continue
		}
		rec := Record{Topic: line.Topic, Partition: line.Partition, Offset: line.Offset, Timestamp: line.Timestamp,
			Key: []byte(line.Key), Value: line.Value}
		for _, h := range line.Headers {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.Key, Value: []byte(h.Value)})
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read export: %w", err)
	}
	return out, nil
}
