package events

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

func sampleMessages() map[string]proto.Message {
	dialog := &batonv1.Dialog{
		CallId: "a84b4c76e66710@pc33.example.com", LocalTag: "baton-1", RemoteTag: "1928301774",
		LocalUri: "sip:+15550100@baton.example.com", RemoteUri: "sip:+15550199@sbc.example.com",
		RemoteTarget: "sip:sbc@192.0.2.10:5060", RouteSet: []string{"<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"},
		Transport: batonv1.Transport_TRANSPORT_UDP, NextLocalCseq: 1, LocalContact: "<sip:baton@192.0.2.1:5060>",
	}
	return map[string]proto.Message{
		TypeCallStarted: &batonv1.CallStarted{
			Dialog: dialog,
			SipHeaders: []*batonv1.SipHeader{
				{Name: "Via", Value: "SIP/2.0/UDP sbc.example.com;branch=z9hG4bK1"},
				{Name: "Via", Value: "SIP/2.0/UDP edge.example.com;branch=z9hG4bK2"},
				{Name: "X-Customer-Id", Value: "C-1001"},
			},
			Variables:    map[string]string{"Customer-Id": "C-1001"},
			CallerNumber: "+15550199", CalleeNumber: "+15550100", Trunk: "carrier-a", SourceAddress: "192.0.2.10:5060",
		},
		TypeCallEnded:        &batonv1.CallEnded{CallId: dialog.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE", Duration: durationpb.New(42 * time.Second)},
		TypeNotifyReceived:   &batonv1.NotifyReceived{CallId: dialog.CallId, Event: "refer", SipfragStatus: 200, SipfragReason: "OK"},
		TypeHandoffRequested: &batonv1.HandoffRequested{CallId: dialog.CallId, RequestId: "r1", Reason: "billing_dispute", Utterance: "a human please"},
		TypeHandoffCommand: &batonv1.HandoffCommand{
			CommandId: "c1", CallId: dialog.CallId, Method: batonv1.Method_METHOD_REFER, Destination: "support",
			Route: "sip:support@pbx.example.com", Dialog: dialog, Headers: []*batonv1.SipHeader{{Name: "X-Customer-Id", Value: "C-1001"}},
		},
		TypeTransferOutcome:  &batonv1.TransferOutcome{CommandId: "c1", CallId: dialog.CallId, Status: batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, SipCode: 200},
		TypeTransferAttempt:  &batonv1.TransferAttempt{CommandId: "c1", CallId: dialog.CallId, Method: "METHOD_REFER", Instance: "transfer-1"},
		TypeCallStateChanged: &batonv1.CallStateChanged{CallId: dialog.CallId, Set: map[string]string{"tier": "gold"}, Removed: []string{"draft"}, SetBy: "agent-api"},
		TypeAgentMetric:      &batonv1.AgentMetric{CallId: dialog.CallId, Name: "sentiment", Value: 0.75, Tags: map[string]string{"model": "m1"}},
		TypeHandoffRefused:   &batonv1.HandoffRefused{CallId: dialog.CallId, RequestId: "r1", Destination: "sip:+19005550100@premium.example", ReasonCode: "route_not_allowed"},
		TypePreCallData:      &batonv1.PreCallData{CallId: dialog.CallId, DataJson: `{"data":{"account":{"tier":"gold"}}}`, FetchedBy: "baton-router-1"},
		TypeCallUpdated:      &batonv1.CallUpdated{CallId: dialog.CallId, Direction: "recvonly", RemoteDirection: "sendonly", Hold: true, Codec: "PCMU", Cseq: 2},
		TypeDtmfReceived:     &batonv1.DtmfReceived{CallId: dialog.CallId, Digit: "5", DurationMs: 160, Source: "rfc4733"},
		TypeCallEvicted:      &batonv1.CallEvicted{CallId: dialog.CallId, Reason: "max_call_duration", IdleMs: 14_400_000, EvictedBy: "router-1"},
		TypeAgentConnected:   &batonv1.AgentConnected{CallId: dialog.CallId, StreamSid: "MZ1", Url: "wss://bot.example.com/media", Format: "audio/x-mulaw", ConnectMs: 12, Source: "trunk"},
		TypeAgentDisconnected: &batonv1.AgentDisconnected{CallId: dialog.CallId, StreamSid: "MZ1", Reason: "agent_closed", Action: "hangup",
			Stats: &batonv1.AgentStreamStats{FramesOut: 500, FramesIn: 250, FramesPlayed: 480, MaxQueueMs: 4000, Marks: 2}},
		TypeAgentMarkPlayed: &batonv1.AgentMarkPlayed{CallId: dialog.CallId, StreamSid: "MZ1", Name: "goodbye"},
		TypeAgentSelected:   &batonv1.AgentSelected{CallId: dialog.CallId, Agent: "billing-bot", Source: "rule:vip"},
		TypeOutboundRequested: &batonv1.OutboundCallRequested{CallId: dialog.CallId, RequestId: "r2", Trunk: "carrier-a",
			To: "+15550100", From: "+15550199", Headers: []*batonv1.SipHeader{{Name: "X-Campaign", Value: "renewals"}},
			Agent: "billing-bot", AnswerTimeout: durationpb.New(20 * time.Second), RequestedBy: "agent-api"},
		TypeOutboundProgress: &batonv1.OutboundCallProgress{CallId: dialog.CallId, RequestId: "r2",
			Status: batonv1.OutboundStatus_OUTBOUND_STATUS_BUSY, SipCode: 486, SipReason: "Busy Here", Trunk: "carrier-a"},
		TypeReferRefusalLearned: &batonv1.ReferRefusalLearned{Trunk: "carrier-a", CallId: dialog.CallId, CommandId: "c1",
			Destination: "support", SipCode: 405, SipReason: "Method Not Allowed", Instance: "transfer-1"},
		TypeInboundRefer: &batonv1.InboundReferReceived{CallId: dialog.CallId, ReferId: "r1", ReferTo: "sip:+15550300@pbx.example",
			ReferredBy: "<sip:+15550100@sbc.example>", StrippedHeaders: []string{"X-Bill-To"}, NotifyCseq: 268435456, Cseq: 2},
		TypeBridgeHeld: &batonv1.BridgeHeld{CommandId: "c1", CallId: dialog.CallId, Destination: "support", Instance: "transfer-1",
			Caller: dialog, LeaseUntil: timestamppb.New(time.Date(2026, 11, 23, 17, 0, 30, 0, time.UTC))},
	}
}

func TestRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 23, 17, 0, 0, 123456789, time.UTC)
	for typ, msg := range sampleMessages() {
		t.Run(typ, func(t *testing.T) {
			e, err := New("baton/test", "a84b4c76e66710@pc33.example.com", msg, at)
			require.NoError(t, err)
			require.Equal(t, typ, e.Type)
			e.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

			rec, err := Encode("baton.calls", e)
			require.NoError(t, err)
			require.Equal(t, "a84b4c76e66710@pc33.example.com", string(rec.Key))
			require.Equal(t, "baton.calls", rec.Topic)
			headers := map[string]string{}
			for _, h := range rec.Headers {
				headers[h.Key] = string(h.Value)
			}
			require.Equal(t, typ, headers["ce_type"])
			require.Equal(t, "1.0", headers["ce_specversion"])
			require.Equal(t, "application/protobuf", headers["content-type"])
			require.Equal(t, e.Subject, headers["ce_subject"])

			got, err := Decode(rec)
			require.NoError(t, err)
			require.Equal(t, e.ID, got.ID)
			require.Equal(t, e.Source, got.Source)
			require.Equal(t, e.Subject, got.Subject)
			require.Equal(t, e.TraceParent, got.TraceParent)
			require.True(t, e.Time.Equal(got.Time), "time %v != %v", e.Time, got.Time)
			require.True(t, proto.Equal(msg, got.Data), "payload differs: %v vs %v", msg, got.Data)
		})
	}
}

func TestNewIDsAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		e, err := New("s", "call", &batonv1.CallEnded{CallId: "call"}, time.Now())
		require.NoError(t, err)
		require.False(t, seen[e.ID], "duplicate id %s", e.ID)
		seen[e.ID] = true
	}
}

func TestEncodeRejects(t *testing.T) {
	good, err := New("s", "call", &batonv1.CallEnded{CallId: "call"}, time.Now())
	require.NoError(t, err)
	cases := map[string]func(e *Event){
		"no id":         func(e *Event) { e.ID = "" },
		"no subject":    func(e *Event) { e.Subject = "" },
		"no data":       func(e *Event) { e.Data = nil },
		"type mismatch": func(e *Event) { e.Type = TypeCallStarted },
		"zero time":     func(e *Event) { e.Time = time.Time{} },
		"long subject":  func(e *Event) { e.Subject = strings.Repeat("c", MaxSubjectLen+1) },
		"huge source":   func(e *Event) { e.Source = strings.Repeat("s", 4096) },
		"huge trace":    func(e *Event) { e.TraceParent = strings.Repeat("0", 4096) },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			e := good
			mutate(&e)
			_, err := Encode("t", e)
			require.Error(t, err)
		})
	}
}

// TestEncodeSubjectLimit: Encode writes a subject of MaxSubjectLen bytes,
// which Decode reads back, and refuses one byte more with a clear error,
// so no producer publishes a record every consumer rejects (issue 14,
// finding 10).
func TestEncodeSubjectLimit(t *testing.T) {
	at := time.Date(2026, 11, 23, 17, 0, 0, 0, time.UTC)
	encode := func(subject string) (*kgo.Record, error) {
		e, err := New("baton/test", subject, &batonv1.CallEnded{CallId: subject}, at)
		require.NoError(t, err)
		return Encode("baton.calls", e)
	}

	longest := strings.Repeat("c", MaxSubjectLen)
	rec, err := encode(longest)
	require.NoError(t, err)
	got, err := Decode(rec)
	require.NoError(t, err, "what Encode writes, Decode reads")
	require.Equal(t, longest, got.Subject)

	_, err = encode(longest + "c")
	require.ErrorIs(t, err, ErrInvalidHeader)
	require.ErrorContains(t, err, fmt.Sprintf("ce_subject (call id) is %d bytes, limit %d", MaxSubjectLen+1, MaxSubjectLen))

	// Decode applies the same limit to a record written by hand.
	rec.Key = []byte(longest + "c")
	for i := range rec.Headers {
		if rec.Headers[i].Key == HeaderSubject {
			rec.Headers[i].Value = rec.Key
		}
	}
	_, err = Decode(rec)
	require.ErrorIs(t, err, ErrInvalidHeader)
}

func TestDecodeRejects(t *testing.T) {
	e, err := New("s", "call-1", &batonv1.CallEnded{CallId: "call-1"}, time.Now())
	require.NoError(t, err)
	base, err := Encode("t", e)
	require.NoError(t, err)

	set := func(key, value string) func(r *kgo.Record) {
		return func(r *kgo.Record) {
			for i := range r.Headers {
				if r.Headers[i].Key == key {
					r.Headers[i].Value = []byte(value)
				}
			}
		}
	}
	drop := func(key string) func(r *kgo.Record) {
		return func(r *kgo.Record) {
			hs := r.Headers[:0]
			for _, h := range r.Headers {
				if h.Key != key {
					hs = append(hs, h)
				}
			}
			r.Headers = hs
		}
	}
	cases := []struct {
		name   string
		mutate func(r *kgo.Record)
		want   error
	}{
		{"missing id", drop(HeaderID), ErrMissingHeader},
		{"missing type", drop(HeaderType), ErrMissingHeader},
		{"missing content-type", drop(HeaderContentType), ErrMissingHeader},
		{"wrong specversion", set(HeaderSpecVersion, "0.3"), ErrInvalidHeader},
		{"json content", set(HeaderContentType, "application/json"), ErrInvalidHeader},
		{"bad time", set(HeaderTime, "yesterday"), ErrInvalidHeader},
		{"unknown type", set(HeaderType, "baton.nope.v1"), ErrUnknownType},
		{"subject is not key", set(HeaderSubject, "other-call"), ErrInvalidHeader},
		{"garbage payload", func(r *kgo.Record) { r.Value = []byte{0xff, 0xff, 0xff} }, ErrInvalidPayload},
		{"duplicate header", func(r *kgo.Record) {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderID, Value: []byte("x")})
		}, ErrInvalidHeader},
		{"huge header", set(HeaderSource, string(make([]byte, 4096))), ErrInvalidHeader},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := *base
			r.Headers = append([]kgo.RecordHeader(nil), base.Headers...)
			tc.mutate(&r)
			_, err := Decode(&r)
			require.Error(t, err)
			require.True(t, errors.Is(err, tc.want), "got %v, want %v", err, tc.want)
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, msg := range sampleMessages() {
		e, err := New("baton/fuzz", "call", msg, time.Unix(1700000000, 0))
		if err != nil {
			f.Fatal(err)
		}
		rec, err := Encode("t", e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(rec.Key, rec.Value, e.Type, rec.Headers[4].Value)
	}
	f.Fuzz(func(t *testing.T, key, value []byte, typ string, ceTime []byte) {
		r := &kgo.Record{Key: key, Value: value, Headers: []kgo.RecordHeader{
			{Key: HeaderSpecVersion, Value: []byte(SpecVersion)},
			{Key: HeaderID, Value: []byte("id")},
			{Key: HeaderType, Value: []byte(typ)},
			{Key: HeaderSource, Value: []byte("src")},
			{Key: HeaderTime, Value: ceTime},
			{Key: HeaderSubject, Value: key},
			{Key: HeaderContentType, Value: []byte(ContentType)},
		}}
		e, err := Decode(r)
		if err != nil {
			return
		}
		// Whatever decodes must encode again and decode to the same payload.
		r2, err := Encode("t", e)
		if err != nil {
			t.Fatalf("decoded event does not re-encode: %v", err)
		}
		e2, err := Decode(r2)
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
		if !proto.Equal(e.Data, e2.Data) || e.ID != e2.ID || !e.Time.Equal(e2.Time) {
			t.Fatalf("round trip changed the event: %v vs %v", e, e2)
		}
	})
}
