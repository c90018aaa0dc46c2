package events

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events/batonv1"
)

func TestNDJSONRoundTrip(t *testing.T) {
	ev, err := New("baton/test", "call-1", &batonv1.CallEnded{CallId: "call-1", Reason: "bye"}, time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := Encode("baton.calls", ev)
	if err != nil {
		t.Fatal(err)
	}
	rec.Partition, rec.Offset, rec.Timestamp = 3, 42, time.Unix(1700000001, 0)
	raw := &kgo.Record{Topic: "baton.calls", Key: []byte("k"), Value: []byte{0xff, 0x00, '\n'}, Partition: 1, Offset: 7}
	var buf bytes.Buffer
	w := NewNDJSONWriter(&buf)
	for _, r := range []*kgo.Record{rec, raw} {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(buf.String(), `"reason":"bye"`) {
		t.Errorf("the decoded event is not in the line: %s", buf.String())
	}
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Fatalf("%d lines", n)
	}
	r := NewNDJSONReader(strings.NewReader("\n" + buf.String()))
	for _, want := range []*kgo.Record{rec, raw} {
		got, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if got.Topic != want.Topic || got.Partition != want.Partition || got.Offset != want.Offset ||
			!bytes.Equal(got.Key, want.Key) || !bytes.Equal(got.Value, want.Value) || len(got.Headers) != len(want.Headers) ||
			!got.Timestamp.Equal(want.Timestamp) {
			t.Errorf("round trip: got %+v, want %+v", got, want)
		}
		for i := range got.Headers {
			if got.Headers[i].Key != want.Headers[i].Key || !bytes.Equal(got.Headers[i].Value, want.Headers[i].Value) {
				t.Errorf("header %d: %v vs %v", i, got.Headers[i], want.Headers[i])
			}
		}
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last: %v", err)
	}
	for _, bad := range []string{"{\"topic\":\"\"}\n", "not json\n"} {
		if _, err := NewNDJSONReader(strings.NewReader(bad)).Next(); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
