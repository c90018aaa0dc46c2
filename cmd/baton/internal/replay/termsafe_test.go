package replay

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// owned clears the screen and sets the terminal's title, then rings.
const owned = "\x1b[2J\x1b]0;owned\a"

// requireTerminalSafe fails when out holds a byte a terminal acts on:
// C0 controls but the line feed, DEL, or a C1 control.
func requireTerminalSafe(t *testing.T, out string) {
	t.Helper()
	for i := 0; i < len(out); i++ {
		c := out[i]
		require.False(t, c < 0x20 && c != '\n' || c == 0x7f, "control byte %#x at %d in:\n%s", c, i, out)
	}
	require.NotContains(t, out, "\u009b")
}

// hostileCall is a call whose caller-chosen text holds control sequences
// in every field the text outputs show.
func hostileCall(t *testing.T, callID string, at time.Time) []Record {
	t.Helper()
	msgs := []struct {
		topic string
		msg   proto.Message
	}{
		{topics.Calls, &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: callID}, CallerNumber: "+15550199\u009b2J",
			CalleeNumber: owned, Trunk: "t\a", Variables: map[string]string{"Intent": owned}}},
		{topics.Calls, &batonv1.HandoffRequested{CallId: callID, RequestId: "r1", Reason: owned, Utterance: owned}},
		{topics.Handoffs, &batonv1.HandoffCommand{CommandId: "cmd-1", CallId: callID, Method: batonv1.Method_METHOD_REFER,
			Destination: owned, Route: "sip:" + owned, Attempt: 1, Headers: []*batonv1.SipHeader{{Name: "X-Intent", Value: owned}}}},
		{topics.Transfers, &batonv1.TransferOutcome{CommandId: "cmd-1", CallId: callID, Method: batonv1.Method_METHOD_REFER,
			Status: batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, SipCode: 202, SipReason: owned}},
		{topics.Transfers, &batonv1.TransferOutcome{CommandId: "cmd-1", CallId: callID, Method: batonv1.Method_METHOD_REFER,
			Status: batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, SipCode: 486, SipReason: owned, Detail: owned}},
		{topics.Calls, &batonv1.CallEnded{CallId: callID, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE", Reason: owned}},
	}
	var recs []*kgo.Record
	for i, m := range msgs {
		ev, err := events.New("baton/test", callID, m.msg, at.Add(time.Duration(i)*10*time.Millisecond))
		require.NoError(t, err)
		rec, err := events.Encode(m.topic, ev)
		require.NoError(t, err)
		recs = append(recs, rec)
	}
	// An undecodable record whose error names a hostile header.
	recs = append(recs, &kgo.Record{Topic: topics.Calls, Key: []byte(callID), Value: []byte("x"), Timestamp: at.Add(time.Second),
		Headers: []kgo.RecordHeader{{Key: "ce_id\x1b[2J", Value: []byte("1")}, {Key: "ce_id\x1b[2J", Value: []byte("2")}}})
	return asRecords(recs)
}

// TestTextOutputEscapesControlCharacters: the timeline, the text ladder and
// the rules diff print caller-chosen text with its control characters
// escaped, never raw (issue 14, finding 9).
func TestTextOutputEscapesControlCharacters(t *testing.T) {
	callID := "c1\x1b[2J"
	steps := Steps(hostileCall(t, callID, time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)))

	var tl bytes.Buffer
	require.NoError(t, WriteTimeline(&tl, callID, steps))
	requireTerminalSafe(t, tl.String())
	require.Contains(t, tl.String(), `call started: +15550199\u009b2J -> \x1b[2J\x1b]0;owned\a from  (trunk t\a) vars [Intent=\x1b[2J\x1b]0;owned\a]`)
	require.Contains(t, tl.String(), `call c1\x1b[2J: 7 records`)
	require.Contains(t, tl.String(), `ce_id\x1b[2J repeated`)

	var ladder bytes.Buffer
	require.NoError(t, WriteLadder(&ladder, Ladder(steps)))
	requireTerminalSafe(t, ladder.String())
	require.Contains(t, ladder.String(), `router: handoff requested: \x1b[2J\x1b]0;owned\a`)
	require.Contains(t, ladder.String(), `transfer: failed: \x1b[2J\x1b]0;owned\a`)
	require.Contains(t, ladder.String(), `202 \x1b[2J`, "an arrow's label is cut after escaping")

	var diff bytes.Buffer
	require.NoError(t, WriteDiff(&diff, Diff(callID, hostileCall(t, callID, time.Now()), nil), "rules\a.yaml"))
	requireTerminalSafe(t, diff.String())
	require.Contains(t, diff.String(), `recorded     REFER to \x1b[2J\x1b]0;owned\a (sip:\x1b[2J\x1b]0;owned\a) attempt 1`)
	require.True(t, strings.HasPrefix(diff.String(), `call c1\x1b[2J: 1 recorded decisions, 0 re-decided with rules\a.yaml`), diff.String())
}
