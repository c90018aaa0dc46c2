package replay

import (
	"errors"
	"fmt"
	"io"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
)

// WriteNDJSON writes one line per record (events.NDJSONWriter).
func WriteNDJSON(w io.Writer, recs []Record) error {
	nw := events.NewNDJSONWriter(w)
	for _, r := range recs {
		if err := nw.Write(&kgo.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp,
			Key: r.Key, Value: r.Value, Headers: r.Headers}); err != nil {
			return err
		}
	}
	return nil
}

// ReadNDJSON reads records written by WriteNDJSON, keeping only those of
// callID when it is not empty.
func ReadNDJSON(r io.Reader, callID string) ([]Record, error) {
	nr := events.NewNDJSONReader(r)
	var out []Record
	for {
		rec, err := nr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read export: %w", err)
		}
		if callID != "" && string(rec.Key) != callID {
			continue
		}
		out = append(out, Record{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Timestamp: rec.Timestamp,
			Key: rec.Key, Value: rec.Value, Headers: rec.Headers})
	}
}
