package api

import (
	"bufio"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/config"
	"github.com/baton-voice/baton/services/router/internal/handoff"
	"github.com/baton-voice/baton/services/router/internal/push"
)

// streamFixture serves the API over a fold whose transitions feed a hub,
// as the call view does, with one live call c1.
func streamFixture(t *testing.T, heartbeat time.Duration, tune ...func(*http.Server)) (*httptest.Server, *handoff.Fold) {
	t.Helper()
	c := config.Default("h")
	require.NoError(t, pkgconfig.Parse("router.yaml", []byte(routerYAML), &c))
	table, err := c.Table()
	require.NoError(t, err)
	hub := push.NewHub(10, 1, push.NewHubMetrics(prometheus.NewRegistry()))
	fold := handoff.New(table, slog.New(slog.DiscardHandler)).WithSink(hub).WithHistory(8)
	ev, err := events.New("baton/ingress", "c1", &batonv1.CallStarted{}, at)
	require.NoError(t, err)
	fold.Apply(t.Context(), ev)
	fold.Commit()
	a := New(fold, table, &recorder{}, []string{"tok"}, slog.New(slog.DiscardHandler), time.Now, nil).WithStreams(hub, heartbeat)
	// Tuned before it starts: the server reads its settings once serving.
	srv := httptest.NewUnstartedServer(a)
	for _, f := range tune {
		f(srv.Config)
	}
	srv.Start()
	t.Cleanup(func() { hub.Close(); srv.Close() })
	return srv, fold
}

func openStream(t *testing.T, srv *httptest.Server, callID string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/v1/calls/"+callID+"/events", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	return resp
}

// TestEventStreamHeartbeatsAndBounds: an idle stream gets heartbeat
// comments; a second stream for the same call beyond
// max_streams_per_call is 429 with Retry-After; an unknown call is 404;
// a transition committed while connected arrives with its id.
func TestEventStreamHeartbeatsAndBounds(t *testing.T) {
	srv, fold := streamFixture(t, 20*time.Millisecond)
	resp := openStream(t, srv, "c1")
	defer func() { _ = resp.Body.Close() }()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
	lines := bufio.NewScanner(resp.Body)
	require.True(t, lines.Scan())
	require.Equal(t, ": heartbeat", lines.Text())

	second := openStream(t, srv, "c1")
	require.NoError(t, second.Body.Close())
	require.Equal(t, http.StatusTooManyRequests, second.StatusCode)
	require.Equal(t, "1", second.Header.Get("Retry-After"))
	unknown := openStream(t, srv, "nope")
	require.NoError(t, unknown.Body.Close())
	require.Equal(t, http.StatusNotFound, unknown.StatusCode)

	ev, err := events.New("baton/api", "c1", &batonv1.HandoffRequested{RequestId: "r1", Destination: "support"}, at)
	require.NoError(t, err)
	fold.Apply(t.Context(), ev)
	fold.Commit()
	var got []string
	for lines.Scan() && len(got) < 2 {
		if l := lines.Text(); strings.HasPrefix(l, "id: ") || strings.HasPrefix(l, "event: ") {
			got = append(got, l)
		}
	}
	require.Equal(t, []string{"id: " + ev.ID, "event: requested"}, got)
}

// TestEventStreamOutlivesTheServerTimeouts: a stream lives past the
// server's read and write timeouts (opshttp.DefaultLimits sets both: 30 s
// and 75 s), which would otherwise cut it.
func TestEventStreamOutlivesTheServerTimeouts(t *testing.T) {
	srv, _ := streamFixture(t, 20*time.Millisecond, func(s *http.Server) {
		s.ReadTimeout, s.WriteTimeout = 100*time.Millisecond, 100*time.Millisecond
	})
	resp := openStream(t, srv, "c1")
	defer func() { _ = resp.Body.Close() }()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	lines := bufio.NewScanner(resp.Body)
	deadline := time.Now().Add(500 * time.Millisecond) // five times both timeouts
	for time.Now().Before(deadline) {
		require.True(t, lines.Scan(), "the stream was cut: %v", lines.Err())
	}
}
