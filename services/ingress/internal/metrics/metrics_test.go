package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/ingress/internal/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestHookCountsPublishedCalls produces facts through a client carrying
// the hook, as ingress does: calls, active calls and the publish latency
// move once Kafka acknowledged them.
func TestHookCountsPublishedCalls(t *testing.T) {
	brokers := kafkatest.NewCluster(t, 1, "baton.calls", "other")
	reg := prometheus.NewRegistry()
	hook := NewHook(reg, "baton.calls")
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.WithHooks(hook))
	require.NoError(t, err)
	defer cl.Close()
	produce := func(topic, callID string, msg proto.Message) {
		t.Helper()
		ev, err := events.New("baton/ingress", callID, msg, time.Now())
		require.NoError(t, err)
		rec, err := events.Encode(topic, ev)
		require.NoError(t, err)
		require.NoError(t, cl.ProduceSync(t.Context(), rec).FirstErr())
	}
	produce("baton.calls", "c1", &batonv1.CallStarted{})
	produce("baton.calls", "c2", &batonv1.CallStarted{})
	produce("baton.calls", "c1", &batonv1.CallEnded{})
	produce("other", "c3", &batonv1.CallStarted{})

	require.Equal(t, 2.0, testutil.ToFloat64(hook.calls))
	require.Equal(t, 1.0, testutil.ToFloat64(hook.ended))
	require.Equal(t, 1.0, testutil.ToFloat64(hook.active))
	require.Equal(t, 2, testutil.CollectAndCount(hook.latency), "one series per type")
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`# HELP baton_ingress_calls_total Calls answered and published (CallStarted acknowledged by Kafka); new calls per second is its rate.
# TYPE baton_ingress_calls_total counter
baton_ingress_calls_total 2
`), "baton_ingress_calls_total"))
}

// TestRegisterCountersReadsTheServer exposes a server's refusal counters.
func TestRegisterCountersReadsTheServer(t *testing.T) {
	var st server.Stats
	reg := prometheus.NewRegistry()
	conns := map[string]uint64{"connections_refused_acl": 11, "connections_refused_full": 12, "connections_refused_source": 13,
		"connections_timed_out": 14, "connections_open": 15, "rtp_idle_dropped": 16, "rtp_sockets_idle": 17}
	RegisterCounters(reg, func() map[string]uint64 {
		m := st.Snapshot()
		for k, v := range conns {
			m[k] = v
		}
		return m
	})
	st.UnackedSource.Add(6)
	st.NextHopToSource.Add(8)
	st.ACLDropped.Add(3)
	st.Invalid.Add(1)
	st.OverloadRate.Add(2)
	st.TrunkOverloadRate.Add(4)
	st.Dropped.Add(1)
	st.StrayResponses.Add(1)
	st.RefusedNumbers.Add(5)
	st.ForeignRTP.Add(7)
	st.AgentStreams.Add(21)
	st.AgentFailures.Add(22)
	st.AgentLateFrames.Add(23)
	st.AgentDroppedFrames.Add(24)
	st.AgentBadMessages.Add(25)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`# HELP baton_ingress_agent_bad_messages_total Messages from agents ignored: malformed JSON, unknown events, payloads not base64 (added when a stream ends).
# TYPE baton_ingress_agent_bad_messages_total counter
baton_ingress_agent_bad_messages_total 25
# HELP baton_ingress_agent_dropped_frames_total 20 ms frames of agent audio dropped beyond the playout bound (added when a stream ends).
# TYPE baton_ingress_agent_dropped_frames_total counter
baton_ingress_agent_dropped_frames_total 24
# HELP baton_ingress_agent_failures_total Agent streams that could not be opened or failed mid-call; on_agent_failure ran for each.
# TYPE baton_ingress_agent_failures_total counter
baton_ingress_agent_failures_total 22
# HELP baton_ingress_agent_late_frames_total 20 ms frames of agent audio sent more than a frame late (added when a stream ends).
# TYPE baton_ingress_agent_late_frames_total counter
baton_ingress_agent_late_frames_total 23
# HELP baton_ingress_agent_streams_total Agent streams opened (AgentConnected).
# TYPE baton_ingress_agent_streams_total counter
baton_ingress_agent_streams_total 21
# HELP baton_ingress_dropped_total SIP messages discarded without an answer (garbage, malformed, stray).
# TYPE baton_ingress_dropped_total counter
baton_ingress_dropped_total 2
# HELP baton_ingress_next_hop_to_source_total Calls whose Contact or first Record-Route named a destination outside their trunk (or a host name): in-dialog requests go to the INVITE's source.
# TYPE baton_ingress_next_hop_to_source_total counter
baton_ingress_next_hop_to_source_total 8
# HELP baton_ingress_numbers_refused_total Caller or callee number sources refused for control characters or invalid UTF-8 (the number is then empty or read from the next source).
# TYPE baton_ingress_numbers_refused_total counter
baton_ingress_numbers_refused_total 5
# HELP baton_ingress_rtp_foreign_total RTP datagrams dropped for coming from a source the call is not latched to (counted when the call ends).
# TYPE baton_ingress_rtp_foreign_total counter
baton_ingress_rtp_foreign_total 7
# HELP baton_ingress_rtp_idle_dropped_total RTP datagrams that reached a socket kept for reuse (rtp.reuse) between calls: heard by no call.
# TYPE baton_ingress_rtp_idle_dropped_total counter
baton_ingress_rtp_idle_dropped_total 16
# HELP baton_ingress_rtp_sockets_idle RTP sockets kept bound between calls for reuse (rtp.reuse; at most limits.max_calls).
# TYPE baton_ingress_rtp_sockets_idle gauge
baton_ingress_rtp_sockets_idle 17
# HELP baton_ingress_rejected_total SIP requests refused, by reason.
# TYPE baton_ingress_rejected_total counter
baton_ingress_rejected_total{reason="acl"} 3
baton_ingress_rejected_total{reason="draining"} 0
baton_ingress_rejected_total{reason="invalid"} 1
baton_ingress_rejected_total{reason="overload_calls"} 0
baton_ingress_rejected_total{reason="overload_rate"} 2
baton_ingress_rejected_total{reason="trunk_overload_calls"} 0
baton_ingress_rejected_total{reason="trunk_overload_rate"} 4
baton_ingress_rejected_total{reason="unacked_source"} 6
# HELP baton_ingress_sip_connections_open TCP and TLS connections open now.
# TYPE baton_ingress_sip_connections_open gauge
baton_ingress_sip_connections_open 15
# HELP baton_ingress_sip_connections_refused_total TCP and TLS connections closed at accept: source not in a trunk (acl), limits.max_connections (full), limits.max_connections_per_source (per_source).
# TYPE baton_ingress_sip_connections_refused_total counter
baton_ingress_sip_connections_refused_total{reason="acl"} 11
baton_ingress_sip_connections_refused_total{reason="full"} 12
baton_ingress_sip_connections_refused_total{reason="per_source"} 13
# HELP baton_ingress_sip_connections_timed_out_total TCP and TLS connections closed for silence (connection_first_read_timeout or connection_idle_timeout).
# TYPE baton_ingress_sip_connections_timed_out_total counter
baton_ingress_sip_connections_timed_out_total 14
`)))
}
