package stack

import (
	"slices"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/cmd/baton/internal/checker"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// analyticsTopics are the topics analytics stores in ClickHouse.
var analyticsTopics = []string{"baton.calls", "baton.handoffs", "baton.transfers"}

// logStoreDiff logs the events consumers were given on analyticsTopics
// that ClickHouse does not hold, and the event ids ClickHouse holds that
// no consumer was given, at most 20 of each.
func logStoreDiff(t *testing.T, conn clickhouse.Conn, recs []checker.Record) {
	t.Helper()
	rows, err := conn.Query(t.Context(), "SELECT DISTINCT event_id FROM events")
	if err != nil {
		t.Logf("list ClickHouse's event ids: %v", err)
		return
	}
	defer func() { _ = rows.Close() }()
	stored := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Logf("scan an event id: %v", err)
			return
		}
		stored[id] = true
	}
	given := map[string]bool{}
	missing := 0
	for _, r := range recs {
		if r.Withheld || r.Err != nil || !slices.Contains(analyticsTopics, r.Topic) {
			continue
		}
		given[r.Event.ID] = true
		if !stored[r.Event.ID] {
			if missing++; missing <= 20 {
				t.Logf("not in ClickHouse: %s/%d@%d %s %s key %q producer %d transactional %v",
					r.Topic, r.Partition, r.Offset, r.Event.Type, r.Event.ID, r.Key, r.ProducerID, r.Transactional)
			}
		}
	}
	extra := 0
	for id := range stored {
		if !given[id] {
			if extra++; extra <= 20 {
				t.Logf("in ClickHouse but given to no consumer: %s", id)
			}
		}
	}
	t.Logf("ClickHouse lacks %d given events and holds %d ids no consumer was given", missing, extra)
}

// checkKafka reads every baton.* topic and runs the checker over it.
func checkKafka(t *testing.T, s *Stack, opts checker.Options) ([]checker.Record, checker.Report) {
	t.Helper()
	recs, err := checker.Read(t.Context(), s.BrokerAddr)
	require.NoError(t, err)
	rep := checker.Check(recs, opts)
	require.NoError(t, rep.Write(testWriter{t}))
	return recs, rep
}

// storedEvents counts the distinct events consumers get on the topics
// analytics stores: the events ClickHouse must hold.
func storedEvents(rep checker.Report) uint64 {
	var n uint64
	for _, st := range rep.Topics {
		for _, name := range analyticsTopics {
			if st.Topic == name {
				n += uint64(st.Records - st.Copies)
			}
		}
	}
	return n
}

// requireClickHouseHolds waits until ClickHouse's events table holds want
// rows (FINAL), checks that none is there twice, and returns the count.
// When the counts differ it logs which of recs' events ClickHouse lacks
// (and which it holds that consumers were not given), so a mismatch names
// its records.
func requireClickHouseHolds(t *testing.T, s *Stack, recs []checker.Record, want uint64) uint64 {
	t.Helper()
	conn, err := s.Open()
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
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
	if got != want {
		logStoreDiff(t, conn, recs)
	}
	require.Equal(t, want, got, "events in ClickHouse (FINAL) vs committed in Kafka")
	require.Equal(t, got, distinct, "no event is counted twice")
	return got
}

// TestScaleOutSurvivesKills runs two routers, two transfer services and two
// analytics writers in their consumer groups, places SIPp calls, SIGKILLs
// one instance of each mid-run, and checks the delivery guarantees with
// the checker: every call got its handoff command exactly once per
// attempt, no command was executed twice, nothing was lost or reordered,
// and every event is in ClickHouse exactly once.
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

	// A call whose REFER was lost with the killed transfer waits for
	// SIPp's REFER timeout; whether its CallEnded is in yet is not what
	// this test is about (TestReliabilityCrashConsistency waits for it).
	recs, rep := checkKafka(t, s, checker.Options{Calls: res.Answered, RequireHandoff: true})
	require.True(t, rep.OK(), "checker findings:\n%v", rep.Problems())
	require.Equal(t, calls, rep.Started, "every SIPp call reached Kafka once")
	require.Equal(t, calls, rep.FirstCommands, "every call got a first handoff command")

	// The SBC got no more REFERs for a call than the router decided
	// commands for it.
	commandsPerCall := map[string]int{}
	for _, r := range recs {
		if m, ok := r.Event.Data.(*batonv1.HandoffCommand); ok && !r.Withheld {
			commandsPerCall[m.GetCallId()]++
		}
	}
	refersPerCall := map[string]int{}
	for _, r := range res.Refers {
		refersPerCall[r.CallID]++
	}
	for call, n := range refersPerCall {
		require.LessOrEqual(t, n, commandsPerCall[call], "call %s: the SBC got %d REFERs for %d commands", call, n, commandsPerCall[call])
	}

	// ClickHouse holds every event exactly once, despite the killed writer.
	requireClickHouseHolds(t, s, recs, storedEvents(rep))
}
