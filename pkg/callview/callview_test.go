package callview_test

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/callview"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// referCall is one REFER handoff as the four stages publish it, each
// record at its offset in the order given (the calls, handoffs and
// transfers topics interleaved as a reader sees them).
func referCall(t testing.TB, callID string, at time.Time) []callview.Record {
	t.Helper()
	msgs := []struct {
		topic string
		msg   proto.Message
		after time.Duration
	}{
		{"baton.calls", &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: callID}, CallerNumber: "+15550199",
			CalleeNumber: "+15550100", Variables: map[string]string{"Customer-Id": "C-1"}}, 0},
		{"baton.handoffs", &batonv1.HandoffCommand{CommandId: "cmd-" + callID, CallId: callID, Method: batonv1.Method_METHOD_REFER,
			Destination: "support", Route: "sip:support@pbx", Attempt: 1}, 40 * time.Millisecond},
		{"baton.transfers", &batonv1.TransferOutcome{CommandId: "cmd-" + callID, CallId: callID, Method: batonv1.Method_METHOD_REFER,
			Status: batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, SipCode: 202, SipReason: "Accepted"}, 60 * time.Millisecond},
		{"baton.calls", &batonv1.NotifyReceived{CallId: callID, Event: "refer", SipfragStatus: 200, SipfragReason: "OK"}, 90 * time.Millisecond},
		{"baton.transfers", &batonv1.TransferOutcome{CommandId: "cmd-" + callID, CallId: callID, Method: batonv1.Method_METHOD_REFER,
			Status: batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, SipCode: 200}, 95 * time.Millisecond},
		{"baton.calls", &batonv1.CallEnded{CallId: callID, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"}, 120 * time.Millisecond},
	}
	var out []callview.Record
	for i, m := range msgs {
		ev, err := events.New("baton/test", callID, m.msg, at.Add(m.after))
		require.NoError(t, err)
		rec, err := events.Encode(m.topic, ev)
		require.NoError(t, err)
		out = append(out, callview.Record{Topic: rec.Topic, Offset: int64(i), Key: rec.Key, Value: rec.Value, Headers: rec.Headers,
			Timestamp: rec.Timestamp})
	}
	return out
}

// TestWriteHTMLIsUnchanged: the page is byte for byte the one `baton
// replay --html` wrote before the renderer moved here
// (testdata/refer-call.html was written by cmd/baton/internal/replay at
// 87c712c for the same records).
func TestWriteHTMLIsUnchanged(t *testing.T) {
	steps := callview.Steps(referCall(t, "c1", time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)))
	var page bytes.Buffer
	require.NoError(t, callview.WriteHTML(&page, "c1<x>", steps, callview.Ladder(steps)))
	want, err := os.ReadFile("testdata/refer-call.html")
	require.NoError(t, err)
	require.Equal(t, string(want), page.String())
	// The page is its two parts, which a host page can embed.
	require.Contains(t, page.String(), callview.LadderSVG(callview.Ladder(steps)))
	require.Contains(t, page.String(), callview.TimelineTable(steps))
}

// Text from the records is escaped in both parts: a caller-chosen value
// cannot add markup to the page.
func TestHTMLEscapesRecordText(t *testing.T) {
	const hostile = `<script>alert(1)</script>&"`
	ev, err := events.New("baton/test", "x", &batonv1.HandoffRequested{CallId: "x", Reason: hostile, Utterance: hostile},
		time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC))
	require.NoError(t, err)
	rec, err := events.Encode("baton.calls<b>", ev)
	require.NoError(t, err)
	steps := callview.Steps([]callview.Record{{Topic: rec.Topic, Key: rec.Key, Value: rec.Value, Headers: rec.Headers}})
	for name, out := range map[string]string{
		"ladder":   callview.LadderSVG(callview.Ladder(steps)),
		"timeline": callview.TimelineTable(steps),
	} {
		require.NotContains(t, out, "<script", name)
		require.NotContains(t, out, "<b>", name)
		require.Contains(t, out, "&lt;script&gt;alert(1)&lt;/script&gt;&amp;", name)
	}
}

// A row rebuilds the record it was written from; the same call read from
// rows draws the same ladder and timeline as read from Kafka.
func TestRowsDrawAsTheirRecords(t *testing.T) {
	recs := referCall(t, "c2", time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	var rows []callview.Row
	for _, r := range recs {
		ev, err := events.Decode(&kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers})
		require.NoError(t, err)
		rows = append(rows, callview.Row{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, EventID: ev.ID, Type: ev.Type,
			Source: ev.Source, CallID: ev.Subject, TimeMS: uint64(ev.Time.UnixMilli()), CETime: ev.Time.Format(time.RFC3339Nano),
			Payload: string(r.Value)})
	}
	// A replay into analytics doubled every row.
	rows = append(rows, rows...)
	var back []callview.Record
	var seen callview.Dedup
	for _, row := range rows {
		if !seen.First(row) {
			continue
		}
		rec, exact := row.Record()
		require.True(t, exact)
		back = append(back, rec)
	}
	require.Len(t, back, len(recs))
	want, got := callview.Steps(recs), callview.Steps(back)
	require.Equal(t, callview.LadderSVG(callview.Ladder(want)), callview.LadderSVG(callview.Ladder(got)))
	require.Equal(t, callview.TimelineTable(want), callview.TimelineTable(got))
}

func ExampleLadder() {
	var recs []callview.Record
	at := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	for i, m := range []proto.Message{
		&batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "c"}},
		&batonv1.HandoffCommand{CallId: "c", CommandId: "h", Method: batonv1.Method_METHOD_REFER, Destination: "support"},
		&batonv1.TransferOutcome{CallId: "c", CommandId: "h", Method: batonv1.Method_METHOD_REFER,
			Status: batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, SipCode: 202, SipReason: "Accepted"},
	} {
		ev, _ := events.New("baton/example", "c", m, at.Add(time.Duration(i)*time.Millisecond))
		rec, _ := events.Encode("baton.calls", ev)
		recs = append(recs, callview.Record{Topic: rec.Topic, Offset: int64(i), Key: rec.Key, Value: rec.Value, Headers: rec.Headers})
	}
	lanes := callview.Lanes()
	for _, a := range callview.Ladder(callview.Steps(recs)) {
		fmt.Printf("%-8s -> %-8s %s\n", lanes[a.From], lanes[a.To], a.Label)
	}
	fmt.Println(strings.Count(callview.LadderSVG(callview.Ladder(callview.Steps(recs))), `class="msg"`), "SVG arrows")
	// Output:
	// SBC      -> ingress  INVITE
	// ingress  -> router   CallStarted
	// ingress  -> SBC      200 OK
	// router   -> transfer REFER -> support
	// transfer -> SBC      REFER
	// SBC      -> transfer 202 Accepted
	// 6 SVG arrows
}
