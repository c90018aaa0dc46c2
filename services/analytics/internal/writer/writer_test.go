package writer

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/schemas"
	"github.com/baton-voice/baton/services/analytics/internal/chconn"
	"github.com/baton-voice/baton/services/analytics/internal/chtest"
	"github.com/baton-voice/baton/services/analytics/internal/config"
	"github.com/baton-voice/baton/services/analytics/internal/migrate"
)

var server *chtest.Server

func TestMain(m *testing.M) {
	flag.Parse()
	server = chtest.Start()
	code := m.Run()
	server.Stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			_, _ = fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// waitTimeout bounds every wait for rows, offsets or records.
const waitTimeout = 30 * time.Second

const pollEvery = 50 * time.Millisecond

// eventTime is the clock of the test events, with milliseconds.
var eventTime = time.Date(2025, 3, 14, 15, 9, 26, 535_000_000, time.UTC)

// env is a kfake cluster, a producer and a writer configuration.
type env struct {
	t    *testing.T
	cfg  config.Config
	prod *kgo.Client
	logs *lockedBuffer
}

func newEnv(t *testing.T, withClickHouse bool) *env {
	t.Helper()
	cfg := config.Default()
	cfg.Kafka.Partitions = 1
	cfg.Kafka.Brokers = kafkatest.NewCluster(t, cfg.Kafka.Partitions, cfg.Kafka.Topics.All()...)
	cfg.Group = "analytics-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	cfg.RetryPause = 20 * time.Millisecond
	if withClickHouse {
		cfg.ClickHouse = server.Config(t)
	}
	prod, err := kgo.NewClient(kafka.ClientOpts(cfg.Kafka, slog.New(slog.DiscardHandler))...)
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	return &env{t: t, cfg: cfg, prod: prod, logs: &lockedBuffer{}}
}

func (e *env) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// produce sends records synchronously.
func (e *env) produce(recs ...*kgo.Record) {
	e.t.Helper()
	require.NoError(e.t, e.prod.ProduceSync(e.t.Context(), recs...).FirstErr())
}

// run starts a writer in group until the test ends, wired as the
// service's main wires it: the database migrated, a client made with
// ClientOpts, the dead-letter topic created.
func (e *env) run(group string) *Writer {
	e.t.Helper()
	cfg := e.cfg
	cfg.Group = group
	ch := cfg.ClickHouse
	migrations, err := fs.Sub(schemas.ClickHouse, "clickhouse")
	require.NoError(e.t, err)
	_, err = migrate.Run(e.t.Context(), chconn.Options(ch, ch.Database), migrations, ch.Cluster, e.logger())
	require.NoError(e.t, err)
	conn := server.Conn(e.t, ch)
	cl, err := kgo.NewClient(ClientOpts(cfg.Kafka, cfg.Group, e.logger())...)
	require.NoError(e.t, err)
	require.NoError(e.t, kafka.EnsureTopics(e.t.Context(), cl, cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor,
		cfg.DeadLetterTopic))
	w := New(cl, conn, Options{Config: cfg}, e.logger())
	ctx, cancel := context.WithCancel(e.t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(e.t, err)
		case <-time.After(waitTimeout):
			e.t.Error("writer did not stop")
		}
		cl.Close()
	})
	return w
}

// waitCommitted waits until group committed every record of the topics.
func (e *env) waitCommitted(group string) {
	e.t.Helper()
	adm := kadm.NewClient(e.prod)
	topics := e.cfg.Kafka.Topics.All()
	require.Eventually(e.t, func() bool {
		ends, err := adm.ListEndOffsets(e.t.Context(), topics...)
		if err != nil {
			return false
		}
		committed, err := adm.FetchOffsets(e.t.Context(), group)
		if err != nil {
			return false
		}
		ok := true
		ends.Each(func(o kadm.ListedOffset) {
			c, found := committed.Lookup(o.Topic, o.Partition)
			if o.Offset > 0 && (!found || c.At < o.Offset) {
				ok = false
			}
		})
		return ok
	}, waitTimeout, pollEvery, "group %s did not commit every record", group)
}

// consumer is a group client with the writer's options, closed when the
// test ends.
func (e *env) consumer() *kgo.Client {
	e.t.Helper()
	cl, err := kgo.NewClient(ClientOpts(e.cfg.Kafka, e.cfg.Group, slog.New(slog.DiscardHandler))...)
	require.NoError(e.t, err)
	e.t.Cleanup(cl.Close)
	return cl
}

// callEvents are one call's four events, encoded for their topics, a
// second apart. The same ids every time, so encoding them again replays
// them.
func callEvents(t testing.TB, topics kafka.Topics, callID string) []*kgo.Record {
	t.Helper()
	return callEventsAt(t, topics, callID, eventTime, time.Second)
}

// callEventsAt are callEvents starting at start, step apart.
func callEventsAt(t testing.TB, topics kafka.Topics, callID string, start time.Time, step time.Duration) []*kgo.Record {
	t.Helper()
	mk := func(id, topic string, at time.Time, msg proto.Message) *kgo.Record {
		typ, err := events.TypeOf(msg)
		require.NoError(t, err)
		rec, err := events.Encode(topic, events.Event{
			ID: callID + "-" + id, Type: typ, Source: "baton/test", Subject: callID, Time: at, Data: msg,
		})
		require.NoError(t, err)
		return rec
	}
	cmdID := callID + "-cmd-1"
	return []*kgo.Record{
		mk("started", topics.Calls, start, &batonv1.CallStarted{
			Trunk: "carrier-a", SourceAddress: "192.0.2.10:5060",
			CallerNumber: "+15550100", CallerNumberRaw: "sip:5550100@carrier",
			CalleeNumber: "+15550199", CalleeNumberRaw: "sip:5550199@baton",
			RequestUri: "sip:5550199@baton",
			Variables:  map[string]string{"Customer-Id": "42", "Intent": "billing"},
			SipHeaders: []*batonv1.SipHeader{{Name: "Via", Value: "SIP/2.0/UDP x"}, {Name: "X-Customer-Id", Value: "42"}},
		}),
		mk("handoff", topics.Handoffs, start.Add(step), &batonv1.HandoffCommand{
			CommandId: cmdID, CallId: callID, Method: batonv1.Method_METHOD_REFER, Destination: "support",
			Route: "sip:support@127.0.0.1:5090", Reason: "billing_dispute", Utterance: "a human please", Attempt: 1,
			Rule:    "billing",
			Headers: []*batonv1.SipHeader{{Name: "X-Customer-Id", Value: "42"}},
		}),
		mk("outcome", topics.Transfers, start.Add(2*step), &batonv1.TransferOutcome{
			CommandId: cmdID, CallId: callID, Status: batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED,
			Method: batonv1.Method_METHOD_REFER, Destination: "support", SipCode: 200, SipReason: "OK",
			Elapsed: durationpb.New(1500 * time.Millisecond),
		}),
		mk("ended", topics.Calls, start.Add(3*step), &batonv1.CallEnded{
			CallId: callID, EndedBy: batonv1.Party_PARTY_BATON, Method: "BYE",
			Duration: durationpb.New(3 * time.Second),
		}),
	}
}

// count is SELECT count() FROM table FINAL [WHERE where].
func count(t *testing.T, conn driver.Conn, table, where string, args ...any) uint64 {
	t.Helper()
	q := "SELECT count() FROM " + table + " FINAL"
	if where != "" {
		q += " WHERE " + where
	}
	var n uint64
	require.NoError(t, conn.QueryRow(t.Context(), q, args...).Scan(&n))
	return n
}

// waitCount waits until count(table, where) is want.
func waitCount(t *testing.T, conn driver.Conn, want uint64, table, where string, args ...any) {
	t.Helper()
	var last uint64
	require.Eventually(t, func() bool {
		q := "SELECT count() FROM " + table + " FINAL"
		if where != "" {
			q += " WHERE " + where
		}
		if err := conn.QueryRow(t.Context(), q, args...).Scan(&last); err != nil {
			return false
		}
		return last == want
	}, waitTimeout, pollEvery, "%s: want %d rows", table, want)
}

func TestEndToEnd(t *testing.T) {
	e := newEnv(t, true)
	e.produce(callEvents(t, e.cfg.Kafka.Topics, "call-e2e")...)
	w := e.run(e.cfg.Group)
	conn := server.Conn(t, e.cfg.ClickHouse)

	waitCount(t, conn, 4, "events", "call_id = ?", "call-e2e")
	e.waitCommitted(e.cfg.Group)
	require.Zero(t, deadLettered(w))
	require.Contains(t, e.logs.String(), `"msg":"ready"`)

	var (
		keys, values                   []string
		caller, callee, trunk, eventID string
		startedMS, version             uint64
		headerCount                    uint32
		startedAt                      time.Time
	)
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT variables.key, variables.value, caller_number, callee_number,
		trunk, event_id, started_ms, version, header_count, started_at FROM calls FINAL WHERE call_id = ?`, "call-e2e").
		Scan(&keys, &values, &caller, &callee, &trunk, &eventID, &startedMS, &version, &headerCount, &startedAt))
	require.Equal(t, []string{"Customer-Id", "Intent"}, keys)
	require.Equal(t, []string{"42", "billing"}, values)
	require.Equal(t, "+15550100", caller)
	require.Equal(t, "+15550199", callee)
	require.Equal(t, "carrier-a", trunk)
	require.Equal(t, "call-e2e-started", eventID)
	require.Equal(t, uint64(eventTime.UnixMilli()), startedMS)
	require.Equal(t, startedMS, version)
	require.Equal(t, uint32(2), headerCount)
	require.True(t, startedAt.Equal(eventTime.Truncate(time.Second)), "started_at %v", startedAt)

	var (
		method, destination, reason, rule string
		attempt                           uint32
		hNames, hValues                   []string
	)
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT method, destination, reason, attempt, headers.name, headers.value, rule
		FROM handoffs FINAL WHERE command_id = ? AND call_id = ?`, "call-e2e-cmd-1", "call-e2e").
		Scan(&method, &destination, &reason, &attempt, &hNames, &hValues, &rule))
	require.Equal(t, "billing", rule, "the rule column (migration 0007) is filled")
	require.Equal(t, "REFER", method)
	require.Equal(t, "support", destination)
	require.Equal(t, "billing_dispute", reason)
	require.Equal(t, uint32(1), attempt)
	require.Equal(t, []string{"X-Customer-Id"}, hNames)
	require.Equal(t, []string{"42"}, hValues)

	var (
		status    string
		sipCode   int32
		elapsedMS uint64
	)
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT status, sip_code, elapsed_ms FROM transfer_outcomes FINAL
		WHERE command_id = ?`, "call-e2e-cmd-1").Scan(&status, &sipCode, &elapsedMS))
	require.Equal(t, "succeeded", status)
	require.Equal(t, int32(200), sipCode)
	require.Equal(t, uint64(1500), elapsedMS)

	var (
		endedBy, endMethod string
		durationMS         uint64
	)
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT ended_by, method, duration_ms FROM call_ends FINAL
		WHERE call_id = ?`, "call-e2e").Scan(&endedBy, &endMethod, &durationMS))
	require.Equal(t, "baton", endedBy)
	require.Equal(t, "BYE", endMethod)
	require.Equal(t, uint64(3000), durationMS)

	// The payload is the record's Protobuf message, byte for byte; the
	// protojson column of 0001 is no longer filled.
	var topic, typ, payloadJSON, payload string
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT topic, type, payload, payload_proto FROM events FINAL
		WHERE event_id = ?`, "call-e2e-outcome").Scan(&topic, &typ, &payloadJSON, &payload))
	require.Equal(t, e.cfg.Kafka.Topics.Transfers, topic)
	require.Equal(t, events.TypeTransferOutcome, typ)
	require.Empty(t, payloadJSON)
	var outcome batonv1.TransferOutcome
	require.NoError(t, proto.Unmarshal([]byte(payload), &outcome))
	require.Equal(t, int32(200), outcome.GetSipCode())
}

// Replayed records change no count: the same events twice in one run, then
// everything again through a fresh group that reads from the start.
func TestExactlyOnce(t *testing.T) {
	e := newEnv(t, true)
	topics := e.cfg.Kafka.Topics
	e.produce(callEvents(t, topics, "call-x")...)
	e.produce(callEvents(t, topics, "call-x")...) // same ce_id: a producer's retry after a crash
	e.run("analytics-first")
	e.waitCommitted("analytics-first")
	conn := server.Conn(t, e.cfg.ClickHouse)

	want := map[string]uint64{"events": 4, "calls": 1, "handoffs": 1, "transfer_outcomes": 1, "call_ends": 1}
	assertCounts := func() {
		t.Helper()
		for table, n := range want {
			require.Equal(t, n, count(t, conn, table, ""), table)
		}
	}
	assertCounts()

	e.run("analytics-second") // reads all 8 records again
	e.waitCommitted("analytics-second")
	assertCounts()
}

// An undecodable record goes to the dead-letter topic with why and where;
// the records after it in its partition are written all the same.
func TestDeadLetter(t *testing.T) {
	e := newEnv(t, true)
	topics := e.cfg.Kafka.Topics
	garbage := &kgo.Record{
		Topic: topics.Calls, Key: []byte("call-d"), Value: []byte("not protobuf"),
		Headers: []kgo.RecordHeader{{Key: "ce_specversion", Value: []byte("0.3")}, {Key: "x-trace", Value: []byte("abc")}},
	}
	e.produce(garbage)
	good := callEvents(t, topics, "call-d")
	e.produce(good[0], good[3]) // CallStarted, CallEnded: same topic and partition, after the garbage
	w := e.run(e.cfg.Group)
	conn := server.Conn(t, e.cfg.ClickHouse)

	waitCount(t, conn, 2, "events", "call_id = ?", "call-d")
	waitCount(t, conn, 1, "calls", "call_id = ?", "call-d")
	waitCount(t, conn, 1, "call_ends", "call_id = ?", "call-d")
	e.waitCommitted(e.cfg.Group)
	require.Equal(t, int64(1), deadLettered(w))

	dlq, err := kgo.NewClient(kgo.SeedBrokers(e.cfg.Kafka.Brokers...), kgo.ConsumeTopics(e.cfg.DeadLetterTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer dlq.Close()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	var got []*kgo.Record
	for len(got) == 0 && ctx.Err() == nil {
		fs := dlq.PollFetches(ctx)
		got = append(got, fs.Records()...)
	}
	require.Len(t, got, 1)
	rec := got[0]
	require.Equal(t, "call-d", string(rec.Key))
	require.Equal(t, "not protobuf", string(rec.Value))
	headers := map[string]string{}
	for _, h := range rec.Headers {
		headers[h.Key] = string(h.Value)
	}
	require.Equal(t, "0.3", headers["ce_specversion"])
	require.Equal(t, "abc", headers["x-trace"])
	require.Contains(t, headers[HeaderDLQError], "missing CloudEvents header")
	require.Equal(t, topics.Calls, headers[HeaderDLQTopic])
	require.Equal(t, "0", headers[HeaderDLQPartition])
	require.Equal(t, "0", headers[HeaderDLQOffset])
	require.Contains(t, e.logs.String(), `"msg":"record dead-lettered"`)
}

// A failing insert is retried with the same records and nothing is
// committed until it succeeds. No ClickHouse: the insert is a stub.
func TestNoCommitBeforeInsert(t *testing.T) {
	e := newEnv(t, false)
	recs := callEvents(t, e.cfg.Kafka.Topics, "call-r")
	e.produce(recs...)
	adm := kadm.NewClient(e.prod)
	// committed sums the group's committed offsets; -1 when unknown.
	committed := func() int64 {
		offs, err := adm.FetchOffsets(t.Context(), e.cfg.Group)
		if errors.Is(err, kerr.GroupIDNotFound) {
			return 0
		}
		if err != nil {
			return -1
		}
		var n int64
		offs.Each(func(o kadm.OffsetResponse) { n += max(o.At, 0) })
		return n
	}

	cl := e.consumer()

	var attempts atomic.Int32
	var seen sync.Map // attempt -> event ids
	insert := func(ctx context.Context, r *rows) error {
		n := attempts.Add(1)
		ids := make([]string, 0, r.len())
		for _, ev := range r.events {
			ids = append(ids, ev.EventID)
		}
		seen.Store(n, ids)
		// Nothing is committed while the batch has not been inserted.
		if c := committed(); c != 0 {
			return fmt.Errorf("attempt %d: %d offsets committed before the insert", n, c)
		}
		if n <= 2 {
			return fmt.Errorf("attempt %d: clickhouse unreachable", n)
		}
		return nil
	}
	w := newWriter(cl, insert, Options{Config: e.cfg}, e.logger())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	require.Eventually(t, func() bool { return committed() == int64(len(recs)) }, waitTimeout, pollEvery)
	cancel()
	require.NoError(t, <-done)

	// If a stub saw committed offsets it failed, so it ran more than thrice.
	require.Equal(t, int32(3), attempts.Load(), "inserts: the first two fail, the third succeeds")
	first, _ := seen.Load(int32(1))
	for i := int32(2); i <= 3; i++ {
		again, _ := seen.Load(i)
		require.Equal(t, first, again, "attempt %d retried other records", i)
	}
	require.Len(t, first, len(recs))
	logs := e.logs.String()
	require.Equal(t, 2, strings.Count(logs, `"msg":"write batch; retrying"`))
	// The pause doubles: 20ms, then 40ms.
	require.Contains(t, logs, `"attempt":1,"retry_in":20000000`)
	require.Contains(t, logs, `"attempt":2,"retry_in":40000000`)
}

// SIGTERM during an insert: the insert finishes on a live context and the
// batch is committed before Run returns.
func TestShutdownFinishesBatch(t *testing.T) {
	e := newEnv(t, false)
	recs := callEvents(t, e.cfg.Kafka.Topics, "call-s")
	e.produce(recs...)
	cl := e.consumer()

	ctx, cancel := context.WithCancel(t.Context())
	var inserted atomic.Int32
	insert := func(insertCtx context.Context, r *rows) error {
		cancel() // the signal arrives mid-insert
		if err := insertCtx.Err(); err != nil {
			return fmt.Errorf("insert context ended with the service: %w", err)
		}
		inserted.Add(int32(r.len()))
		return nil
	}
	require.NoError(t, newWriter(cl, insert, Options{Config: e.cfg}, e.logger()).Run(ctx))
	n := inserted.Load()
	require.Positive(t, n)

	// Exactly the inserted batch is committed (the first poll may not hold
	// all four records).
	offs, err := kadm.NewClient(e.prod).FetchOffsets(t.Context(), e.cfg.Group)
	require.NoError(t, err)
	var committed int64
	offs.Each(func(o kadm.OffsetResponse) { committed += max(o.At, 0) })
	require.Equal(t, int64(n), committed)
}

// deadLettered is how many records w sent to the dead-letter topic, as
// its metrics count them.
func deadLettered(w *Writer) int64 {
	return int64(testutil.ToFloat64(w.metrics.deadLettered))
}

// lockedBuffer is a bytes.Buffer safe for a logger and a test to share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
