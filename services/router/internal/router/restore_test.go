package router

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
)

// TestRestartKnowsLiveCalls: a call starts under one router instance,
// which stops; the next instance is asked for a handoff of that call.
// Before, it had never seen the call, logged "handoff requested for an
// unknown call; skipped" and decided nothing. Now it rebuilds the state of
// the partitions it is assigned from the log first, and decides.
func TestRestartKnowsLiveCalls(t *testing.T) {
	h := newHarness(t)
	stopA := h.start("router-a")
	started := h.callStarted("call-1")
	started.Time = time.Now() // the record timestamp: inside the restore's lookback
	h.publish(started)
	committed := h.consumer(kgo.ReadCommitted())
	first := next(t, committed, 1)
	_, cmd := decodeCommand(t, first[0])
	require.Equal(t, "call-1", cmd.GetCallId(), "the rule handed the call off at its start")
	stopA()

	h.start("router-b")
	req, err := events.New("baton/api", "call-1", &batonv1.HandoffRequested{RequestId: "r2", Destination: "support"}, time.Now())
	require.NoError(t, err)
	h.publish(req)

	recs := next(t, committed, 1)
	require.Equal(t, "call-1", string(recs[0].Key))
	ev, err := events.Decode(recs[0])
	require.NoError(t, err)
	require.Contains(t, []string{events.TypeHandoffCommand, events.TypeHandoffRefused}, ev.Type,
		"the new instance decided on a call it learnt from the log")
}

// TestScaleOutKeepsCallState: one router holds 20 live calls over 6
// partitions; two more join (the partitions are spread over three
// instances), then the agent asks for a handoff on every call. Every
// request is decided, whichever instance now owns its call.
func TestScaleOutKeepsCallState(t *testing.T) {
	kcfg := kafka.DefaultConfig()
	kcfg.Partitions = 6
	h := newHarnessOn(t, kafkatest.NewCluster(t, kcfg.Partitions, kcfg.Topics.All()...))
	h.start("router-1")
	const calls = 20
	committed := h.consumer(kgo.ReadCommitted())
	for i := range calls {
		ev := h.callStarted(fmt.Sprintf("call-%d", i))
		ev.Time = time.Now()
		h.publish(ev)
	}
	first := next(t, committed, calls) // the rule hands each call off at its start
	require.Len(t, first, calls)

	h.start("router-2")
	h.start("router-3")
	time.Sleep(2 * time.Second) // let the group rebalance over three members
	for i := range calls {
		req, err := events.New("baton/api", fmt.Sprintf("call-%d", i),
			&batonv1.HandoffRequested{RequestId: fmt.Sprintf("r-%d", i), Destination: "support"}, time.Now())
		require.NoError(t, err)
		h.publish(req)
	}
	decided := map[string]bool{}
	for _, rec := range next(t, committed, calls) {
		decided[string(rec.Key)] = true
	}
	require.Len(t, decided, calls, "a handoff request for a call that moved was not decided")
}

// TestStaticMemberRejoins: a router with kafka.instance_id joins as a
// static member (the group lists its instance id) and, restarted with the
// same id, decides for the calls it held.
func TestStaticMemberRejoins(t *testing.T) {
	h := newHarness(t)
	h.kcfg.InstanceID = "router-pod-0"
	opts := Options{Kafka: h.kcfg, Group: "baton-router-test", TransactionalID: "router-static"}
	stop := h.startWith(opts)
	ev := h.callStarted("call-s")
	ev.Time = time.Now()
	h.publish(ev)
	committed := h.consumer(kgo.ReadCommitted())
	next(t, committed, 1)
	groups, err := kadm.NewClient(h.prod).DescribeGroups(t.Context(), "baton-router-test")
	require.NoError(t, err)
	g := groups["baton-router-test"]
	require.NoError(t, g.Err)
	require.Len(t, g.Members, 1)
	require.NotNil(t, g.Members[0].InstanceID)
	require.Equal(t, "router-pod-0", *g.Members[0].InstanceID)
	stop()

	start := time.Now()
	h.startWith(opts)
	req, err := events.New("baton/api", "call-s", &batonv1.HandoffRequested{RequestId: "r-s", Destination: "support"}, time.Now())
	require.NoError(t, err)
	h.publish(req)
	recs := next(t, committed, 1)
	require.Equal(t, "call-s", string(recs[0].Key))
	t.Logf("restarted static member decided %v after its start", time.Since(start))
}
