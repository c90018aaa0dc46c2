package stack

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// readCommitted returns every committed event on topics, up to the last
// stable offsets at the time of the call.
func readCommitted(t *testing.T, brokers string, topics ...string) []events.Event {
	t.Helper()
	ctx := t.Context()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	require.NoError(t, err)
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topics...)
	require.NoError(t, err)
	offsets := map[string]map[int32]kgo.Offset{}
	remaining := map[string]map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			if offsets[o.Topic] == nil {
				offsets[o.Topic], remaining[o.Topic] = map[int32]kgo.Offset{}, map[int32]int64{}
			}
			offsets[o.Topic][o.Partition] = kgo.NewOffset().AtStart()
			remaining[o.Topic][o.Partition] = o.Offset
		}
	})
	reader, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumePartitions(offsets),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords(), kgo.FetchMaxWait(200*time.Millisecond))
	require.NoError(t, err)
	defer reader.Close()
	var out []events.Event
	left := 0
	for _, ps := range remaining {
		left += len(ps)
	}
	for left > 0 {
		fetches := reader.PollFetches(ctx)
		require.NoError(t, ctx.Err())
		fetches.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := remaining[r.Topic][r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if !r.Attrs.IsControl() {
				ev, err := events.Decode(r)
				require.NoError(t, err, "%s/%d@%d", r.Topic, r.Partition, r.Offset)
				out = append(out, ev)
			}
			if r.Offset == end-1 {
				delete(remaining[r.Topic], r.Partition)
				left--
			}
		})
	}
	return out
}

// TestScaleOutSurvivesKills runs two routers, two transfer services and two
// analytics writers in their consumer groups, places SIPp calls, SIGKILLs
// one instance of each mid-run, and checks the delivery guarantees: every
// call got its handoff command exactly once per attempt, no command was
// executed twice, and every event is in ClickHouse exactly once.
func TestScaleOutSurvivesKills(t *testing.T) {
	s := startStackWith(t, map[string]int{"router": 2, "transfer": 2, "analytics": 2})
	const calls, rate = 40, 8
	killed := make(chan error, 1)
	go func() {
		select {
		case <-time.After(2 * time.Second): // a quarter into the calls
		case <-t.Context().Done():
			killed <- t.Context().Err()
			return
		}
		var err error
		for _, name := range []string{"router-1", "transfer-1", "analytics-1"} {
			if kerr := s.Kill(name); kerr != nil && err == nil {
				err = kerr
			}
		}
		killed <- err
	}()
	res, err := s.PlaceCalls(t.Context(), "sbc_refer", calls, rate)
	require.NoError(t, err)
	require.NoError(t, <-killed)
	t.Logf("sipp exit %d, %d REFERs, failures %v", res.ExitCode, len(res.Refers), res.Failures)

	topics := []string{"baton.calls", "baton.handoffs", "baton.transfers"}
	evs := readCommitted(t, s.BrokerAddr, topics...)
	started := map[string]bool{}
	type key struct {
		call    string
		attempt uint32
	}
	commands := map[key][]string{}
	commandIDs := map[string]int{}
	accepted := map[string]int{}
	ids := map[string]bool{}
	for _, ev := range evs {
		require.False(t, ids[ev.ID], "event id %s appears twice in Kafka", ev.ID)
		ids[ev.ID] = true
		switch m := ev.Data.(type) {
		case *batonv1.CallStarted:
			started[m.GetDialog().GetCallId()] = true
		case *batonv1.HandoffCommand:
			k := key{m.GetCallId(), m.GetAttempt()}
			commands[k] = append(commands[k], m.GetCommandId())
			commandIDs[m.GetCommandId()]++
		case *batonv1.TransferOutcome:
			if m.GetStatus() == batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED {
				accepted[m.GetCommandId()]++
			}
		}
	}
	require.Len(t, started, calls, "every SIPp call reached Kafka once")
	for call := range started {
		require.Len(t, commands[key{call, 1}], 1, "call %s: exactly one first handoff command", call)
	}
	for k, ids := range commands {
		require.Len(t, ids, 1, "call %s attempt %d decided more than once: %v", k.call, k.attempt, ids)
	}
	for id, n := range commandIDs {
		require.Equal(t, 1, n, "command %s published %d times", id, n)
	}
	for id, n := range accepted {
		require.Equal(t, 1, n, "command %s was executed (REFER accepted) %d times", id, n)
	}
	refersPerCall := map[string]int{}
	for _, r := range res.Refers {
		refersPerCall[r.CallID]++
	}
	for call, n := range refersPerCall {
		cmds := 0
		for k, ids := range commands {
			if k.call == call {
				cmds += len(ids)
			}
		}
		require.LessOrEqual(t, n, cmds, "call %s: the SBC got %d REFERs for %d commands", call, n, cmds)
	}

	// ClickHouse holds every event exactly once, despite the killed writer.
	conn, err := s.Open()
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	want := uint64(len(ids))
	var got, distinct uint64
	deadline := time.Now().Add(60 * time.Second)
	for {
		row := conn.QueryRow(t.Context(), "SELECT count(), uniqExact(event_id) FROM events FINAL")
		require.NoError(t, row.Scan(&got, &distinct))
		if got >= want || time.Now().After(deadline) {
			break
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	require.Equal(t, want, got, "events in ClickHouse (FINAL) vs committed in Kafka")
	require.Equal(t, got, distinct, "no event is counted twice")
}
