package router

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/router/internal/api"
	"github.com/baton-voice/baton/services/router/internal/config"
	"github.com/baton-voice/baton/services/router/internal/handoff"
	"github.com/baton-voice/baton/services/router/internal/precall"
)

const preCallYAML = `
destinations:
  - name: support
    route: sip:support@pbx.example.com
    default: true
    headers:
      X-Tier: "{results.data.account.tier}"
      X-Customer-Id: "{Customer-Id}"
  - name: strict
    route: sip:strict@pbx.example.com
    on_missing_variable: refuse
    headers:
      X-Tier: "{results.data.account.tier}"
  - name: vip
    method: INVITE
    route: sip:vip@pbx.example.com
    whisper: /var/lib/baton/vip.wav
    headers:
      X-Tier: "$results.data.account.tier"
rules:
  - name: platinum
    after: precall
    when: has(results.data) && results.data.account.tier == 'platinum'
    handoff: vip
`

// webhook is a pre-call webhook that answers per call and counts calls.
type webhook struct {
	mu     sync.Mutex
	hits   map[string]int
	answer map[string]string // call id → JSON body; absent → 503
}

func (w *webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	var req struct {
		CallID string `json:"call_id"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hits[req.CallID]++
	body, ok := w.answer[req.CallID]
	if !ok {
		http.Error(rw, "crm down", http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(rw, body)
}

func (w *webhook) calls() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for k, v := range w.hits {
		out[k] = v
	}
	return out
}

// preCallRig is a router with a pre-call fetcher on kfake.
type preCallRig struct {
	t     *testing.T
	kcfg  kafka.Config
	table *handoff.Table
	prod  *kgo.Client
	// calls reads the calls topic (facts, PreCallData among them).
	calls *kgo.Client
	// out reads the handoffs topic, read committed.
	out *kgo.Client
}

func newPreCallRig(t *testing.T, url string) *preCallRig {
	t.Helper()
	kcfg := kafka.DefaultConfig()
	kcfg.Partitions = 1
	kcfg.Brokers = kafkatest.NewCluster(t, 1, kcfg.Topics.All()...)
	c := config.Default("test")
	c.Kafka = kcfg
	require.NoError(t, pkgconfig.Parse("router.yaml", []byte(preCallYAML), &c))
	table, err := c.Table()
	require.NoError(t, err)
	h := &harness{t: t, kcfg: kcfg, table: table, logger: discardLogger()}
	prod, err := kgo.NewClient(kafka.ClientOpts(kcfg, h.logger)...)
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	h.prod = prod

	fold := handoff.New(table, h.logger)
	fetcher := precall.New(precall.Options{URL: url, Timeout: 2 * time.Second, MaxAge: time.Minute, MaxInFlight: 2,
		FetchedBy: "router-precall"}, fold, api.NewKafkaPublisher(prod, kcfg.Topics.Calls, 5*time.Second), h.logger, time.Now)
	rt, err := New(Options{Kafka: kcfg, Group: "precall-test", TransactionalID: "router-precall", Started: fetcher}, fold, h.logger)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { fetcher.Run(ctx) })
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		wg.Wait()
		rt.Close()
	})
	calls, err := kgo.NewClient(kgo.SeedBrokers(kcfg.Brokers...), kgo.ConsumeTopics(kcfg.Topics.Calls),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	t.Cleanup(calls.Close)
	return &preCallRig{t: t, kcfg: kcfg, table: table, prod: prod, calls: calls, out: h.consumer(kgo.ReadCommitted())}
}

func (r *preCallRig) publish(callID string, msg proto.Message) events.Event {
	r.t.Helper()
	ev, err := events.New("baton/test", callID, msg, time.Now())
	require.NoError(r.t, err)
	rec, err := events.Encode(r.kcfg.Topics.Calls, ev)
	require.NoError(r.t, err)
	require.NoError(r.t, r.prod.ProduceSync(r.t.Context(), rec).FirstErr())
	return ev
}

func (r *preCallRig) start(callID string) events.Event {
	r.t.Helper()
	return r.publish(callID, &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "sip-" + callID},
		CallerNumber: "+15551230001", CalleeNumber: "+15559870002", Variables: map[string]string{"Customer-Id": "C-42"}})
}

// preCallData waits for the PreCallData of a call on the calls topic.
func (r *preCallRig) preCallData(callID string) (events.Event, *batonv1.PreCallData) {
	r.t.Helper()
	for {
		ev, err := events.Decode(next(r.t, r.calls, 1)[0])
		require.NoError(r.t, err)
		if msg, ok := ev.Data.(*batonv1.PreCallData); ok {
			require.Equal(r.t, callID, ev.Subject)
			return ev, msg
		}
	}
}

func TestPreCallWebhookFeedsTheHandoff(t *testing.T) {
	hook := &webhook{hits: map[string]int{}, answer: map[string]string{
		"gold": `{"data": {"account": {"tier": "gold"}, "name": "Ada"}}`,
		"plat": `{"data": {"account": {"tier": "platinum"}}}`,
	}}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	rig := newPreCallRig(t, srv.URL)

	// CallStarted → the webhook, once → a PreCallData fact.
	rig.start("gold")
	_, data := rig.preCallData("gold")
	require.Empty(t, data.GetError())
	require.Equal(t, `{"data":{"account":{"tier":"gold"},"name":"Ada"}}`, data.GetDataJson())
	require.Equal(t, "router-precall", data.GetFetchedBy())

	// A later handoff request renders {results.data.account.tier}.
	rig.publish("gold", &batonv1.HandoffRequested{RequestId: "r1"})
	_, cmd := decodeCommand(t, next(t, rig.out, 1)[0])
	require.Equal(t, "support", cmd.GetDestination())
	require.Equal(t, []*batonv1.SipHeader{{Name: "X-Customer-Id", Value: "C-42"}, {Name: "X-Tier", Value: "gold"}}, cmd.GetHeaders())

	// An after: precall rule hands off when the data is folded; the
	// PreCallData is the command's trigger, and the whisper rides along.
	rig.start("plat")
	plat, _ := rig.preCallData("plat")
	ev, cmd := decodeCommand(t, next(t, rig.out, 1)[0])
	require.Equal(t, "vip", cmd.GetDestination())
	require.Equal(t, "rule:platinum", cmd.GetReason())
	require.Equal(t, handoff.CommandID("plat", plat.ID), cmd.GetCommandId())
	require.True(t, ev.Time.Equal(plat.Time))
	require.Equal(t, "/var/lib/baton/vip.wav", cmd.GetWhisper())
	require.Equal(t, []*batonv1.SipHeader{{Name: "X-Tier", Value: "platinum"}}, cmd.GetHeaders())

	require.Equal(t, map[string]int{"gold": 1, "plat": 1}, hook.calls(), "one webhook call per call")

	// Replay: the recorded calls topic through a fresh router gives the
	// same records, and a fetcher on the replaying router calls the
	// webhook for no call whose data the log holds.
	log := readAll(t, rig.kcfg, rig.kcfg.Topics.Calls, 5)
	live := readAll(t, rig.kcfg, rig.kcfg.Topics.Handoffs, 2)
	fold := handoff.New(rig.table, discardLogger())
	fresh := &Router{fold: fold, topic: rig.kcfg.Topics.Handoffs, logger: discardLogger()}
	replayed, started := fresh.handle(context.WithoutCancel(t.Context()), log)
	require.Len(t, replayed, len(live))
	for i := range live {
		require.True(t, bytes.Equal(live[i].Value, replayed[i].Value), "record %d payload", i)
		require.Equal(t, headers(live[i]), headers(replayed[i]), "record %d headers", i)
	}

	// A call without data in the log ("new") is fetched; the queue is
	// first in, first out with one slot, so had "gold" or "plat" been
	// queued, the webhook would have seen them first.
	newStart, err := events.New("baton/test", "new", &batonv1.CallStarted{}, time.Now())
	require.NoError(t, err)
	fold.Apply(t.Context(), newStart)
	fold.Commit()
	again := &webhook{hits: map[string]int{}, answer: map[string]string{"new": `{}`}}
	againSrv := httptest.NewServer(again)
	defer againSrv.Close()
	pub := make(chanPublisher, 4)
	fetcher := precall.New(precall.Options{URL: againSrv.URL, Timeout: time.Second, MaxAge: time.Hour, MaxInFlight: 1},
		fold, pub, discardLogger(), time.Now)
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan struct{})
	go func() { defer close(stopped); fetcher.Run(ctx) }()
	defer func() { cancel(); <-stopped }()
	require.Len(t, started, 2)
	for _, ev := range append(started, newStart) {
		fetcher.Started(ev)
	}
	select {
	case ev := <-pub:
		require.Equal(t, "new", ev.Subject)
	case <-time.After(waitTimeout):
		t.Fatal("the call without data was not fetched")
	}
	require.Equal(t, map[string]int{"new": 1}, again.calls())
}

// chanPublisher hands published events to the test.
type chanPublisher chan events.Event

func (p chanPublisher) Publish(_ context.Context, ev events.Event) error {
	p <- ev
	return nil
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestPreCallWebhookDown(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens: connection refused
	rig := newPreCallRig(t, url)

	rig.start("down")
	_, data := rig.preCallData("down")
	require.Contains(t, data.GetError(), "connection refused")
	require.Empty(t, data.GetDataJson())

	// The handoff still happens, with the pre-call value empty...
	rig.publish("down", &batonv1.HandoffRequested{RequestId: "r1"})
	_, cmd := decodeCommand(t, next(t, rig.out, 1)[0])
	require.Equal(t, []*batonv1.SipHeader{{Name: "X-Customer-Id", Value: "C-42"}, {Name: "X-Tier", Value: ""}}, cmd.GetHeaders())

	// ...or is refused where the destination requires its variables.
	rig.start("strict")
	rig.preCallData("strict")
	rig.publish("strict", &batonv1.HandoffRequested{RequestId: "r2", Destination: "strict"})
	ev, err := events.Decode(next(t, rig.out, 1)[0])
	require.NoError(t, err)
	refused, ok := ev.Data.(*batonv1.HandoffRefused)
	require.True(t, ok, "a %s", ev.Type)
	require.Equal(t, handoff.RefusedMissingVariable, refused.GetReasonCode())
}

// readAll reads n records of a topic from the start, read committed.
func readAll(t *testing.T, kcfg kafka.Config, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kcfg.Brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	require.NoError(t, err)
	defer cl.Close()
	return next(t, cl, n)
}
