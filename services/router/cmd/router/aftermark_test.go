package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// TestHandoffAfterMarkLandsAfterTheMark: over kfake, the agent asks for a
// handoff after mark "goodbye" (202 at once); only then does ingress's
// AgentMarkPlayed land on baton.calls. The HandoffRequested the API
// publishes lands after it in the same partition (a larger offset), with
// mark_wait played, and the router then issues the command.
func TestHandoffAfterMarkLandsAfterTheMark(t *testing.T) {
	brokers := kafkatest.NewCluster(t, 1)
	s := startService(t, brokers, fmt.Sprintf(`kafka:
  brokers: [%q]
  partitions: 1
metrics:
  listen: ""
api:
  listen: 127.0.0.1:0
  tokens_env: BATON_TEST_TOKENS
destinations:
  - name: support
    route: sip:support@127.0.0.1:5090
`, brokers[0]))
	s.produce("baton.calls", "mark-1", &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "sip-mark-1"}})
	s.produce("baton.calls", "mark-1", &batonv1.AgentConnected{CallId: "mark-1", StreamSid: "MZ1"})
	s.produce("baton.calls", "mark-1", &batonv1.AgentMarkPlayed{CallId: "mark-1", StreamSid: "MZ1", Name: "hello"})
	s.live("mark-1")
	// The view has folded the stream and the first mark.
	require.Eventually(t, func() bool {
		_, b := s.call("GET", "/v1/calls/mark-1", "")
		return b["agent_stream"] == true && fmt.Sprint(b["marks_played"]) == "[hello]"
	}, 20*time.Second, 10*time.Millisecond)

	code, body := s.call("POST", "/v1/calls/mark-1/handoff", `{"destination":"support","after_mark":"goodbye","mark_timeout_ms":30000}`)
	require.Equal(t, 202, code, "%v", body)
	require.Equal(t, "waiting", body["mark_wait"])
	requestID := body["request_id"].(string)

	mark := s.produce("baton.calls", "mark-1", &batonv1.AgentMarkPlayed{CallId: "mark-1", StreamSid: "MZ1", Name: "goodbye"})

	calls := s.consume("baton.calls")
	var requested *kgo.Record
	until(t, calls, func(rec *kgo.Record, ev events.Event) bool {
		if r, ok := ev.Data.(*batonv1.HandoffRequested); ok && r.GetRequestId() == requestID {
			requested = rec
			require.Equal(t, "goodbye", r.GetAfterMark())
			require.Equal(t, handoff.MarkPlayed, r.GetMarkWait())
			return true
		}
		return false
	})
	require.Equal(t, mark.Partition, requested.Partition)
	require.Greater(t, requested.Offset, mark.Offset, "the handoff was asked for before its mark played")
	require.False(t, requested.Timestamp.Before(mark.Timestamp))

	until(t, s.consume("baton.handoffs"), func(_ *kgo.Record, ev events.Event) bool {
		c, ok := ev.Data.(*batonv1.HandoffCommand)
		return ok && c.GetRequestId() == requestID
	})
}
