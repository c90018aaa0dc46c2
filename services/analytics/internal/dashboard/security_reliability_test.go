//go:build reliability

package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/reliabilitytest"
	"github.com/baton-voice/baton/services/analytics/internal/config"
)

// lockedBuffer is a log sink the server's goroutines may write to.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// insertMany adds n calls (each its own dialed number) and n handoffs in
// the seeded window, so the list panels have more rows than any limit.
func insertMany(t *testing.T, conn driver.Conn, n int) {
	t.Helper()
	ctx := t.Context()
	b, err := conn.PrepareBatch(ctx, "INSERT INTO handoffs (command_id, call_id, requested_at, requested_ms, destination, method, reason, attempt, event_id)")
	require.NoError(t, err)
	for i := range n {
		ts := at("12:00").Add(time.Duration(i) * time.Second)
		require.NoError(t, b.Append(fmt.Sprintf("bulk-h%d", i), fmt.Sprintf("bulk-call-%d", i), ts, uint64(ts.UnixMilli()),
			"support", "REFER", "billing", uint32(1), fmt.Sprintf("ev-bulk-h%d", i)))
	}
	require.NoError(t, b.Send())
	b, err = conn.PrepareBatch(ctx, "INSERT INTO calls (call_id, started_at, started_ms, callee_number, trunk, event_id, version)")
	require.NoError(t, err)
	for i := range n {
		ts := at("12:00").Add(time.Duration(i) * time.Second)
		require.NoError(t, b.Append(fmt.Sprintf("bulk-call-%d", i), ts, uint64(ts.UnixMilli()), fmt.Sprintf("+1555%07d", i),
			"carrier-a", fmt.Sprintf("ev-bulk-c%d", i), uint64(ts.UnixMilli())))
	}
	require.NoError(t, b.Send())
}

// answer is one response, read whole.
type answer struct {
	status int
	body   string
}

// callData finds what the dashboard must not show a stranger: call ids,
// command ids and dialed numbers of the seed.
var callData = regexp.MustCompile(`call-|bulk-|\+1555`)

// TestReliabilitySecurityDashboard (issue 14, finding 6): the analytics
// dashboard served as the service serves it (dashboard.Serve, the HTTP
// limits of pkg/opshttp, a token) over TCP, over a ClickHouse holding
// 1,000+ calls and handoffs. Before, it listened on 0.0.0.0:8081 with no
// authentication, showed call ids and dialed numbers to anyone, took
// from=0&limit=1000 (six FINAL queries over 56 years, 1,000 rows a list)
// and returned ClickHouse's error text. Now every request to the page and
// the API without the token, or with a wrong one, gets 401 and no call
// data; with the token, windows over 31 days and limits over 200 rows get
// 400 before any query, and a failed query gets a generic 502 while the
// error text stays in the log. The service refuses to start off loopback
// without a token.
func TestReliabilitySecurityDashboard(t *testing.T) {
	const perKind, token = 100, "reliability-s3cret"
	const bulk = 1000
	conn := seeded(t)
	insertMany(t, conn, bulk)
	var logs lockedBuffer
	h := NewHandler(New(conn), nil, nil, slog.New(slog.NewTextHandler(&logs, nil)), func() time.Time { return to })
	h.RequireToken(token)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln, h, slog.New(slog.DiscardHandler)) }()
	client := &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
	defer func() {
		client.CloseIdleConnections()
		cancel()
		require.NoError(t, <-served)
	}()
	base := "http://" + ln.Addr().String()
	get := func(path string, auth func(*http.Request)) answer {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+path, nil)
		require.NoError(t, err)
		if auth != nil {
			auth(req)
		}
		res, err := client.Do(req)
		require.NoError(t, err)
		defer func() { _ = res.Body.Close() }()
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return answer{res.StatusCode, string(body)}
	}
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	basic := func(pass string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth("admin", pass) }
	}
	window := "?since=744h&limit=200" // the most a request may ask

	// Strangers: no token, a wrong bearer token, a wrong Basic password.
	protected := []string{"/", "/api/dashboard"}
	strangers := []struct {
		name string
		auth func(*http.Request)
	}{
		{"no token", nil},
		{"wrong bearer token", bearer("guess")},
		{"wrong Basic password", basic("guess")},
		{"token as Basic user", func(r *http.Request) { r.SetBasicAuth(token, "") }},
	}
	strangerStatus := map[int]int{}
	strangerBytes, strangerLeaks, strangerRequests := 0, 0, 0
	for _, path := range protected {
		for _, s := range strangers {
			for i := range perKind {
				q := window
				if i%2 == 1 {
					q = "?from=0&limit=1000"
				}
				a := get(path+q, s.auth)
				strangerRequests++
				strangerStatus[a.status]++
				strangerBytes += len(a.body)
				if callData.MatchString(a.body) {
					strangerLeaks++
				}
			}
		}
	}
	require.Equal(t, map[int]int{http.StatusUnauthorized: strangerRequests}, strangerStatus)
	require.Zero(t, strangerLeaks, "call data in a 401")

	// Probes and metrics stay open: they carry no call data.
	open := map[string]int{}
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		a := get(path, nil)
		require.Equal(t, http.StatusOK, a.status, path)
		require.NotRegexp(t, callData, a.body, path)
		open[path] = a.status
	}

	// With the token: the largest window and limit are served...
	a := get("/api/dashboard"+window, bearer(token))
	require.Equal(t, http.StatusOK, a.status, a.body)
	var rep Report
	require.NoError(t, json.Unmarshal([]byte(a.body), &rep))
	require.Len(t, rep.RecentHandoffs, MaxLimit)
	require.Len(t, rep.CallsByDialedNumber, MaxLimit)
	require.Equal(t, http.StatusOK, get("/"+window, basic(token)).status, "the browser's Basic prompt")
	allowedBytes := len(a.body)

	// ...and anything larger is refused before a query runs.
	tooMuch := []string{"?from=0&limit=1000", "?from=0", "?limit=1000", "?since=745h", "?limit=201",
		"?from=0&to=" + to.Format(time.RFC3339) + "&limit=1000"}
	capped := map[int]int{}
	for _, q := range tooMuch {
		for _, path := range protected {
			a := get(path+q, bearer(token))
			capped[a.status]++
			require.Equal(t, http.StatusBadRequest, a.status, path+q)
			require.NotRegexp(t, callData, a.body, path+q)
		}
	}
	// What from=0&limit=1000 ran before the caps: the same report over
	// 1970 to now, 1,000 rows a list.
	began := time.Now()
	unbounded, err := New(conn).Report(t.Context(), time.Unix(0, 0), to, 1000)
	require.NoError(t, err)
	unboundedTook := time.Since(began)
	unboundedJSON, err := json.Marshal(unbounded)
	require.NoError(t, err)

	// A failed query: its text is logged, never returned.
	require.NoError(t, conn.Exec(t.Context(), "DROP TABLE calls"))
	const failures = 20
	failed := map[int]int{}
	var failedBody string
	for range failures {
		a := get("/api/dashboard"+window, bearer(token))
		failed[a.status]++
		failedBody = a.body
		require.Equal(t, http.StatusBadGateway, a.status)
		require.NotContains(t, a.body, "calls", "a table name")
		require.NotContains(t, a.body, "doesn't exist")
		require.NotContains(t, a.body, "DB::Exception")
	}
	logged := logs.String()
	require.Contains(t, logged, "doesn't exist", "the error is logged in full")
	m := regexp.MustCompile(`err="((?:[^"\\]|\\.)*)"`).FindStringSubmatch(logged)
	require.Len(t, m, 2, "the logged error: %s", logged)
	chText := m[1]
	require.Contains(t, chText, "t_", "ClickHouse's text names the database")

	// Off loopback, the service does not start without its token.
	cfgPath := filepath.Join(t.TempDir(), "analytics.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte("http:\n  listen: 0.0.0.0:8081\n"), 0o600))
	_, errNoToken := config.Load(cfgPath, func(string) string { return "" })
	require.ErrorContains(t, errNoToken, "BATON_DASHBOARD_TOKEN is unset")
	_, err = config.Load(cfgPath, func(k string) string {
		if k == config.DashboardTokenEnv {
			return token
		}
		return ""
	})
	require.NoError(t, err)

	openPaths := make([]string, 0, len(open))
	for p := range open {
		openPaths = append(openPaths, p)
	}
	sort.Strings(openPaths)
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 9, Test: t.Name(),
		Load: fmt.Sprintf("analytics dashboard (dashboard.Serve, token set) over TCP on ClickHouse (chtest's clickhouse-server) holding %d+ calls and handoffs in the window",
			bulk),
		Faults: "finding 6: strangers read the dashboard and its API; a token holder asks for everything; a ClickHouse query fails",
		Inputs: fmt.Sprintf("%d requests to %s without the token, with a wrong bearer token, a wrong Basic password, the token as Basic user "+
			"(%d each per path; half since=744h&limit=200, half from=0&limit=1000); with the token: %s on both paths; %d requests after DROP TABLE calls",
			strangerRequests, strings.Join(protected, " and "), perKind, strings.Join(tooMuch, ", "), failures),
		Lost: fmt.Sprintf("before (issue 14): 0.0.0.0:8081 without authentication, from=0&limit=1000 ran six FINAL queries (here: %d recent handoffs and %d dialed numbers, %d bytes of JSON, %v), "+
			"ClickHouse's error text returned; now strangers: 401 x%d of %d, %d bytes in all, call data in 0; open without the token: %s (no call data); "+
			"with the token: since=744h&limit=200 gave %d handoffs and %d numbers (%d bytes), the %d larger asks got 400 x%d and 0 rows; "+
			"failed query: 502 x%d of %d, body %q (%d bytes) while the log holds the error (%d bytes of ClickHouse text naming the database and table); "+
			"http.listen 0.0.0.0:8081 without BATON_DASHBOARD_TOKEN: config error, the service does not start",
			len(unbounded.RecentHandoffs), len(unbounded.CallsByDialedNumber), len(unboundedJSON), unboundedTook.Round(time.Millisecond),
			strangerStatus[http.StatusUnauthorized], strangerRequests, strangerBytes, strings.Join(openPaths, ", "),
			len(rep.RecentHandoffs), len(rep.CallsByDialedNumber), allowedBytes, len(tooMuch)*len(protected), capped[http.StatusBadRequest],
			failed[http.StatusBadGateway], failures, strings.TrimSpace(failedBody), len(failedBody), len(chText)),
	})
}
