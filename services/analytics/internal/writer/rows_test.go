package writer

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
)

func encode(tb testing.TB, id string, at time.Time, msg proto.Message) *kgo.Record {
	tb.Helper()
	typ, err := events.TypeOf(msg)
	require.NoError(tb, err)
	rec, err := events.Encode("baton.calls", events.Event{ID: id, Type: typ, Source: "baton/test", Subject: "c1", Time: at, Data: msg})
	require.NoError(tb, err)
	return rec
}

func TestBuildDeadLetters(t *testing.T) {
	tests := []struct {
		name    string
		rec     func(testing.TB) *kgo.Record
		wantErr error
	}{
		{"garbage headers", func(testing.TB) *kgo.Record {
			return &kgo.Record{Key: []byte("c1"), Value: []byte{0xff}, Headers: []kgo.RecordHeader{{Key: "ce_id", Value: []byte("x")}}}
		}, events.ErrMissingHeader},
		{"payload is not the type's message", func(tb testing.TB) *kgo.Record {
			rec := encode(tb, "e1", eventTime, &batonv1.CallEnded{CallId: "c1"})
			rec.Value = []byte{0xff, 0xff}
			return rec
		}, events.ErrInvalidPayload},
		{"handoff without command id", func(tb testing.TB) *kgo.Record {
			return encode(tb, "e2", eventTime, &batonv1.HandoffCommand{CallId: "c1"})
		}, ErrUnwritable},
		{"outcome without command id", func(tb testing.TB) *kgo.Record {
			return encode(tb, "e3", eventTime, &batonv1.TransferOutcome{CallId: "c1"})
		}, ErrUnwritable},
		{"time before 1970", func(tb testing.TB) *kgo.Record {
			return encode(tb, "e4", time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC), &batonv1.CallEnded{CallId: "c1"})
		}, ErrUnwritable},
		{"time after DateTime's range", func(tb testing.TB) *kgo.Record {
			return encode(tb, "e5", time.Date(2107, 1, 1, 0, 0, 0, 0, time.UTC), &batonv1.CallEnded{CallId: "c1"})
		}, ErrUnwritable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := encode(t, "good", eventTime, &batonv1.CallEnded{CallId: "c1"})
			bad := tt.rec(t)
			r, dead := build([]*kgo.Record{bad, good})
			require.Len(t, dead, 1)
			require.Same(t, bad, dead[0].rec)
			require.True(t, errors.Is(dead[0].err, tt.wantErr), "err %v, want %v", dead[0].err, tt.wantErr)
			require.Len(t, r.events, 1, "the good record after the bad one is kept")
			require.Equal(t, "good", r.events[0].EventID)
			require.Empty(t, r.handoffs)
			require.Empty(t, r.outcomes)
			require.Len(t, r.callEnds, 1)
		})
	}
}

func TestBuildEnums(t *testing.T) {
	tests := []struct {
		msg  proto.Message
		want func(*rows) string
		exp  string
	}{
		{&batonv1.CallEnded{EndedBy: batonv1.Party_PARTY_REMOTE}, func(r *rows) string { return r.callEnds[0].EndedBy }, "remote"},
		{&batonv1.CallEnded{EndedBy: batonv1.Party_PARTY_BATON}, func(r *rows) string { return r.callEnds[0].EndedBy }, "baton"},
		{&batonv1.CallEnded{}, func(r *rows) string { return r.callEnds[0].EndedBy }, ""},
		{&batonv1.HandoffCommand{CommandId: "k", Method: batonv1.Method_METHOD_INVITE}, func(r *rows) string { return r.handoffs[0].Method }, "INVITE"},
		{&batonv1.HandoffCommand{CommandId: "k", Method: batonv1.Method_METHOD_BYE}, func(r *rows) string { return r.handoffs[0].Method }, "BYE"},
		{&batonv1.HandoffCommand{CommandId: "k"}, func(r *rows) string { return r.handoffs[0].Method }, ""},
		{&batonv1.TransferOutcome{CommandId: "k", Status: batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED}, func(r *rows) string { return r.outcomes[0].Status }, "accepted"},
		{&batonv1.TransferOutcome{CommandId: "k", Status: batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS}, func(r *rows) string { return r.outcomes[0].Status }, "progress"},
		{&batonv1.TransferOutcome{CommandId: "k", Status: batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED}, func(r *rows) string { return r.outcomes[0].Status }, "failed"},
		{&batonv1.TransferOutcome{CommandId: "k", Status: 99}, func(r *rows) string { return r.outcomes[0].Status }, "99"},
	}
	for _, tt := range tests {
		t.Run(tt.exp, func(t *testing.T) {
			r, dead := build([]*kgo.Record{encode(t, "e", eventTime, tt.msg)})
			require.Empty(t, dead)
			require.Equal(t, tt.exp, tt.want(r))
		})
	}
}

// Events without a table of their own still reach events.
func TestBuildEventsOnly(t *testing.T) {
	notify := encode(t, "n", eventTime, &batonv1.NotifyReceived{CallId: "c1", SipfragStatus: 200})
	r, dead := build([]*kgo.Record{
		notify,
		encode(t, "h", eventTime, &batonv1.HandoffRequested{CallId: "c1"}),
	})
	require.Empty(t, dead)
	require.Len(t, r.events, 2)
	require.Equal(t, events.TypeNotifyReceived, r.events[0].Type)
	require.Equal(t, notify.Value, r.events[0].PayloadProto, "the payload is the record's value as it came")
	var got batonv1.NotifyReceived
	require.NoError(t, proto.Unmarshal(r.events[0].PayloadProto, &got))
	require.Equal(t, int32(200), got.GetSipfragStatus())
	require.Empty(t, r.calls)
}

func BenchmarkBuild(b *testing.B) {
	topics := kafka.DefaultConfig().Topics
	recs := callEvents(b, topics, "call-bench")
	var size int64
	for _, r := range recs {
		size += int64(len(r.Value))
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		r, dead := build(recs)
		if len(dead) != 0 || r.len() != len(recs) {
			b.Fatalf("built %d events, %d dead letters", r.len(), len(dead))
		}
	}
}

// A batch built in concurrent parts is the batch built in one: the same
// rows in the same order, the same dead letters in order.
func TestBuildPartsSameAsOne(t *testing.T) {
	topics := kafka.DefaultConfig().Topics
	var recs []*kgo.Record
	for i := range 10 {
		recs = append(recs, callEvents(t, topics, fmt.Sprintf("call-p%d", i))...)
		recs = append(recs, encode(t, fmt.Sprintf("m%d", i), eventTime, &batonv1.AgentMetric{CallId: "c1", Name: "latency", Value: float64(i)}))
		sid := fmt.Sprintf("MZ%d", i)
		recs = append(recs,
			encode(t, "ac"+sid, eventTime, &batonv1.AgentConnected{CallId: "c1", StreamSid: sid, ConnectMs: int64(i)}),
			encode(t, "ad"+sid, eventTime, &batonv1.AgentDisconnected{CallId: "c1", StreamSid: sid, Reason: "handoff",
				Stats: &batonv1.AgentStreamStats{FramesPlayed: uint64(i)}}))
		if i%3 == 0 {
			recs = append(recs, encode(t, fmt.Sprintf("bad%d", i), eventTime, &batonv1.HandoffCommand{CallId: "c1"}))
		}
	}
	one, oneDead := buildParts(recs, 1)
	for _, parts := range []int{2, 3, 7} {
		r, dead := buildParts(recs, parts)
		require.Equal(t, one, r, "%d parts", parts)
		require.Equal(t, oneDead, dead, "%d parts", parts)
	}
	require.Len(t, oneDead, 4)
	require.Len(t, one.events, 70)
	require.Len(t, one.metrics, 10)
	require.Len(t, one.connects, 10)
	require.Len(t, one.streams, 10)
	require.Equal(t, uint64(9), one.streams[9].FramesPlayed, "parts are joined in order")
}

// AgentConnected and AgentDisconnected become one row each, every field
// and counter in its column; a disconnect without stats (a stream that
// never opened) counts zeros, and a negative connect_ms reads 0.
func TestBuildAgentStreams(t *testing.T) {
	ended := eventTime.Add(95 * time.Second)
	r, dead := build([]*kgo.Record{
		encode(t, "conn", eventTime, &batonv1.AgentConnected{CallId: "c1", StreamSid: "MZ1", Url: "wss://bot.example/voice",
			Format: "audio/x-mulaw", ConnectMs: 143, Source: "trunk"}),
		encode(t, "disc", ended, &batonv1.AgentDisconnected{CallId: "c1", StreamSid: "MZ1", Reason: "agent_closed",
			Detail: "close 1011", Action: "handoff", Stats: &batonv1.AgentStreamStats{
				FramesOut: 4750, FramesIn: 2100, FramesPlayed: 4200, Late: 3, Dropped: 17, Cleared: 40,
				MaxQueueMs: 5980, Marks: 6, BadMessages: 2,
			}}),
		encode(t, "fail", ended, &batonv1.AgentDisconnected{CallId: "c1", Reason: "connect_failed", Detail: "dial tcp: refused", Action: "hangup"}),
		encode(t, "skew", eventTime, &batonv1.AgentConnected{CallId: "c1", StreamSid: "MZ2", ConnectMs: -5}),
	})
	require.Empty(t, dead)
	require.Len(t, r.events, 4, "the events table keeps every one of them too")
	require.Equal(t, []agentConnectRow{
		{EventID: "conn", CallID: "c1", StreamSID: "MZ1", ConnectedAt: eventTime, ConnectedMS: uint64(eventTime.UnixMilli()),
			URL: "wss://bot.example/voice", Format: "audio/x-mulaw", ConnectMS: 143, Source: "trunk"},
		{EventID: "skew", CallID: "c1", StreamSID: "MZ2", ConnectedAt: eventTime, ConnectedMS: uint64(eventTime.UnixMilli())},
	}, r.connects)
	require.Equal(t, []agentStreamRow{
		{EventID: "disc", CallID: "c1", StreamSID: "MZ1", EndedAt: ended, EndedMS: uint64(ended.UnixMilli()),
			Reason: "agent_closed", Action: "handoff", Detail: "close 1011",
			FramesOut: 4750, FramesIn: 2100, FramesPlayed: 4200, Late: 3, Dropped: 17, Cleared: 40,
			MaxQueueMS: 5980, Marks: 6, BadMessages: 2},
		{EventID: "fail", CallID: "c1", EndedAt: ended, EndedMS: uint64(ended.UnixMilli()),
			Reason: "connect_failed", Action: "hangup", Detail: "dial tcp: refused"},
	}, r.streams)
	// Each column function reads its own field: every counter differs, so
	// a column wired to the wrong field fails here.
	got := map[string]any{}
	for _, c := range agentStreamsTable.columns {
		got[c.name] = c.values(r.streams[:1])
	}
	require.Equal(t, map[string]any{
		"event_id": []string{"disc"}, "call_id": []string{"c1"}, "stream_sid": []string{"MZ1"},
		"ended_at": []time.Time{ended}, "ended_ms": []uint64{uint64(ended.UnixMilli())},
		"reason": []string{"agent_closed"}, "action": []string{"handoff"}, "detail": []string{"close 1011"},
		"frames_out": []uint64{4750}, "frames_in": []uint64{2100}, "frames_played": []uint64{4200},
		"late": []uint64{3}, "dropped": []uint64{17}, "cleared": []uint64{40}, "max_queue_ms": []uint64{5980},
		"marks": []uint64{6}, "bad_messages": []uint64{2},
	}, got)
	got = map[string]any{}
	for _, c := range agentConnectsTable.columns {
		got[c.name] = c.values(r.connects[:1])
	}
	require.Equal(t, map[string]any{
		"event_id": []string{"conn"}, "call_id": []string{"c1"}, "stream_sid": []string{"MZ1"},
		"connected_at": []time.Time{eventTime}, "connected_ms": []uint64{uint64(eventTime.UnixMilli())},
		"url": []string{"wss://bot.example/voice"}, "format": []string{"audio/x-mulaw"},
		"connect_ms": []uint64{143}, "source": []string{"trunk"},
	}, got)
}
