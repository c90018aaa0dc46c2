package push

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/services/router/internal/handoff"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var at = time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)

func transition(callID string, seq uint32, typ string) handoff.Transition {
	return handoff.Transition{ID: fmt.Sprintf("%s-ev-%d", callID, seq), CallID: callID, Seq: seq, Type: typ, Time: at}
}

// receiver answers with the statuses given in turn (then 200) and keeps
// what it answered 2xx.
type receiver struct {
	mu       sync.Mutex
	statuses []int
	tries    int
	got      []Payload
	headers  []http.Header
	bodies   [][]byte
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tries++
	status := http.StatusOK
	if len(r.statuses) > 0 {
		status, r.statuses = r.statuses[0], r.statuses[1:]
	}
	if status < 300 {
		var p Payload
		_ = json.Unmarshal(body, &p)
		r.got = append(r.got, p)
		r.headers = append(r.headers, req.Header.Clone())
		r.bodies = append(r.bodies, body)
	}
	w.WriteHeader(status)
}

func (r *receiver) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, p := range r.got {
		out = append(out, p.ID)
	}
	return out
}

type webhookFixture struct {
	recv    *receiver
	hooks   *Webhooks
	metrics *WebhookMetrics
	run     func()
}

func newWebhookFixture(t *testing.T, ep Endpoint, statuses ...int) *webhookFixture {
	t.Helper()
	recv := &receiver{statuses: statuses}
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	ep.URL, ep.Name, ep.Secret = srv.URL, "agent", []byte("s3cret")
	ep.Timeout = max(ep.Timeout, 5*time.Second)
	ep.MaxRetry = max(ep.MaxRetry, time.Minute)
	metrics := NewWebhookMetrics(prometheus.NewRegistry())
	hooks := NewWebhooks([]Endpoint{ep}, srv.Client(), slog.New(slog.DiscardHandler), func() time.Time { return at }, metrics)
	hooks.initial = 10 * time.Millisecond
	f := &webhookFixture{recv: recv, hooks: hooks, metrics: metrics}
	f.run = func() {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); hooks.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	return f
}

// TestWebhookIsSignedAndRetried: a 500 is retried with backoff; the body
// delivered carries Idempotency-Key = the transition id and a
// Baton-Signature that verifies: HMAC-SHA256 of "t.body".
func TestWebhookIsSignedAndRetried(t *testing.T) {
	f := newWebhookFixture(t, Endpoint{MaxInFlight: 1, MaxQueue: 10}, 500, 503)
	f.run()
	f.hooks.Transitions([]handoff.Transition{transition("c1", 1, handoff.TransitionRequested)})
	require.Eventually(t, func() bool { return len(f.recv.ids()) == 1 }, 10*time.Second, 5*time.Millisecond)
	f.recv.mu.Lock()
	require.Equal(t, 3, f.recv.tries)
	require.Equal(t, "c1-ev-1", f.recv.headers[0].Get(HeaderIdempotencyKey))
	require.Equal(t, Sign([]byte("s3cret"), at, f.recv.bodies[0]), f.recv.headers[0].Get(HeaderSignature))
	require.Regexp(t, `^t=1796547600,v1=[0-9a-f]{64}$`, f.recv.headers[0].Get(HeaderSignature))
	require.NotEqual(t, Sign([]byte("other"), at, f.recv.bodies[0]), f.recv.headers[0].Get(HeaderSignature))
	require.Equal(t, "requested", f.recv.got[0].Type)
	f.recv.mu.Unlock()
	require.InDelta(t, 2, testutil.ToFloat64(f.metrics.Retries.WithLabelValues("agent")), 0)
	require.Eventually(t, func() bool { // counted once the answer is read
		return testutil.ToFloat64(f.metrics.Deliveries.WithLabelValues("agent", "delivered")) == 1
	}, 10*time.Second, 5*time.Millisecond)
}

// TestWebhookRejectionIsNotRetried: a 4xx (but 408 and 429) is final.
func TestWebhookRejectionIsNotRetried(t *testing.T) {
	f := newWebhookFixture(t, Endpoint{MaxInFlight: 1, MaxQueue: 10}, 400)
	f.run()
	f.hooks.Transitions([]handoff.Transition{transition("c1", 1, handoff.TransitionRequested), transition("c1", 2, handoff.TransitionCommandIssued)})
	require.Eventually(t, func() bool { return len(f.recv.ids()) == 1 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, []string{"c1-ev-2"}, f.recv.ids(), "the rejected one was not tried again; the next went on")
	require.InDelta(t, 1, testutil.ToFloat64(f.metrics.Deliveries.WithLabelValues("agent", "rejected")), 0)
}

// TestWebhookQueueDropsTheOldest: a full queue drops its oldest
// transition (counted) instead of growing or blocking the fold; what is
// kept goes out in order. The events filter keeps out unwanted types.
func TestWebhookQueueDropsTheOldest(t *testing.T) {
	f := newWebhookFixture(t, Endpoint{MaxInFlight: 1, MaxQueue: 3,
		Events: []string{handoff.TransitionRequested, handoff.TransitionFailed}})
	var ts []handoff.Transition
	for i := range uint32(6) {
		ts = append(ts, transition("c1", i+1, handoff.TransitionRequested))
	}
	ts = append(ts, transition("c1", 7, handoff.TransitionProgress)) // filtered out
	f.hooks.Transitions(ts)                                          // Run not started: nothing is sent yet
	require.InDelta(t, 3, testutil.ToFloat64(f.metrics.Dropped.WithLabelValues("agent")), 0)
	require.InDelta(t, 3, testutil.ToFloat64(f.metrics.Queued.WithLabelValues("agent")), 0)
	f.run()
	require.Eventually(t, func() bool { return len(f.recv.ids()) == 3 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, []string{"c1-ev-4", "c1-ev-5", "c1-ev-6"}, f.recv.ids())
}

// TestWebhookKeepsEachCallInOrder: with several POSTs in flight, each
// call's transitions still arrive in order.
func TestWebhookKeepsEachCallInOrder(t *testing.T) {
	f := newWebhookFixture(t, Endpoint{MaxInFlight: 4, MaxQueue: 1000}, 500, 500, 500)
	f.run()
	for seq := range uint32(20) {
		var batch []handoff.Transition
		for c := range 5 {
			batch = append(batch, transition(fmt.Sprintf("call-%d", c), seq+1, handoff.TransitionProgress))
		}
		f.hooks.Transitions(batch)
	}
	require.Eventually(t, func() bool { return len(f.recv.ids()) == 100 }, 10*time.Second, 5*time.Millisecond)
	last := map[string]uint32{}
	f.recv.mu.Lock()
	defer f.recv.mu.Unlock()
	for _, p := range f.recv.got {
		require.Equal(t, last[p.CallID]+1, p.Seq, "call %s out of order", p.CallID)
		last[p.CallID] = p.Seq
	}
}

// TestHubBoundsStreamsAndDropsTheSlow: the hub refuses streams beyond its
// bounds (per instance, per call), and a stream that does not read is
// cut once its buffer is full rather than blocking the fold.
func TestHubBoundsStreamsAndDropsTheSlow(t *testing.T) {
	metrics := NewHubMetrics(prometheus.NewRegistry())
	hub := NewHub(2, 1, metrics)
	a, err := hub.Subscribe("c1")
	require.NoError(t, err)
	_, err = hub.Subscribe("c1")
	require.ErrorIs(t, err, ErrTooManyForCall)
	b, err := hub.Subscribe("c2")
	require.NoError(t, err)
	_, err = hub.Subscribe("c3")
	require.ErrorIs(t, err, ErrTooManyStreams)
	require.InDelta(t, 2, testutil.ToFloat64(metrics.Streams), 0)

	for i := range uint32(streamBuffer + 1) {
		hub.Transitions([]handoff.Transition{transition("c1", i+1, handoff.TransitionProgress), transition("c2", i+1, handoff.TransitionProgress)})
		<-b.C // c2's client reads
	}
	n := 0
	for range a.C {
		n++
	}
	require.Equal(t, streamBuffer, n, "the buffer was delivered, then the stream closed")
	require.True(t, a.Dropped())
	require.False(t, b.Dropped())
	require.InDelta(t, 1, testutil.ToFloat64(metrics.Dropped), 0)
	a.Close() // closing a dropped stream again is harmless

	hub.Close()
	_, open := <-b.C
	require.False(t, open, "closed at shutdown")
	require.False(t, b.Dropped())
	_, err = hub.Subscribe("c4")
	require.ErrorIs(t, err, ErrClosed)
	require.InDelta(t, 0, testutil.ToFloat64(metrics.Streams), 0)
}
