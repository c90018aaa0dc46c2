package precall

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// calls says every call awaits its data unless listed in done.
type calls struct {
	mu   sync.Mutex
	done map[string]bool
}

func (c *calls) AwaitsPreCall(callID, _ string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.done[callID]
}

// chanPublisher hands every published event to the test.
type chanPublisher chan events.Event

func (p chanPublisher) Publish(_ context.Context, ev events.Event) error {
	p <- ev
	return nil
}

var now = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func startedEvent(t *testing.T, callID string, at time.Time) events.Event {
	t.Helper()
	ev, err := events.New("baton/ingress", callID, &batonv1.CallStarted{
		CallerNumber: "+15551230001", CalleeNumber: "+15559870002", Trunk: "demo",
		Variables:  map[string]string{"Customer-Id": "C-42"},
		SipHeaders: []*batonv1.SipHeader{{Name: "X-Customer-Id", Value: "C-42"}, {Name: "Via", Value: "a"}, {Name: "VIA", Value: "b"}},
	}, at)
	require.NoError(t, err)
	return ev
}

// run starts a fetcher against url and returns it with its output.
func run(t *testing.T, url string, timeout time.Duration, c *calls) (*Fetcher, chanPublisher) {
	t.Helper()
	return runWith(t, Options{URL: url, Header: http.Header{"Authorization": {"Bearer s3cret"}}, Timeout: timeout,
		MaxAge: time.Minute, MaxInFlight: 2, FetchedBy: "router-1"}, c)
}

// runWith starts a fetcher with opts and returns it with its output.
func runWith(t *testing.T, opts Options, c *calls) (*Fetcher, chanPublisher) {
	t.Helper()
	pub := make(chanPublisher, 16)
	f := New(opts, c, pub, slog.New(slog.DiscardHandler), func() time.Time { return now })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return f, pub
}

func next(t *testing.T, pub chanPublisher) *batonv1.PreCallData {
	t.Helper()
	select {
	case ev := <-pub:
		require.Equal(t, events.TypePreCallData, ev.Type)
		require.Equal(t, Source, ev.Source)
		require.True(t, ev.Time.Equal(now))
		msg := ev.Data.(*batonv1.PreCallData)
		require.Equal(t, ev.Subject, msg.GetCallId())
		require.Equal(t, "router-1", msg.GetFetchedBy())
		return msg
	case <-time.After(10 * time.Second):
		t.Fatal("no PreCallData published")
		return nil
	}
}

func TestWebhookRequestAndAnswer(t *testing.T) {
	var got struct {
		sync.Mutex
		body   map[string]any
		header http.Header
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Lock()
		defer got.Unlock()
		require.Equal(t, http.MethodPost, r.Method)
		got.header = r.Header.Clone()
		require.NoError(t, json.NewDecoder(r.Body).Decode(&got.body))
		_, _ = io.WriteString(w, "{\n  \"data\": {\"account\": {\"tier\": \"gold\"}, \"n\": 12345678901234567890}\n}\n")
	}))
	defer srv.Close()
	f, pub := run(t, srv.URL, 2*time.Second, &calls{})
	f.Started(startedEvent(t, "c1", now.Add(-time.Second)))
	msg := next(t, pub)
	require.Empty(t, msg.GetError())
	require.Equal(t, `{"data":{"account":{"tier":"gold"},"n":12345678901234567890}}`, msg.GetDataJson(), "compacted, numbers as written")

	got.Lock()
	defer got.Unlock()
	require.Equal(t, "Bearer s3cret", got.header.Get("Authorization"))
	require.Equal(t, "application/json", got.header.Get("Content-Type"))
	require.Equal(t, map[string]any{
		"call_id": "c1", "caller_number": "+15551230001", "callee_number": "+15559870002", "trunk": "demo",
		"variables":   map[string]any{"Customer-Id": "C-42"},
		"sip_headers": map[string]any{"x-customer-id": []any{"C-42"}, "via": []any{"a", "b"}},
	}, got.body)
}

func TestWebhookFailuresArePublishedAsErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"status", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) },
			"webhook answered 503 Service Unavailable"},
		{"not an object", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `["gold"]`) },
			"want a JSON object, got a list"},
		{"not JSON", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `<html>`) }, "not JSON"},
		{"too large", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, `{"a":"`+strings.Repeat("x", handoff.MaxPreCallBytes)+`"}`)
		}, "more than 65536"},
		{"timeout", func(w http.ResponseWriter, r *http.Request) {
			// Reading the body lets the server notice the client hang up.
			_, _ = io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
		}, "Client.Timeout exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			f, pub := run(t, srv.URL+"/hook?key=secret", 300*time.Millisecond, &calls{})
			f.Started(startedEvent(t, "c1", now))
			msg := next(t, pub)
			require.Empty(t, msg.GetDataJson())
			require.Contains(t, msg.GetError(), tc.want)
			require.NotContains(t, msg.GetError(), "secret", "the URL is not published")
		})
	}

	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		f, pub := run(t, url, time.Second, &calls{})
		f.Started(startedEvent(t, "c1", now))
		require.Contains(t, next(t, pub).GetError(), "connection refused")
	})
}

// TestRedirectsAreNotFollowed (issue 14, finding 7): a webhook answering
// a redirect to another host must not hand that host the API key and the
// caller's data, nor make its answer the call's results. The redirect is
// a failed fetch, published as PreCallData with an error naming the
// status, and its target receives nothing.
func TestRedirectsAreNotFollowed(t *testing.T) {
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			var got struct {
				sync.Mutex
				requests int
				apiKeys  []string
				bodies   []string
			}
			elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body) // recorded as far as it came
				got.Lock()
				got.requests++
				got.apiKeys = append(got.apiKeys, r.Header.Get("X-Api-Key"))
				got.bodies = append(got.bodies, string(body))
				got.Unlock()
				_, _ = io.WriteString(w, `{"data":{"account":{"tier":"gold"}}}`)
			}))
			defer elsewhere.Close()
			var hooked atomic.Int32
			hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hooked.Add(1)
				_, _ = io.Copy(io.Discard, r.Body)
				http.Redirect(w, r, elsewhere.URL+"/steal", code)
			}))
			defer hook.Close()

			f, pub := runWith(t, Options{URL: hook.URL + "/hook", Header: http.Header{"X-Api-Key": {"k3y"}},
				Timeout: 2 * time.Second, MaxAge: time.Minute, MaxInFlight: 2, FetchedBy: "router-1"}, &calls{})
			f.Started(startedEvent(t, "c1", now))
			msg := next(t, pub)

			require.Equal(t, int32(1), hooked.Load(), "the webhook itself was called once")
			require.Empty(t, msg.GetDataJson(), "the redirect target's answer is not the call's results")
			require.Contains(t, msg.GetError(), fmt.Sprintf("webhook answered %d", code))
			require.Contains(t, msg.GetError(), "redirects are refused")
			require.NotContains(t, msg.GetError(), "steal", "the Location is not published")
			got.Lock()
			defer got.Unlock()
			require.Zero(t, got.requests, "the redirect target got a request: X-Api-Key %q, bodies %q", got.apiKeys, got.bodies)
		})
	}
}

func TestNoFetchForOldOrAlreadyFoldedCalls(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, `{}`)
	}))
	defer srv.Close()
	f, pub := run(t, srv.URL, time.Second, &calls{done: map[string]bool{"folded": true}})
	f.Started(startedEvent(t, "old", now.Add(-2*time.Minute)))
	f.Started(startedEvent(t, "folded", now))
	f.Started(startedEvent(t, "fresh", now))
	msg := next(t, pub)
	require.Equal(t, "fresh", msg.GetCallId())
	require.Equal(t, "{}", msg.GetDataJson())
	require.Equal(t, int32(1), hits.Load(), "only the fresh call was fetched")
	select {
	case ev := <-pub:
		t.Fatalf("unexpected %s for %s", ev.Type, ev.Subject)
	default:
	}
}

func TestParseHeaders(t *testing.T) {
	h, err := ParseHeaders("Authorization: Bearer abc:def\n\n X-Tenant : acme \r\n")
	require.NoError(t, err)
	require.Equal(t, http.Header{"Authorization": {"Bearer abc:def"}, "X-Tenant": {"acme"}}, h)
	for in, want := range map[string]string{
		"":                   "no header",
		"Authorization":      `line 1: want "Name: value"`,
		"ok: 1\nbad name: x": "line 2",
		"X: a\x00b":          "control character",
	} {
		_, err := ParseHeaders(in)
		require.ErrorContains(t, err, want, "%q", in)
	}
}
