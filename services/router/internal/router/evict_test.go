package router

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// clock is a test clock the test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// eventAt builds an event of callID at a time.
func eventAt(t *testing.T, callID string, msg proto.Message, at time.Time) events.Event {
	t.Helper()
	ev, err := events.New("baton/test", callID, msg, at)
	require.NoError(t, err)
	return ev
}

// callsConsumer reads the calls topic from the start, read-committed.
func (h *harness) callsConsumer() *kgo.Client {
	h.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kcfg.Brokers...), kgo.ConsumeTopics(h.kcfg.Topics.Calls),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	require.NoError(h.t, err)
	h.t.Cleanup(cl.Close)
	return cl
}

// TestIdleCallIsEvictedByItsOwner: with max_call_duration 4h and a clock
// moved 5h on, the owner publishes a CallEvicted for the call whose last
// event is 5h old, in its transaction on the calls topic; it folds it
// back and forgets the call, so a later handoff request for it is
// decided by nothing (unknown call). A call with an event 2h before the
// sweep is kept, and its request is decided.
func TestIdleCallIsEvictedByItsOwner(t *testing.T) {
	h := newHarness(t)
	t0 := time.Now()
	clk := &clock{now: t0}
	fold := handoff.New(h.table, h.logger)
	metrics := NewMetrics(prometheus.NewRegistry())
	rt, err := New(Options{Kafka: h.kcfg, Group: "baton-router-evict", TransactionalID: "router-evict", Metrics: metrics,
		MaxCallDuration: 4 * time.Hour, SweepInterval: 20 * time.Millisecond, Now: clk.Now}, fold, h.logger)
	require.NoError(t, err)
	h.run(rt)
	handoffs := h.consumer(kgo.ReadCommitted())

	h.publish(eventAt(t, "idle-1", &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "sip-idle-1"}}, t0))
	h.publish(eventAt(t, "busy-1", &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "sip-busy-1"}}, t0))
	next(t, handoffs, 2) // the rule hands both off at their start
	// busy-1 has an event 3h in: 2h before the sweep.
	h.publish(eventAt(t, "busy-1", &batonv1.AgentMarkPlayed{CallId: "busy-1", Name: "m"}, t0.Add(3*time.Hour)))
	require.Eventually(t, func() bool { return fold.MarkState("busy-1", "m").Played }, waitTimeout, 5*time.Millisecond)
	require.Equal(t, 2, fold.Held())

	// The clock moves on past each sweep's interval, as a real one does,
	// so a sweep whose transaction failed (a loaded machine) is followed
	// by another; a frozen clock allows exactly one.
	clk.set(t0.Add(5 * time.Hour))
	require.Eventually(t, func() bool {
		_, found, _ := fold.View("idle-1")
		clk.set(clk.Now().Add(25 * time.Millisecond))
		return !found
	}, waitTimeout, 5*time.Millisecond, "idle-1 was not evicted")
	_, found, _ := fold.View("busy-1")
	require.True(t, found, "a call with a recent event was evicted")
	require.InDelta(t, 1, testutil.ToFloat64(metrics.Evicted), 0)

	// The eviction is on the log, as a CallEvicted of idle-1 only.
	var evicted []events.Event
	calls := h.callsConsumer()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		for _, rec := range calls.PollFetches(ctx).Records() {
			ev, err := events.Decode(rec)
			require.NoError(t, err)
			if ev.Type == events.TypeCallEvicted {
				evicted = append(evicted, ev)
			}
		}
	}
	require.Len(t, evicted, 1)
	require.Equal(t, "idle-1", evicted[0].Subject)
	msg := evicted[0].Data.(*batonv1.CallEvicted)
	require.Equal(t, handoff.EvictedIdle, msg.GetReason())
	require.Equal(t, "router-evict", msg.GetEvictedBy())
	require.False(t, evicted[0].Time.Before(t0.Add(5*time.Hour)), "stamped with the eviction clock: %v", evicted[0].Time)
	require.Equal(t, evicted[0].Time.Sub(t0).Milliseconds(), msg.GetIdleMs(), "idle since its last event, at the sweep's time")

	// A handoff request for the evicted call decides nothing; the next
	// one, for busy-1, is decided (one partition: it comes after).
	h.publish(eventAt(t, "idle-1", &batonv1.HandoffRequested{RequestId: "late", Destination: "support"}, t0.Add(5*time.Hour)))
	h.publish(eventAt(t, "busy-1", &batonv1.HandoffRequested{RequestId: "marker", Destination: "support"}, t0.Add(5*time.Hour)))
	recs := next(t, handoffs, 1)
	require.Equal(t, "busy-1", string(recs[0].Key), "the evicted call's request was decided")
}

// TestRestoredStateKeepsThePerCallCaps: a partition restored from the log
// by a new instance holds no more than the caps allow, whatever the log
// holds: the state keys (max_state_keys_per_call), the marks played (the
// last 32), and the calls (max_calls: the excess not held, counted).
func TestRestoredStateKeepsThePerCallCaps(t *testing.T) {
	h := newHarness(t)
	table := *h.table
	table.MaxStateKeys = 3
	table.Rules = nil // no command at the start: only facts in the log
	now := time.Now()
	for i := range 3 {
		id := fmt.Sprintf("cap-%d", i)
		h.publish(eventAt(t, id, &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "sip-" + id}}, now))
	}
	for i := range 10 {
		h.publish(eventAt(t, "cap-0", &batonv1.CallStateChanged{CallId: "cap-0", Set: map[string]string{fmt.Sprintf("k%d", i): "v"}}, now))
	}
	for i := range handoff.MaxMarks + 10 {
		h.publish(eventAt(t, "cap-0", &batonv1.AgentMarkPlayed{CallId: "cap-0", Name: fmt.Sprintf("m%d", i)}, now))
	}
	// The first instance folds all of it and commits its offsets.
	first := handoff.New(&table, h.logger)
	rt, err := New(Options{Kafka: h.kcfg, Group: "baton-router-caps", TransactionalID: "router-caps-a"}, first, h.logger)
	require.NoError(t, err)
	stop := h.run(rt)
	require.Eventually(t, func() bool {
		return first.MarkState("cap-0", fmt.Sprintf("m%d", handoff.MaxMarks+9)).Played
	}, waitTimeout, 5*time.Millisecond)
	stop()

	// The next instance, bounded to two calls, restores the partition.
	restored := handoff.New(&table, h.logger).WithMaxCalls(2)
	rt, err = New(Options{Kafka: h.kcfg, Group: "baton-router-caps", TransactionalID: "router-caps-b"}, restored, h.logger)
	require.NoError(t, err)
	h.run(rt)
	// A restore runs before the next batch is handled: give it one.
	h.publish(eventAt(t, "cap-1", &batonv1.AgentMarkPlayed{CallId: "cap-1", Name: "after"}, now))
	require.Eventually(t, func() bool { return restored.Held() == 2 }, waitTimeout, 5*time.Millisecond)
	require.Equal(t, int64(1), restored.Dropped(), "the third call is not held")
	v, found, _ := restored.View("cap-0")
	require.True(t, found)
	require.Len(t, v.State, 3, "max_state_keys_per_call holds in the restored state")
	require.Equal(t, map[string]string{"k0": "v", "k1": "v", "k2": "v"}, v.State, "the same writes as the first fold applied")
	require.Len(t, v.MarksPlayed, handoff.MaxMarks)
	require.Equal(t, "m10", v.MarksPlayed[0])
}
