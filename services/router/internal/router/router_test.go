package router

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/router/internal/config"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const routerYAML = `
destinations:
  - name: support
    route: sip:support@127.0.0.1:5090
    headers:
      X-Customer-Id: "{Customer-Id}"
      X-Intent: "{intent}"
      X-Baton-Call-Id: "$call_id"
rules:
  - name: handoff-everyone
    handoff: support
`

// waitTimeout bounds every wait for records in these tests.
const waitTimeout = 20 * time.Second

type harness struct {
	t      *testing.T
	kcfg   kafka.Config
	table  *handoff.Table
	logger *slog.Logger
	prod   *kgo.Client
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	kcfg := kafka.DefaultConfig()
	kcfg.Partitions = 1
	return newHarnessOn(t, kafkatest.NewCluster(t, kcfg.Partitions, kcfg.Topics.All()...))
}

// newHarnessOn is newHarness on a cluster of the test's own (one
// partition per topic).
func newHarnessOn(t *testing.T, brokers []string) *harness {
	t.Helper()
	kcfg := kafka.DefaultConfig()
	kcfg.Partitions = 1
	kcfg.Brokers = brokers
	c := config.Default("test")
	c.Kafka = kcfg
	require.NoError(t, pkgconfig.Parse("router.yaml", []byte(routerYAML), &c))
	table, err := c.Table()
	require.NoError(t, err)
	logger := slog.New(slog.DiscardHandler)
	prod, err := kgo.NewClient(kafka.ClientOpts(kcfg, logger)...)
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	return &harness{t: t, kcfg: kcfg, table: table, logger: logger, prod: prod}
}

// start runs a router until the test ends or the returned stop is called.
func (h *harness) start(txnID string) (stop func()) {
	h.t.Helper()
	return h.startWith(Options{Kafka: h.kcfg, Group: "baton-router-test", TransactionalID: txnID})
}

// startWith is start with the router's options given.
func (h *harness) startWith(opts Options) (stop func()) {
	h.t.Helper()
	rt, err := New(opts, handoff.New(h.table, h.logger), h.logger)
	require.NoError(h.t, err)
	return h.run(rt)
}

// run runs rt until the test ends or the returned stop is called.
func (h *harness) run(rt *Router) (stop func()) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(h.t.Context())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	var stopped atomic.Bool
	stop = func() {
		if stopped.Swap(true) {
			return
		}
		cancel()
		require.NoError(h.t, <-done)
		rt.Close()
	}
	h.t.Cleanup(stop)
	return stop
}

func (h *harness) publish(ev events.Event) {
	h.t.Helper()
	rec, err := events.Encode(h.kcfg.Topics.Calls, ev)
	require.NoError(h.t, err)
	require.NoError(h.t, h.prod.ProduceSync(h.t.Context(), rec).FirstErr())
}

func (h *harness) callStarted(callID string) events.Event {
	h.t.Helper()
	msg := &batonv1.CallStarted{
		Dialog: &batonv1.Dialog{
			CallId: "sip-" + callID, LocalTag: "baton-tag", RemoteTag: "caller-tag",
			LocalUri: "sip:+15559870002@baton.example.com", RemoteUri: "sip:+15551230001@carrier.example.com",
			RemoteTarget: "sip:caller@10.0.0.1:5060", RouteSet: []string{"<sip:10.0.0.9;lr>"},
			Transport: batonv1.Transport_TRANSPORT_UDP, NextLocalCseq: 1,
		},
		Variables:    map[string]string{"Customer-Id": "C-42", "Intent": "billing"},
		CallerNumber: "+15551230001",
		CalleeNumber: "+15559870002",
	}
	ev, err := events.New("baton/ingress", callID, msg, time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	require.NoError(h.t, err)
	return ev
}

// consumer reads the handoffs topic from the start at an isolation level.
func (h *harness) consumer(level kgo.IsolationLevel) *kgo.Client {
	h.t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(h.kcfg.Brokers...),
		kgo.ConsumeTopics(h.kcfg.Topics.Handoffs),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(level),
	)
	require.NoError(h.t, err)
	h.t.Cleanup(cl.Close)
	return cl
}

// next polls cl until it has n more records.
func next(t *testing.T, cl *kgo.Client, n int) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollRecords(ctx, n-len(out))
		require.NoError(t, ctx.Err(), "waited for %d records, got %d", n, len(out))
		fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s/%d: %v", topic, p, err) })
		out = append(out, fs.Records()...)
	}
	return out
}

func decodeCommand(t *testing.T, rec *kgo.Record) (events.Event, *batonv1.HandoffCommand) {
	t.Helper()
	ev, err := events.Decode(rec)
	require.NoError(t, err)
	cmd, ok := ev.Data.(*batonv1.HandoffCommand)
	require.True(t, ok, "record is a %s", ev.Type)
	return ev, cmd
}

func TestCallStartedIsHandedOffOnce(t *testing.T) {
	h := newHarness(t)
	stopA := h.start("router-a")
	committed := h.consumer(kgo.ReadCommitted())

	start := h.callStarted("call-1")
	h.publish(start)

	recs := next(t, committed, 1)
	ev, cmd := decodeCommand(t, recs[0])
	wantID := handoff.CommandID("call-1", start.ID)
	require.Equal(t, wantID, cmd.GetCommandId())
	require.Equal(t, wantID, ev.ID, "the event id is the command id")
	require.Equal(t, Source, ev.Source)
	require.Equal(t, "call-1", string(recs[0].Key))
	require.True(t, ev.Time.Equal(start.Time), "the command's time is its trigger's")
	require.Equal(t, "call-1", cmd.GetCallId())
	require.Equal(t, batonv1.Method_METHOD_REFER, cmd.GetMethod())
	require.Equal(t, "support", cmd.GetDestination())
	require.Equal(t, "sip:support@127.0.0.1:5090", cmd.GetRoute())
	require.Equal(t, "rule:handoff-everyone", cmd.GetReason())
	require.Equal(t, uint32(1), cmd.GetAttempt())
	require.Equal(t, 30*time.Second, cmd.GetAnswerTimeout().AsDuration())
	require.Equal(t, []*batonv1.SipHeader{
		{Name: "X-Baton-Call-Id", Value: "call-1"},
		{Name: "X-Customer-Id", Value: "C-42"},
		{Name: "X-Intent", Value: "billing"},
	}, cmd.GetHeaders())
	require.True(t, proto.Equal(start.Data.(*batonv1.CallStarted).GetDialog(), cmd.GetDialog()), "dialog copied from CallStarted")

	// The same record again (same ce_id), then another call: only the
	// other call is handed off, so the duplicate produced nothing.
	h.publish(start)
	h.publish(h.callStarted("call-2"))
	recs = next(t, committed, 1)
	_, cmd2 := decodeCommand(t, recs[0])
	require.Equal(t, "call-2", cmd2.GetCallId())

	// A new instance has no memory of call-1: replaying its record yields
	// a command with the same deterministic id and the same payload.
	stopA()
	h.start("router-b")
	h.publish(start)
	recs = next(t, committed, 1)
	_, again := decodeCommand(t, recs[0])
	require.Equal(t, wantID, again.GetCommandId())
	require.True(t, proto.Equal(cmd, again))
}

func TestCommandsAreVisibleOnlyAfterCommit(t *testing.T) {
	topics := kafka.DefaultConfig().Topics
	cluster := kafkatest.Start(t, 1, topics.All()...)
	h := newHarnessOn(t, cluster.ListenAddrs())
	adm := kadm.NewClient(h.prod)
	type offsets struct{ end, stable int64 }
	inTxn := make(chan offsets, 1)
	var calls atomic.Int32
	// The broker holds the first EndTxn while the test looks at the log:
	// the command is written but its transaction is open.
	cluster.ControlKey(int16(kmsg.EndTxn), func(kmsg.Request) (kmsg.Response, error, bool) {
		if calls.Add(1) != 1 {
			return nil, nil, false
		}
		cluster.SleepControl(func() {
			// The log end moved, the last stable offset (what
			// read_committed may see) not.
			var o offsets
			if end, err := adm.ListEndOffsets(t.Context(), h.kcfg.Topics.Handoffs); err == nil {
				off, _ := end.Lookup(h.kcfg.Topics.Handoffs, 0)
				o.end = off.Offset
			}
			if stable, err := adm.ListCommittedOffsets(t.Context(), h.kcfg.Topics.Handoffs); err == nil {
				off, _ := stable.Lookup(h.kcfg.Topics.Handoffs, 0)
				o.stable = off.Offset
			}
			inTxn <- o
		})
		return nil, nil, false // then handled by the broker as usual
	})
	h.start("router-visibility")

	h.publish(h.callStarted("call-1"))
	select {
	case o := <-inTxn:
		require.Equal(t, int64(1), o.end, "the command is in the log")
		require.Equal(t, int64(0), o.stable, "but not stable before the commit")
	case <-time.After(waitTimeout):
		t.Fatal("the router never produced the command")
	}

	recs := next(t, h.consumer(kgo.ReadCommitted()), 1)
	_, cmd := decodeCommand(t, recs[0])
	require.Equal(t, "call-1", cmd.GetCallId())
	require.True(t, recs[0].Attrs.IsTransactional(), "written in a transaction")

	require.Eventually(t, func() bool {
		stable, err := adm.ListCommittedOffsets(t.Context(), h.kcfg.Topics.Handoffs)
		if err != nil {
			return false
		}
		off, _ := stable.Lookup(h.kcfg.Topics.Handoffs, 0)
		return off.Offset == 2 // the command and the commit marker
	}, waitTimeout, 10*time.Millisecond)
}

func TestAbortedBatchIsHandledAgain(t *testing.T) {
	h := newHarness(t)
	var calls atomic.Int32
	rt, err := New(Options{Kafka: h.kcfg, Group: "baton-router-test", TransactionalID: "router-abort"},
		handoff.New(h.table, h.logger), h.logger)
	require.NoError(t, err)
	rt.abortBeforeEnd = func([]*kgo.Record) bool {
		return calls.Add(1) == 1 // abort the first transaction only
	}
	h.run(rt)

	start := h.callStarted("call-1")
	h.publish(start)
	committed := h.consumer(kgo.ReadCommitted())
	recs := next(t, committed, 1)
	_, cmd := decodeCommand(t, recs[0])
	require.Equal(t, handoff.CommandID("call-1", start.ID), cmd.GetCommandId())

	// Nothing else for call-1 becomes visible: the next command is call-2's.
	h.publish(h.callStarted("call-2"))
	recs = next(t, committed, 1)
	_, cmd2 := decodeCommand(t, recs[0])
	require.Equal(t, "call-2", cmd2.GetCallId())

	// A read_uncommitted reader also sees the aborted attempt: the same
	// command, written twice, once aborted.
	all := next(t, h.consumer(kgo.ReadUncommitted()), 3)
	var ids []string
	for _, r := range all {
		_, c := decodeCommand(t, r)
		ids = append(ids, c.GetCommandId())
	}
	require.Equal(t, []string{cmd.GetCommandId(), cmd.GetCommandId(), cmd2.GetCommandId()}, ids)
	require.GreaterOrEqual(t, calls.Load(), int32(2))
}
