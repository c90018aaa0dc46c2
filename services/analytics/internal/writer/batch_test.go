package writer

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// committedSum sums group's committed offsets (0 when it has none).
func (e *env) committedSum(ctx context.Context, group string) int64 {
	e.t.Helper()
	offs, err := kadm.NewClient(e.prod).FetchOffsets(ctx, group)
	if err != nil {
		return 0
	}
	var n int64
	offs.Each(func(o kadm.OffsetResponse) { n += max(o.At, 0) })
	return n
}

// Batches are cut at batch.max_rows records, and a short batch is written
// once batch.max_wait passed since its first record. Each batch is
// committed after its insert, exactly its records: the records of a batch
// that is not inserted yet are never committed.
func TestBatchBySizeAndTime(t *testing.T) {
	e := newEnv(t, false)
	e.cfg.Batch.MaxRows = 4
	e.cfg.Batch.MaxWait = 300 * time.Millisecond
	// Five records of one topic and partition: one batch of four (size),
	// then one of one (time).
	var calls []*kgo.Record
	for i := range 3 {
		for _, r := range callEvents(t, e.cfg.Kafka.Topics, fmt.Sprintf("call-b%d", i)) {
			if r.Topic == e.cfg.Kafka.Topics.Calls {
				calls = append(calls, r)
			}
		}
	}
	calls = calls[:5]
	e.produce(calls[:2]...)
	e.produce(calls[2:]...)

	cl := e.consumer()
	var (
		mu      sync.Mutex
		batches [][]string
	)
	insert := func(ctx context.Context, r *rows) error {
		ids := make([]string, 0, r.len())
		for _, ev := range r.events {
			ids = append(ids, ev.EventID)
		}
		mu.Lock()
		defer mu.Unlock()
		// Nothing of this batch is committed before it is inserted.
		prior := 0
		for _, b := range batches {
			prior += len(b)
		}
		if c := e.committedSum(ctx, e.cfg.Group); c != int64(prior) {
			return fmt.Errorf("batch %d: %d offsets committed before its insert, want %d", len(batches)+1, c, prior)
		}
		batches = append(batches, ids)
		return nil
	}
	w := newWriter(cl, insert, Options{Config: e.cfg}, e.logger())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	require.Eventually(t, func() bool { return e.committedSum(t.Context(), e.cfg.Group) == 5 }, waitTimeout, pollEvery)
	cancel()
	require.NoError(t, <-done)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, batches, 2, "one batch cut by size, one by time")
	require.Equal(t, []string{"call-b0-started", "call-b0-ended", "call-b1-started", "call-b1-ended"}, batches[0],
		"the first batch is max_rows records in partition order")
	require.Equal(t, []string{"call-b2-started"}, batches[1])
	require.NotContains(t, e.logs.String(), "retrying")
}

// While ClickHouse refuses inserts, no further record is polled: the same
// batch is retried until it succeeds, so a partition's rows are neither
// lost nor reordered, and later records form the next batch.
func TestRetryKeepsBatchAndOrder(t *testing.T) {
	e := newEnv(t, false)
	e.cfg.Batch.MaxRows = 1000
	e.cfg.Batch.MaxWait = 50 * time.Millisecond
	first := callEvents(t, e.cfg.Kafka.Topics, "call-o1")
	e.produce(first...)

	cl := e.consumer()
	var (
		mu       sync.Mutex
		attempts [][]string
	)
	produced := make(chan struct{})
	var once sync.Once
	insert := func(ctx context.Context, r *rows) error {
		ids := make([]string, 0, r.len())
		for _, ev := range r.events {
			ids = append(ids, ev.EventID)
		}
		mu.Lock()
		attempts = append(attempts, ids)
		n := len(attempts)
		mu.Unlock()
		if n == 1 {
			// More records arrive while the first batch is failing.
			if err := e.prod.ProduceSync(ctx, callEvents(t, e.cfg.Kafka.Topics, "call-o2")...).FirstErr(); err != nil {
				return err
			}
			once.Do(func() { close(produced) })
		}
		if n <= 3 {
			return fmt.Errorf("attempt %d: clickhouse down", n)
		}
		return nil
	}
	w := newWriter(cl, insert, Options{Config: e.cfg}, e.logger())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	<-produced
	require.Eventually(t, func() bool { return e.committedSum(t.Context(), e.cfg.Group) == 8 }, waitTimeout, pollEvery)
	cancel()
	require.NoError(t, <-done)

	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, len(attempts), 5)
	for i := 1; i <= 3; i++ {
		require.Equal(t, attempts[0], attempts[i], "attempt %d retried other records", i+1)
	}
	var later []string
	for _, a := range attempts[4:] {
		later = append(later, a...)
	}
	require.ElementsMatch(t, idsOf(t, callEvents(t, e.cfg.Kafka.Topics, "call-o2")), later,
		"records that arrived during the retries come after, once each")
}

func idsOf(t *testing.T, recs []*kgo.Record) []string {
	t.Helper()
	ids := make([]string, len(recs))
	for i, r := range recs {
		ev, err := events.Decode(r)
		require.NoError(t, err)
		ids[i] = ev.ID
	}
	return ids
}

// AgentMetric events become agent_metrics rows, once each on replay.
func TestAgentMetrics(t *testing.T) {
	e := newEnv(t, true)
	mk := func(id string, msg proto.Message) *kgo.Record {
		typ, err := events.TypeOf(msg)
		require.NoError(t, err)
		rec, err := events.Encode(e.cfg.Kafka.Topics.Calls, events.Event{
			ID: id, Type: typ, Source: "baton/router", Subject: "call-m", Time: eventTime, Data: msg,
		})
		require.NoError(t, err)
		return rec
	}
	recs := []*kgo.Record{
		mk("m1", &batonv1.AgentMetric{CallId: "call-m", Name: "sentiment", Value: -0.25,
			Tags: map[string]string{"model": "v2", "lang": "en"}, RequestId: "r1"}),
		mk("m2", &batonv1.AgentMetric{CallId: "call-m", Name: "turns", Value: 7}),
	}
	e.produce(recs...)
	e.produce(recs...) // replayed
	w := e.run(e.cfg.Group)
	conn := server.Conn(t, e.cfg.ClickHouse)
	e.waitCommitted(e.cfg.Group)
	require.Zero(t, deadLettered(w))

	require.Equal(t, uint64(2), count(t, conn, "agent_metrics", "call_id = ?", "call-m"))
	var (
		value      float64
		keys, vals []string
		requestID  string
		timeMS     uint64
	)
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT value, tags.key, tags.value, request_id, time_ms
		FROM agent_metrics FINAL WHERE name = 'sentiment'`).Scan(&value, &keys, &vals, &requestID, &timeMS))
	require.InDelta(t, -0.25, value, 0)
	require.Equal(t, []string{"lang", "model"}, keys)
	require.Equal(t, []string{"en", "v2"}, vals)
	require.Equal(t, "r1", requestID)
	require.Equal(t, uint64(eventTime.UnixMilli()), timeMS)
}

// AgentConnected and AgentDisconnected become agent_connects and
// agent_streams rows through the real writer on 18.16, once each although
// every record was produced twice (a producer's retry: the same ce_id);
// agent_stream_facts joins a stream's end to its connect.
func TestAgentStreams(t *testing.T) {
	e := newEnv(t, true)
	mk := func(id string, at time.Time, msg proto.Message) *kgo.Record {
		typ, err := events.TypeOf(msg)
		require.NoError(t, err)
		rec, err := events.Encode(e.cfg.Kafka.Topics.Calls, events.Event{
			ID: id, Type: typ, Source: "baton/ingress", Subject: "call-a", Time: at, Data: msg,
		})
		require.NoError(t, err)
		return rec
	}
	ended := eventTime.Add(61*time.Second + 250*time.Millisecond)
	recs := []*kgo.Record{
		mk("a-conn", eventTime, &batonv1.AgentConnected{CallId: "call-a", StreamSid: "MZa", Url: "wss://bot.example/a",
			Format: "audio/l16", ConnectMs: 87, Source: "number"}),
		mk("a-disc", ended, &batonv1.AgentDisconnected{CallId: "call-a", StreamSid: "MZa", Reason: "write_timeout",
			Detail: "agent stopped reading", Action: "play_then_hangup", Stats: &batonv1.AgentStreamStats{
				FramesOut: 3061, FramesIn: 1500, FramesPlayed: 2990, Late: 4, Dropped: 12, Cleared: 25,
				MaxQueueMs: 4020, Marks: 7, BadMessages: 1,
			}}),
		mk("a-fail", ended, &batonv1.AgentDisconnected{CallId: "call-a", Reason: "connect_failed", Detail: "tls: bad certificate", Action: "hangup"}),
	}
	e.produce(recs...)
	e.produce(recs...) // replayed
	w := e.run(e.cfg.Group)
	conn := server.Conn(t, e.cfg.ClickHouse)
	e.waitCommitted(e.cfg.Group)
	require.Zero(t, deadLettered(w))
	// The counters move after the commit: wait for them, not for it.
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(w.metrics.rowsInserted.WithLabelValues("agent_streams")) == 4
	}, 10*time.Second, 10*time.Millisecond, "both copies of each disconnect were inserted")

	require.Equal(t, uint64(2), count(t, conn, "agent_streams", "call_id = ?", "call-a"), "one row per event id")
	require.Equal(t, uint64(1), count(t, conn, "agent_connects", "call_id = ?", "call-a"))

	type facts struct {
		EndedAt                                          time.Time
		EndedMS                                          uint64
		Reason, Action, Detail                           string
		FramesOut, FramesIn, FramesPlayed, Late, Dropped uint64
		Cleared, MaxQueueMS, Marks, BadMessages          uint64
		ConnectedMS                                      uint64
		URL, Format                                      string
		ConnectMS                                        uint64
		Source                                           string
		DurationMS                                       uint64
	}
	read := func(sid string) facts {
		t.Helper()
		var f facts
		require.NoError(t, conn.QueryRow(t.Context(), `SELECT ended_at, ended_ms, reason, action, detail,
			frames_out, frames_in, frames_played, late, dropped, cleared, max_queue_ms, marks, bad_messages,
			connected_ms, url, format, connect_ms, source, duration_ms
			FROM agent_stream_facts WHERE call_id = ? AND stream_sid = ?`, "call-a", sid).Scan(
			&f.EndedAt, &f.EndedMS, &f.Reason, &f.Action, &f.Detail,
			&f.FramesOut, &f.FramesIn, &f.FramesPlayed, &f.Late, &f.Dropped, &f.Cleared, &f.MaxQueueMS, &f.Marks, &f.BadMessages,
			&f.ConnectedMS, &f.URL, &f.Format, &f.ConnectMS, &f.Source, &f.DurationMS))
		f.EndedAt = f.EndedAt.UTC()
		return f
	}
	require.Equal(t, facts{
		EndedAt: ended.Truncate(time.Second), EndedMS: uint64(ended.UnixMilli()),
		Reason: "write_timeout", Action: "play_then_hangup", Detail: "agent stopped reading",
		FramesOut: 3061, FramesIn: 1500, FramesPlayed: 2990, Late: 4, Dropped: 12, Cleared: 25,
		MaxQueueMS: 4020, Marks: 7, BadMessages: 1,
		ConnectedMS: uint64(eventTime.UnixMilli()), URL: "wss://bot.example/a", Format: "audio/l16", ConnectMS: 87,
		Source: "number", DurationMS: 61250,
	}, read("MZa"))
	// A stream that never opened has no connect: '' and 0, not NULL.
	require.Equal(t, facts{
		EndedAt: ended.Truncate(time.Second), EndedMS: uint64(ended.UnixMilli()),
		Reason: "connect_failed", Action: "hangup", Detail: "tls: bad certificate",
	}, read(""))
	var n uint64
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT count() FROM agent_stream_facts WHERE call_id = ?", "call-a").Scan(&n))
	require.Equal(t, uint64(2), n, "one row per ended stream")
}
