package replay

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
)

var topics = kafka.DefaultConfig().Topics

// callEvents is one REFER handoff, as the four stages publish it.
func callEvents(t testing.TB, callID string, at time.Time) []*kgo.Record {
	t.Helper()
	msgs := []struct {
		topic string
		msg   proto.Message
		after time.Duration
	}{
		{topics.Calls, &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: callID}, CallerNumber: "+15550199",
			CalleeNumber: "+15550100", Variables: map[string]string{"Customer-Id": "C-1"}}, 0},
		{topics.Handoffs, &batonv1.HandoffCommand{CommandId: "cmd-" + callID, CallId: callID, Method: batonv1.Method_METHOD_REFER,
			Destination: "support", Route: "sip:support@pbx", Attempt: 1}, 40 * time.Millisecond},
		{topics.Transfers, &batonv1.TransferOutcome{CommandId: "cmd-" + callID, CallId: callID, Method: batonv1.Method_METHOD_REFER,
			Status: batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, SipCode: 202, SipReason: "Accepted"}, 60 * time.Millisecond},
		{topics.Calls, &batonv1.NotifyReceived{CallId: callID, Event: "refer", SipfragStatus: 200, SipfragReason: "OK"}, 90 * time.Millisecond},
		{topics.Transfers, &batonv1.TransferOutcome{CommandId: "cmd-" + callID, CallId: callID, Method: batonv1.Method_METHOD_REFER,
			Status: batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, SipCode: 200}, 95 * time.Millisecond},
		{topics.Calls, &batonv1.CallEnded{CallId: callID, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"}, 120 * time.Millisecond},
	}
	var recs []*kgo.Record
	for _, m := range msgs {
		ev, err := events.New("baton/test", callID, m.msg, at.Add(m.after))
		require.NoError(t, err)
		rec, err := events.Encode(m.topic, ev)
		require.NoError(t, err)
		recs = append(recs, rec)
	}
	return recs
}

func TestFetchFindsOneCallReadingOnlyItsPartition(t *testing.T) {
	addrs := kafkatest.NewCluster(t, 6, topics.All()...)
	cfg := kafka.DefaultConfig()
	cfg.Brokers = addrs
	cl, err := kgo.NewClient(kafka.ClientOpts(cfg, slog.New(slog.DiscardHandler))...)
	require.NoError(t, err)
	defer cl.Close()

	base := time.Now().Add(-time.Hour)
	var all []*kgo.Record
	const calls = 120
	for i := range calls {
		all = append(all, callEvents(t, fmt.Sprintf("call-%03d@sbc", i), base.Add(time.Duration(i)*time.Second))...)
	}
	require.NoError(t, cl.ProduceSync(t.Context(), all...).FirstErr())

	target := "call-077@sbc"
	var scanned int64
	recs, err := Fetch(t.Context(), cl, Query{CallID: target, Topics: topics.All(), Since: base}, func(_ string, _ int32, n, _ int64) {
		scanned = max(scanned, n)
	})
	require.NoError(t, err)
	require.Len(t, recs, 6)
	for _, r := range recs {
		require.Equal(t, target, string(r.Key))
	}
	require.Less(t, scanned, int64(len(all)/2), "only the key's partition is read")

	// A time bound after the call excludes it.
	recs, err = Fetch(t.Context(), cl, Query{CallID: target, Topics: topics.All(), Since: base.Add(100 * time.Second)}, nil)
	require.NoError(t, err)
	require.Empty(t, recs)

	// A call nobody made has no records.
	recs, err = Fetch(t.Context(), cl, Query{CallID: "nope", Topics: topics.All(), Since: base}, nil)
	require.NoError(t, err)
	require.Empty(t, recs)

	_, err = Fetch(t.Context(), cl, Query{CallID: target, Topics: []string{"missing.topic"}, Since: base}, nil)
	require.ErrorContains(t, err, "missing.topic")
}

func asRecords(recs []*kgo.Record) []Record {
	var out []Record
	for i, r := range recs {
		out = append(out, Record{Topic: r.Topic, Offset: int64(i), Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp})
	}
	return out
}

func TestTimelineAndLadder(t *testing.T) {
	base := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	recs := asRecords(callEvents(t, "c1", base))
	// Stored out of order (three topics): the timeline orders by event time.
	recs[0], recs[5] = recs[5], recs[0]
	recs = append(recs, Record{Topic: topics.Calls, Key: []byte("c1"), Value: []byte("junk"), Timestamp: base.Add(time.Second)})
	steps := Steps(recs)
	require.Len(t, steps, 7)
	require.IsType(t, &batonv1.CallStarted{}, steps[0].Event.Data)
	require.IsType(t, &batonv1.CallEnded{}, steps[5].Event.Data)
	require.Error(t, steps[6].Err, "an undecodable record is shown, not dropped")

	var tl bytes.Buffer
	require.NoError(t, WriteTimeline(&tl, "c1", steps))
	out := tl.String()
	require.Contains(t, out, "call c1: 7 records")
	require.Contains(t, out, "0.040s") // command 40 ms after the start
	require.Contains(t, out, "SIP 202 Accepted")
	require.Contains(t, out, "undecodable record")
	require.Less(t, strings.Index(out, "call started"), strings.Index(out, "command cmd-c1"))

	arrows := Ladder(steps)
	var labels []string
	for _, a := range arrows {
		labels = append(labels, a.Label)
	}
	require.Equal(t, []string{"INVITE (1 X- headers)", "CallStarted", "200 OK", "REFER -> support", "REFER", "202 Accepted",
		"NOTIFY sipfrag 200", "200 OK", "succeeded (200)", "BYE", "200 OK"}, labels)
	require.Equal(t, laneTransfer, arrows[4].From)
	require.Equal(t, laneSBC, arrows[4].To)

	var text bytes.Buffer
	require.NoError(t, WriteLadder(&text, arrows))
	ladder := text.String()
	require.Contains(t, ladder, "SBC")
	require.Regexp(t, `\|-+INVITE \(1 X- headers\)-+>\|`, ladder)
	require.Regexp(t, `\|<-+REFER-+\|`, ladder, "transfer sends the REFER to the SBC")
	require.Regexp(t, `\|-+202 Accepted-+>\|`, ladder, "the SBC answers the transfer")

	var page bytes.Buffer
	require.NoError(t, WriteHTML(&page, "c1", steps, arrows))
	require.Contains(t, page.String(), "<svg")
	require.Equal(t, 10, strings.Count(page.String(), `class="msg"`), "one SVG line per message; notes are dots")
}

// An agent's stream shows in the timeline with its counts, and as notes on
// ingress's lane of the ladder; a handoff that waited for a mark says so.
func TestTimelineShowsTheAgent(t *testing.T) {
	base := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	for i, m := range []proto.Message{
		&batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "a1"}},
		&batonv1.AgentConnected{CallId: "a1", StreamSid: "MZ1", Url: "wss://bot.example.com/media", Format: "audio/x-mulaw", Source: "trunk", ConnectMs: 12},
		&batonv1.AgentMarkPlayed{CallId: "a1", StreamSid: "MZ1", Name: "goodbye"},
		&batonv1.HandoffRequested{CallId: "a1", RequestedBy: "agent-api", Reason: "billing", AfterMark: "goodbye", MarkWait: "played"},
		&batonv1.AgentDisconnected{CallId: "a1", StreamSid: "MZ1", Reason: "call_ended", Action: "none",
			Stats: &batonv1.AgentStreamStats{FramesOut: 500, FramesIn: 120, FramesPlayed: 240, MaxQueueMs: 2400, Marks: 1}},
	} {
		ev, err := events.New("baton/test", "a1", m, base.Add(time.Duration(i)*time.Second))
		require.NoError(t, err)
		rec, err := events.Encode(topics.Calls, ev)
		require.NoError(t, err)
		recs = append(recs, rec)
	}
	steps := Steps(asRecords(recs))
	var tl bytes.Buffer
	require.NoError(t, WriteTimeline(&tl, "a1", steps))
	out := tl.String()
	require.Contains(t, out, "agent connected: stream MZ1 to wss://bot.example.com/media (audio/x-mulaw, from trunk) in 12 ms")
	require.Contains(t, out, `agent mark "goodbye" played to the caller`)
	require.Contains(t, out, `after mark "goodbye" (played)`)
	require.Contains(t, out, "agent disconnected: call_ended, action none; frames out 500 in 120 played 240")
	var labels []string
	for _, a := range Ladder(steps) {
		if a.From == laneIngress && a.To == laneIngress {
			labels = append(labels, a.Label)
		}
	}
	require.Equal(t, []string{"agent stream open", "agent mark played: goodbye", "agent stream ended: call_ended"}, labels)
}

// TestTimelineShowsAReferRefusalLearned: transfer's learned REFER
// refusal is a step of the call's timeline.
func TestTimelineShowsAReferRefusalLearned(t *testing.T) {
	at := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	ev, err := events.New("baton/transfer", "r1", &batonv1.ReferRefusalLearned{Trunk: "carrier-a", CallId: "r1", SipCode: 405,
		SipReason: "Method Not Allowed", Until: timestamppb.New(at.Add(time.Hour))}, at)
	require.NoError(t, err)
	rec, err := events.Encode(topics.Transfers, ev)
	require.NoError(t, err)
	var tl bytes.Buffer
	require.NoError(t, WriteTimeline(&tl, "r1", Steps(asRecords([]*kgo.Record{rec}))))
	require.Contains(t, tl.String(), "trunk carrier-a refuses REFER (SIP 405 Method Not Allowed): fallback until 2026-12-06T10:00:00Z")
}

func TestNDJSONRoundTrip(t *testing.T) {
	recs := asRecords(callEvents(t, "c1", time.Unix(1_700_000_000, 0)))
	recs = append(recs, asRecords(callEvents(t, "c2", time.Unix(1_700_000_100, 0)))...)
	var buf bytes.Buffer
	require.NoError(t, WriteNDJSON(&buf, recs))
	require.Equal(t, 12, strings.Count(buf.String(), "\n"))
	require.Contains(t, buf.String(), `"callerNumber":"+15550199"`, "the decoded event is readable in the file")

	back, err := ReadNDJSON(bytes.NewReader(buf.Bytes()), "c2")
	require.NoError(t, err)
	require.Len(t, back, 6)
	for i, r := range back {
		require.Equal(t, recs[6+i].Value, r.Value)
		require.Equal(t, recs[6+i].Headers, r.Headers)
		require.True(t, recs[6+i].Timestamp.Equal(r.Timestamp))
	}
	require.Len(t, Steps(back), 6)

	_, err = ReadNDJSON(strings.NewReader("{\"x\":1}\n"), "")
	require.ErrorContains(t, err, "line 1")
	_, err = ReadNDJSON(strings.NewReader("not json\n"), "")
	require.ErrorContains(t, err, "line 1")
}

// TestTimelineShowsAnOutboundCall: the request, its progress and the
// answered call read as what they are.
func TestTimelineShowsAnOutboundCall(t *testing.T) {
	base := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	for i, m := range []proto.Message{
		&batonv1.OutboundCallRequested{CallId: "o1", RequestedBy: "agent-api", From: "+15550001111", To: "+15551234567",
			Trunk: "carrier-a", Agent: "sales-bot", AnswerTimeout: durationpb.New(20 * time.Second),
			Headers: []*batonv1.SipHeader{{Name: "X-Campaign", Value: "renewals"}}},
		&batonv1.OutboundCallProgress{CallId: "o1", Status: batonv1.OutboundStatus_OUTBOUND_STATUS_RINGING, SipCode: 180, SipReason: "Ringing"},
		&batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "o1"}, CallerNumber: "+15550001111", CalleeNumber: "+15551234567",
			Trunk: "carrier-a", Direction: batonv1.CallDirection_CALL_DIRECTION_OUTBOUND},
		&batonv1.OutboundCallProgress{CallId: "o1", Status: batonv1.OutboundStatus_OUTBOUND_STATUS_FAILED, Detail: "trunk_busy"},
	} {
		ev, err := events.New("baton/test", "o1", m, base.Add(time.Duration(i)*time.Second))
		require.NoError(t, err)
		rec, err := events.Encode(topics.Calls, ev)
		require.NoError(t, err)
		recs = append(recs, rec)
	}
	var tl bytes.Buffer
	require.NoError(t, WriteTimeline(&tl, "o1", Steps(asRecords(recs))))
	out := tl.String()
	require.Contains(t, out, `outbound call requested by agent-api: +15550001111 -> +15551234567 (trunk carrier-a, agent "sales-bot", answer timeout 20s) headers [X-Campaign=renewals]`)
	require.Contains(t, out, "outbound call ringing SIP 180 Ringing")
	require.Contains(t, out, "outbound call answered: +15550001111 -> +15551234567")
	require.Contains(t, out, "outbound call failed (trunk_busy)")
	var arrows []string
	for _, a := range Ladder(Steps(asRecords(recs))) {
		arrows = append(arrows, fmt.Sprintf("%d>%d %s", a.From, a.To, a.Label))
	}
	require.Equal(t, []string{fmt.Sprintf("%d>%d INVITE", laneIngress, laneSBC), fmt.Sprintf("%d>%d 200 OK", laneSBC, laneIngress),
		fmt.Sprintf("%d>%d CallStarted (outbound)", laneIngress, laneRouter)}, arrows, "the INVITE goes out")
}
