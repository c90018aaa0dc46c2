package events

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
)

// Record header names of the CloudEvents Kafka binding (binary mode).
const (
	HeaderSpecVersion = "ce_specversion"
	HeaderID          = "ce_id"
	HeaderType        = "ce_type"
	HeaderSource      = "ce_source"
	HeaderTime        = "ce_time"
	HeaderSubject     = "ce_subject"
	HeaderContentType = "content-type"
	HeaderTraceParent = "traceparent"
)

// MaxSubjectLen is the longest subject (ce_subject, the call id, which is
// also the record key) the contract carries, in bytes: Decode refuses a
// longer one and Encode will not write it. A producer whose call id is
// longer must refuse the call before it exists (ingress answers such an
// INVITE 400).
const MaxSubjectLen = 1024

// maxAttributeLen bounds every attribute header Decode accepts and Encode
// writes, so a hostile record cannot make a consumer hold huge strings. It
// is the subject's bound: no attribute is longer than a call id may be.
const maxAttributeLen = MaxSubjectLen

// Encode turns e into a record for topic, keyed by the call id. It
// refuses, wrapping ErrInvalidHeader, a record Decode would refuse: a
// subject longer than MaxSubjectLen or another attribute longer than the
// same bound.
func Encode(topic string, e Event) (*kgo.Record, error) {
	if e.ID == "" || e.Type == "" || e.Source == "" || e.Subject == "" || e.Time.IsZero() || e.Data == nil {
		return nil, fmt.Errorf("encode event %q of type %q: %w: id, type, source, subject, time and data are required",
			e.ID, e.Type, ErrMissingHeader)
	}
	if len(e.Subject) > MaxSubjectLen {
		return nil, fmt.Errorf("encode event %s: %w: ce_subject (call id) is %d bytes, limit %d",
			e.ID, ErrInvalidHeader, len(e.Subject), MaxSubjectLen)
	}
	for _, a := range []struct{ name, value string }{
		{HeaderID, e.ID}, {HeaderSource, e.Source}, {HeaderTraceParent, e.TraceParent},
	} {
		if len(a.value) > maxAttributeLen {
			return nil, fmt.Errorf("encode event of type %s: %w: %s is %d bytes, limit %d",
				e.Type, ErrInvalidHeader, a.name, len(a.value), maxAttributeLen)
		}
	}
	typ, err := TypeOf(e.Data)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	if typ != e.Type {
		return nil, fmt.Errorf("encode event %s: %w: type %q does not match data %T", e.ID, ErrInvalidHeader, e.Type, e.Data)
	}
	payload, err := proto.Marshal(e.Data)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: marshal %s: %w", e.ID, e.Type, err)
	}
	headers := []kgo.RecordHeader{
		{Key: HeaderSpecVersion, Value: []byte(SpecVersion)},
		{Key: HeaderID, Value: []byte(e.ID)},
		{Key: HeaderType, Value: []byte(e.Type)},
		{Key: HeaderSource, Value: []byte(e.Source)},
		{Key: HeaderTime, Value: []byte(e.Time.UTC().Format(time.RFC3339Nano))},
		{Key: HeaderSubject, Value: []byte(e.Subject)},
		{Key: HeaderContentType, Value: []byte(ContentType)},
	}
	if e.TraceParent != "" {
		headers = append(headers, kgo.RecordHeader{Key: HeaderTraceParent, Value: []byte(e.TraceParent)})
	}
	return &kgo.Record{
		Topic:     topic,
		Key:       []byte(e.Subject),
		Value:     payload,
		Headers:   headers,
		Timestamp: e.Time,
	}, nil
}

// Decode reads an event from a record. It checks every required attribute,
// that the subject matches the record key, and that the payload parses as
// the message the type names. Errors wrap ErrMissingHeader,
// ErrInvalidHeader, ErrUnknownType or ErrInvalidPayload.
func Decode(r *kgo.Record) (Event, error) {
	attrs := make(map[string]string, len(r.Headers))
	for _, h := range r.Headers {
		// ce_subject is bounded by MaxSubjectLen, the same value.
		if len(h.Value) > maxAttributeLen {
			return Event{}, fmt.Errorf("decode %s/%d@%d: %w: %s is %d bytes", r.Topic, r.Partition, r.Offset,
				ErrInvalidHeader, h.Key, len(h.Value))
		}
		if _, dup := attrs[h.Key]; dup {
			return Event{}, fmt.Errorf("decode %s/%d@%d: %w: %s repeated", r.Topic, r.Partition, r.Offset, ErrInvalidHeader, h.Key)
		}
		attrs[h.Key] = string(h.Value)
	}
	for _, k := range []string{HeaderSpecVersion, HeaderID, HeaderType, HeaderSource, HeaderTime, HeaderSubject, HeaderContentType} {
		if attrs[k] == "" {
			return Event{}, fmt.Errorf("decode %s/%d@%d: %w: %s", r.Topic, r.Partition, r.Offset, ErrMissingHeader, k)
		}
	}
	if v := attrs[HeaderSpecVersion]; v != SpecVersion {
		return Event{}, fmt.Errorf("decode %s/%d@%d: %w: ce_specversion %q", r.Topic, r.Partition, r.Offset, ErrInvalidHeader, v)
	}
	if v := attrs[HeaderContentType]; v != ContentType {
		return Event{}, fmt.Errorf("decode %s/%d@%d: %w: content-type %q", r.Topic, r.Partition, r.Offset, ErrInvalidHeader, v)
	}
	if attrs[HeaderSubject] != string(r.Key) {
		return Event{}, fmt.Errorf("decode %s/%d@%d: %w: ce_subject %q differs from key %q", r.Topic, r.Partition, r.Offset,
			ErrInvalidHeader, attrs[HeaderSubject], r.Key)
	}
	at, err := time.Parse(time.RFC3339Nano, attrs[HeaderTime])
	if err != nil {
		return Event{}, fmt.Errorf("decode %s/%d@%d: %w: ce_time: %w", r.Topic, r.Partition, r.Offset, ErrInvalidHeader, err)
	}
	if at.IsZero() {
		return Event{}, fmt.Errorf("decode %s/%d@%d: %w: ce_time is the zero time", r.Topic, r.Partition, r.Offset, ErrInvalidHeader)
	}
	msg, err := newMessage(attrs[HeaderType])
	if err != nil {
		return Event{}, fmt.Errorf("decode %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	if err := proto.Unmarshal(r.Value, msg); err != nil {
		return Event{}, fmt.Errorf("decode %s/%d@%d: %w: %s: %w", r.Topic, r.Partition, r.Offset, ErrInvalidPayload, attrs[HeaderType], err)
	}
	return Event{
		ID:          attrs[HeaderID],
		Type:        attrs[HeaderType],
		Source:      attrs[HeaderSource],
		Subject:     attrs[HeaderSubject],
		Time:        at,
		TraceParent: attrs[HeaderTraceParent],
		Data:        msg,
	}, nil
}
