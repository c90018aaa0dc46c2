package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/config"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// fakeView is a calls source the test drives: one live call, c1, whose
// marks and agent stream the test sets; every change closes Changed, as
// a Commit does.
type fakeView struct {
	mu      sync.Mutex
	live    bool
	stream  bool
	marks   []string
	changed chan struct{}
}

func newFakeView(stream bool, marks ...string) *fakeView {
	return &fakeView{live: true, stream: stream, marks: marks, changed: make(chan struct{})}
}

func (v *fakeView) View(id string) (handoff.CallView, bool, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if id != "c1" || !v.live {
		return handoff.CallView{}, false, false
	}
	return handoff.CallView{CallID: "c1", MarksPlayed: slices.Clone(v.marks), AgentStream: v.stream}, true, false
}

func (v *fakeView) MarkState(id, mark string) handoff.MarkState {
	v.mu.Lock()
	defer v.mu.Unlock()
	if id != "c1" || !v.live {
		return handoff.MarkState{}
	}
	return handoff.MarkState{Found: true, Stream: v.stream, Played: slices.Contains(v.marks, mark)}
}

func (v *fakeView) Changed() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.changed
}

// update changes the call and closes Changed.
func (v *fakeView) update(change func(v *fakeView)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	change(v)
	close(v.changed)
	v.changed = make(chan struct{})
}

// recorder is a publisher that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	events []events.Event
}

func (p *recorder) Publish(_ context.Context, ev events.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, ev)
	return nil
}

// requests returns the HandoffRequested published so far.
func (p *recorder) requests() []*batonv1.HandoffRequested {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*batonv1.HandoffRequested
	for _, ev := range p.events {
		if m, ok := ev.Data.(*batonv1.HandoffRequested); ok {
			out = append(out, m)
		}
	}
	return out
}

type markFixture struct {
	view    *fakeView
	pub     *recorder
	api     *Server
	metrics *Metrics
	stop    func()
}

// newMarkFixture serves the API over view, with Run going until stop (or
// the test's end).
func newMarkFixture(t *testing.T, view *fakeView, maxWaits int) *markFixture {
	t.Helper()
	c := config.Default("h")
	require.NoError(t, pkgconfig.Parse("router.yaml", []byte(routerYAML), &c))
	table, err := c.Table()
	require.NoError(t, err)
	pub := &recorder{}
	metrics := NewMetrics(prometheus.NewRegistry())
	a := New(view, table, pub, []string{"tok"}, slog.New(slog.DiscardHandler), time.Now, metrics).WithMaxMarkWaits(maxWaits)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Run(ctx)
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return &markFixture{view: view, pub: pub, api: a, metrics: metrics, stop: stop}
}

func (f *markFixture) post(t *testing.T, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v1/calls/c1/handoff", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer tok")
	rec := httptest.NewRecorder()
	f.api.ServeHTTP(rec, req)
	return rec
}

// TestHandoffWaitsForItsMark: a handoff asked for after a mark that has
// not played is answered 202 at once and published only when the view
// shows the mark played, with mark_wait played.
func TestHandoffWaitsForItsMark(t *testing.T) {
	f := newMarkFixture(t, newFakeView(true, "hello"), 10)
	rec := f.post(t, `{"destination":"support","after_mark":"goodbye"}`)
	require.Equal(t, http.StatusAccepted, rec.Code, rec.Body.String())
	require.Contains(t, rec.Body.String(), `"mark_wait":"waiting"`)

	// Other commits (another mark) do not release it.
	f.view.update(func(v *fakeView) { v.marks = append(v.marks, "not-yet") })
	require.Empty(t, f.pub.requests(), "published before its mark played")

	f.view.update(func(v *fakeView) { v.marks = append(v.marks, "goodbye") })
	require.Eventually(t, func() bool { return len(f.pub.requests()) == 1 }, 5*time.Second, 5*time.Millisecond)
	got := f.pub.requests()[0]
	require.Equal(t, "goodbye", got.GetAfterMark())
	require.Equal(t, handoff.MarkPlayed, got.GetMarkWait())
	require.Equal(t, "support", got.GetDestination())
	require.Contains(t, rec.Body.String(), got.GetRequestId(), "the 202 named the request published")
	require.InDelta(t, 1, testutil.ToFloat64(f.metrics.MarkWaits.WithLabelValues(handoff.MarkPlayed)), 0)
	require.InDelta(t, 0, testutil.ToFloat64(f.metrics.MarkWaiting), 0)
}

// TestHandoffAfterMarkPublishedAtOnce: a mark that already played, or a
// call with no agent stream, publishes the request at once, saying so.
func TestHandoffAfterMarkPublishedAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		view *fakeView
		want string
	}{
		{"already played", newFakeView(true, "goodbye"), handoff.MarkAlreadyPlayed},
		{"no agent stream", newFakeView(false), handoff.MarkNoStream},
		{"no agent stream, mark played before it went", newFakeView(false, "goodbye"), handoff.MarkNoStream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newMarkFixture(t, tc.view, 10)
			rec := f.post(t, `{"after_mark":"goodbye","mark_timeout_ms":30000}`)
			require.Equal(t, http.StatusAccepted, rec.Code, rec.Body.String())
			require.Contains(t, rec.Body.String(), fmt.Sprintf(`"mark_wait":%q`, tc.want))
			reqs := f.pub.requests()
			require.Len(t, reqs, 1, "published before the answer")
			require.Equal(t, tc.want, reqs[0].GetMarkWait())
			require.Equal(t, "goodbye", reqs[0].GetAfterMark())
		})
	}
}

// TestHandoffAfterMarkTimesOutAndGoesAhead: a mark that never plays
// releases the request after mark_timeout_ms, with mark_wait timeout; a
// stream that disconnects during the wait releases it as no_stream.
func TestHandoffAfterMarkTimesOutAndGoesAhead(t *testing.T) {
	f := newMarkFixture(t, newFakeView(true), 10)
	require.Equal(t, http.StatusAccepted, f.post(t, `{"after_mark":"never","mark_timeout_ms":100}`).Code)
	require.Eventually(t, func() bool { return len(f.pub.requests()) == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, handoff.MarkTimeout, f.pub.requests()[0].GetMarkWait())

	require.Equal(t, http.StatusAccepted, f.post(t, `{"after_mark":"never","mark_timeout_ms":30000}`).Code)
	f.view.update(func(v *fakeView) { v.stream = false })
	require.Eventually(t, func() bool { return len(f.pub.requests()) == 2 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, handoff.MarkNoStream, f.pub.requests()[1].GetMarkWait())
}

// TestMarkWaitsAreBounded: beyond max waiting requests the API answers
// 429 with Retry-After and publishes nothing; a slot freed is usable
// again. A call that goes away releases its waits without a publish.
func TestMarkWaitsAreBounded(t *testing.T) {
	f := newMarkFixture(t, newFakeView(true), 2)
	for range 2 {
		require.Equal(t, http.StatusAccepted, f.post(t, `{"after_mark":"m"}`).Code)
	}
	rec := f.post(t, `{"after_mark":"m"}`)
	require.Equal(t, http.StatusTooManyRequests, rec.Code, rec.Body.String())
	require.Equal(t, "1", rec.Header().Get("Retry-After"))
	require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
	require.InDelta(t, 1, testutil.ToFloat64(f.metrics.MarkWaits.WithLabelValues(waitFull)), 0)

	f.view.update(func(v *fakeView) { v.live = false })
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(f.metrics.MarkWaits.WithLabelValues(waitCallGone)) == 2
	}, 5*time.Second, 5*time.Millisecond)
	require.Empty(t, f.pub.requests(), "a call gone is not handed off")
	f.view.update(func(v *fakeView) { v.live = true })
	require.Equal(t, http.StatusAccepted, f.post(t, `{"after_mark":"m"}`).Code, "the slots were freed")
}

// TestMarkWaitsStopAtShutdown: Run returns when its context ends, with
// the waiting request abandoned (not published), and no request is taken
// afterwards.
func TestMarkWaitsStopAtShutdown(t *testing.T) {
	f := newMarkFixture(t, newFakeView(true), 10)
	require.Equal(t, http.StatusAccepted, f.post(t, `{"after_mark":"m","mark_timeout_ms":30000}`).Code)
	require.Eventually(t, func() bool { return testutil.ToFloat64(f.metrics.MarkWaiting) == 1 }, 5*time.Second, 5*time.Millisecond)
	f.stop() // returns only once the waiting goroutine has
	require.Empty(t, f.pub.requests())
	require.InDelta(t, 1, testutil.ToFloat64(f.metrics.MarkWaits.WithLabelValues(waitAbandoned)), 0)
	require.Equal(t, http.StatusTooManyRequests, f.post(t, `{"after_mark":"m"}`).Code)
}

func TestHandoffMarkFieldsAreValidated(t *testing.T) {
	f := newMarkFixture(t, newFakeView(true), 10)
	for _, tc := range []struct{ name, body, detail string }{
		{"mark too long", fmt.Sprintf(`{"after_mark":%q}`, strings.Repeat("m", 129)), "after_mark: at most 128 bytes"},
		{"mark with a control character", `{"after_mark":"a\u0000b"}`, "after_mark"},
		{"timeout too short", `{"after_mark":"m","mark_timeout_ms":99}`, "mark_timeout_ms: 99: want 100 to 30000"},
		{"timeout too long", `{"after_mark":"m","mark_timeout_ms":30001}`, "mark_timeout_ms: 30001: want 100 to 30000"},
		{"timeout without a mark", `{"mark_timeout_ms":1000}`, "mark_timeout_ms: only with after_mark"},
		{"timeout not a number", `{"after_mark":"m","mark_timeout_ms":"5s"}`, "invalid JSON body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := f.post(t, tc.body)
			require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
			require.Contains(t, rec.Body.String(), tc.detail)
		})
	}
	require.Empty(t, f.pub.requests())
	require.Equal(t, http.StatusAccepted, f.post(t, fmt.Sprintf(`{"after_mark":%q,"mark_timeout_ms":100}`, strings.Repeat("m", 128))).Code)
}

// whisper_url is checked before anything is published: an absolute
// http(s) URL, no user info, bounded; a valid one rides in the request.
func TestHandoffWhisperURLIsValidated(t *testing.T) {
	f := newMarkFixture(t, newFakeView(true), 10)
	for _, tc := range []struct{ name, body, detail string }{
		{"not http", `{"whisper_url":"ftp://tts.example.com/a.wav"}`, "whisper_url: want an absolute http:// or https:// URL"},
		{"relative", `{"whisper_url":"/a.wav"}`, "whisper_url: want an absolute"},
		{"user info", `{"whisper_url":"https://u:p@tts.example.com/a.wav"}`, "whisper_url: no user info"},
		{"too long", fmt.Sprintf(`{"whisper_url":"https://tts.example.com/%s"}`, strings.Repeat("a", 2048)), "whisper_url: at most 2048 bytes"},
		{"control character", `{"whisper_url":"https://tts.example.com/a\u000a.wav"}`, "whisper_url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := f.post(t, tc.body)
			require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
			require.Contains(t, rec.Body.String(), tc.detail)
		})
	}
	require.Empty(t, f.pub.requests())
	require.Equal(t, http.StatusAccepted, f.post(t, `{"whisper_url":"https://tts.example.com/summary/42.wav?sig=x"}`).Code)
	reqs := f.pub.requests()
	require.Len(t, reqs, 1)
	require.Equal(t, "https://tts.example.com/summary/42.wav?sig=x", reqs[0].GetWhisperUrl())
}
