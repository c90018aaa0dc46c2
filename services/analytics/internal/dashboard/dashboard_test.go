package dashboard

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/schemas"
	"github.com/baton-voice/baton/services/analytics/internal/chconn"
	"github.com/baton-voice/baton/services/analytics/internal/chtest"
	"github.com/baton-voice/baton/services/analytics/internal/migrate"

	"github.com/baton-voice/baton/schemas/panels"
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

// The seeded window: 10:00 to 13:00 UTC on 2025-06-01.
var (
	day      = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	from, to = day.Add(10 * time.Hour), day.Add(13 * time.Hour)
)

// at is HH:MM on the seeded day; the seed's literals are well-formed.
func at(hhmm string) time.Time {
	t, _ := time.Parse("15:04", hhmm)
	return day.Add(time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute)
}

type seedOutcome struct {
	status  string
	code    int32
	elapsed uint64
}

type seedHandoff struct {
	id, reason, destination, method, time string
	outcomes                              []seedOutcome
}

// seedHandoffs: h8 and h9 fall outside the window.
var seedHandoffs = []seedHandoff{
	{"h1", "billing", "support", "REFER", "10:05", []seedOutcome{{"accepted", 202, 20}, {"progress", 180, 300}, {"succeeded", 200, 1200}}},
	{"h2", "billing", "support", "REFER", "10:20", []seedOutcome{{"accepted", 202, 30}, {"succeeded", 200, 800}}},
	{"h3", "billing", "support", "REFER", "11:10", []seedOutcome{{"failed", 603, 100}}},
	{"h4", "technical", "sales", "REFER", "11:30", []seedOutcome{{"progress", 180, 200}, {"succeeded", 200, 2000}}},
	{"h5", "technical", "sales", "INVITE", "11:45", []seedOutcome{{"progress", 180, 400}, {"progress", 200, 1500}, {"succeeded", 200, 2500}}},
	{"h6", "complaint", "support", "BYE", "12:15", []seedOutcome{{"succeeded", 200, 50}}},
	{"h7", "complaint", "sales", "INVITE", "12:30", []seedOutcome{{"accepted", 100, 10}}},
	{"h8", "billing", "support", "REFER", "09:00", []seedOutcome{{"succeeded", 200, 999}}},
	{"h9", "billing", "support", "REFER", "13:30", []seedOutcome{{"failed", 486, 999}}},
}

// seedCalls: dialed number and start; the last one is outside the window.
var seedCalls = []struct{ id, callee, time string }{
	{"c1", "+15550100", "10:01"}, {"c2", "+15550100", "10:30"}, {"c3", "+15550100", "12:59"},
	{"c4", "+15550199", "11:00"}, {"c5", "+15550199", "11:05"},
	{"c6", "+15550123", "12:00"},
	{"c7", "+15550123", "13:00"},
}

// seedStreams are agent streams (AgentDisconnected rows); a6 ended
// outside the window, a3 and a8 never connected (no stream sid).
var seedStreams = []struct {
	call, sid, time, reason, action            string
	played, late, dropped, cleared, maxQueueMS uint64
}{
	{"a1", "s1", "10:05", "handoff", "none", 900, 2, 0, 10, 400},
	{"a2", "s2", "10:30", "call_ended", "none", 500, 0, 5, 0, 1200},
	{"a3", "", "10:40", "connect_failed", "hangup", 0, 0, 0, 0, 0},
	{"a4", "s4", "11:15", "agent_closed", "handoff", 300, 7, 50, 20, 6000},
	{"a5", "s5", "11:50", "write_timeout", "play_then_hangup", 100, 1, 0, 0, 200},
	{"a6", "s6", "09:00", "connect_failed", "hangup", 0, 0, 0, 0, 0},
	{"a8", "", "12:10", "connect_failed", "hangup", 0, 0, 0, 0, 0},
}

// seedMetrics are agent metrics; the last one is outside the window.
var seedMetrics = []struct {
	id, call, time, name string
	value                float64
}{
	{"m1", "a1", "10:02", "llm_latency_ms", 100},
	{"m2", "a1", "10:03", "llm_latency_ms", 200},
	{"m3", "a2", "10:25", "llm_latency_ms", 300},
	{"m4", "a4", "11:12", "llm_latency_ms", 1000},
	{"m5", "a1", "10:04", "sentiment", -0.5},
	{"m6", "a5", "11:40", "sentiment", 0.25},
	{"m7", "a6", "08:59", "sentiment", 9},
}

// seeded is a database with migrations applied and the seed inserted
// twice, as a replay would: every figure must count each row once.
func seeded(t *testing.T) driver.Conn {
	t.Helper()
	cfg := server.Config(t)
	migrations, err := fs.Sub(schemas.ClickHouse, "clickhouse")
	require.NoError(t, err)
	_, err = migrate.Run(t.Context(), chconn.Options(cfg, cfg.Database), migrations, "", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	conn := server.Conn(t, cfg)
	for range 2 {
		insertSeed(t, conn)
	}
	return conn
}

func insertSeed(t *testing.T, conn driver.Conn) {
	t.Helper()
	ctx := t.Context()
	b, err := conn.PrepareBatch(ctx, "INSERT INTO handoffs (command_id, call_id, requested_at, requested_ms, destination, method, reason, attempt, event_id)")
	require.NoError(t, err)
	for _, h := range seedHandoffs {
		ts := at(h.time)
		require.NoError(t, b.Append(h.id, "call-"+h.id, ts, uint64(ts.UnixMilli()), h.destination, h.method, h.reason, uint32(1), "ev-"+h.id))
	}
	require.NoError(t, b.Send())
	b, err = conn.PrepareBatch(ctx, "INSERT INTO transfer_outcomes (event_id, command_id, call_id, time, time_ms, status, method, destination, sip_code, elapsed_ms)")
	require.NoError(t, err)
	for _, h := range seedHandoffs {
		for i, o := range h.outcomes {
			ts := at(h.time).Add(time.Duration(o.elapsed) * time.Millisecond)
			require.NoError(t, b.Append(fmt.Sprintf("ev-%s-%d", h.id, i), h.id, "call-"+h.id, ts, uint64(ts.UnixMilli()),
				o.status, h.method, h.destination, o.code, o.elapsed))
		}
	}
	require.NoError(t, b.Send())
	b, err = conn.PrepareBatch(ctx, "INSERT INTO calls (call_id, started_at, started_ms, callee_number, trunk, event_id, version)")
	require.NoError(t, err)
	for _, c := range seedCalls {
		ts := at(c.time)
		require.NoError(t, b.Append(c.id, ts, uint64(ts.UnixMilli()), c.callee, "carrier-a", "ev-"+c.id, uint64(ts.UnixMilli())))
	}
	require.NoError(t, b.Send())
	b, err = conn.PrepareBatch(ctx, "INSERT INTO agent_streams (event_id, call_id, stream_sid, ended_at, ended_ms, reason, action, "+
		"frames_played, late, dropped, cleared, max_queue_ms)")
	require.NoError(t, err)
	for _, st := range seedStreams {
		ts := at(st.time)
		require.NoError(t, b.Append("ev-"+st.call+"-end", "call-"+st.call, st.sid, ts, uint64(ts.UnixMilli()), st.reason, st.action,
			st.played, st.late, st.dropped, st.cleared, st.maxQueueMS))
	}
	require.NoError(t, b.Send())
	b, err = conn.PrepareBatch(ctx, "INSERT INTO agent_metrics (event_id, call_id, time, time_ms, name, value)")
	require.NoError(t, err)
	for _, m := range seedMetrics {
		ts := at(m.time)
		require.NoError(t, b.Append(m.id, "call-"+m.call, ts, uint64(ts.UnixMilli()), m.name, m.value))
	}
	require.NoError(t, b.Send())
}

func u64(v uint64) *uint64 { return &v }

// want is the report of the seed over [from, to) with limit 3.
func want() *Report {
	return &Report{
		From: from, To: to, ServerVersion: "",
		HandoffsByReason: []ReasonHour{
			{Hour: at("10:00"), Reason: "billing", Handoffs: 2},
			{Hour: at("11:00"), Reason: "billing", Handoffs: 1},
			{Hour: at("11:00"), Reason: "technical", Handoffs: 2},
			{Hour: at("12:00"), Reason: "complaint", Handoffs: 2},
		},
		SuccessByDestination: []DestinationRate{
			{Destination: "sales", Method: "INVITE", Handoffs: 2, Succeeded: 1, Failed: 0, Pending: 1, SuccessRate: 1},
			{Destination: "sales", Method: "REFER", Handoffs: 1, Succeeded: 1, SuccessRate: 1},
			{Destination: "support", Method: "BYE", Handoffs: 1, Succeeded: 1, SuccessRate: 1},
			{Destination: "support", Method: "REFER", Handoffs: 3, Succeeded: 2, Failed: 1, SuccessRate: 2.0 / 3.0},
		},
		TimeToTransfer: []TransferTime{
			{Method: "BYE", Transfers: 1, P50MS: 50, P90MS: 50, P99MS: 50, MaxMS: 50},
			{Method: "INVITE", Transfers: 1, P50MS: 2500, P90MS: 2500, P99MS: 2500, MaxMS: 2500},
			// Sorted 800, 1200, 2000: positions floor(3*0.5)=1, floor(3*0.9)=2.
			{Method: "REFER", Transfers: 3, P50MS: 1200, P90MS: 2000, P99MS: 2000, MaxMS: 2000},
		},
		// Most calls first, then by number; limit 3.
		CallsByDialedNumber: []DialedNumber{
			{Number: "+15550100", Calls: 3},
			{Number: "+15550199", Calls: 2},
			{Number: "+15550123", Calls: 1},
		},
		RecentHandoffs: []Handoff{
			{RequestedAt: at("12:30"), CallID: "call-h7", CommandID: "h7", Reason: "complaint", Destination: "sales", Method: "INVITE", Outcome: "pending"},
			{RequestedAt: at("12:15"), CallID: "call-h6", CommandID: "h6", Reason: "complaint", Destination: "support", Method: "BYE", Outcome: "succeeded", SIPCode: 200, TimeToTransferMS: u64(50)},
			{RequestedAt: at("11:45"), CallID: "call-h5", CommandID: "h5", Reason: "technical", Destination: "sales", Method: "INVITE", Outcome: "succeeded", SIPCode: 200, TimeToTransferMS: u64(2500)},
		},
		AgentStreamsByReason: []StreamReasonHour{
			{Hour: at("10:00"), Reason: "call_ended", Streams: 1},
			{Hour: at("10:00"), Reason: "connect_failed", Streams: 1},
			{Hour: at("10:00"), Reason: "handoff", Streams: 1},
			{Hour: at("11:00"), Reason: "agent_closed", Streams: 1},
			{Hour: at("11:00"), Reason: "write_timeout", Streams: 1},
			{Hour: at("12:00"), Reason: "connect_failed", Streams: 1},
		},
		// Not call_ended or handoff; the most streams first, then by reason.
		AgentFailures: []AgentFailure{
			{Reason: "connect_failed", Action: "hangup", Streams: 2, Calls: 2},
			{Reason: "agent_closed", Action: "handoff", Streams: 1, Calls: 1},
			{Reason: "write_timeout", Action: "play_then_hangup", Streams: 1, Calls: 1},
		},
		// 10:00: queues 0, 400, 1200, p95 at floor(3*0.95)=2. 11:00: 200,
		// 6000, p95 at floor(2*0.95)=1.
		AgentPlayout: []PlayoutHour{
			{Hour: at("10:00"), Streams: 3, FramesPlayed: 1400, LateFrames: 2, DroppedFrames: 5, ClearedFrames: 10, P95MaxQueueMS: 1200, DeepestQueueMS: 1200},
			{Hour: at("11:00"), Streams: 2, FramesPlayed: 400, LateFrames: 8, DroppedFrames: 50, ClearedFrames: 20, P95MaxQueueMS: 6000, DeepestQueueMS: 6000},
			{Hour: at("12:00"), Streams: 1},
		},
		// llm_latency_ms sorted 100, 200, 300, 1000: p50 at 2, p95 at 3.
		AgentMetricsByName: []MetricSummary{
			{Name: "llm_latency_ms", Samples: 4, Calls: 3, Avg: 400, Min: 100, P50: 300, P95: 1000, Max: 1000},
			{Name: "sentiment", Samples: 2, Calls: 2, Avg: -0.125, Min: -0.5, P50: 0.25, P95: 0.25, Max: 0.25},
		},
	}
}

// Every panel's exact figures over the seed, inserted twice.
func TestPanels(t *testing.T) {
	conn := seeded(t)
	got, err := New(conn).Report(t.Context(), from, to, 3)
	require.NoError(t, err)
	v, err := ParseVersion(got.ServerVersion)
	require.NoError(t, err)
	require.True(t, v.AtLeast(18, 16), got.ServerVersion)
	got.ServerVersion = ""

	w := want()
	require.Equal(t, w.HandoffsByReason, got.HandoffsByReason)
	require.Len(t, got.SuccessByDestination, len(w.SuccessByDestination))
	for i := range w.SuccessByDestination {
		require.InDelta(t, w.SuccessByDestination[i].SuccessRate, got.SuccessByDestination[i].SuccessRate, 1e-9)
		got.SuccessByDestination[i].SuccessRate = w.SuccessByDestination[i].SuccessRate
	}
	require.Equal(t, w.SuccessByDestination, got.SuccessByDestination)
	require.Equal(t, w.TimeToTransfer, got.TimeToTransfer)
	require.Equal(t, w.CallsByDialedNumber, got.CallsByDialedNumber)
	require.Equal(t, w.RecentHandoffs, got.RecentHandoffs)
	require.Equal(t, w.AgentStreamsByReason, got.AgentStreamsByReason)
	require.Equal(t, w.AgentFailures, got.AgentFailures)
	require.Equal(t, w.AgentPlayout, got.AgentPlayout)
	require.Equal(t, w.AgentMetricsByName, got.AgentMetricsByName)
	require.Equal(t, w, got)
}

// handoff_facts: the time to ringing, answer and bridge of each handoff.
func TestHandoffFacts(t *testing.T) {
	conn := seeded(t)
	tests := []struct {
		id                      string
		outcome                 string
		code                    int32
		ringing, answer, bridge *uint64
	}{
		{"h1", "succeeded", 200, u64(300), u64(1200), u64(1200)},
		{"h3", "failed", 603, nil, nil, nil},
		{"h5", "succeeded", 200, u64(400), u64(1500), u64(2500)},
		{"h7", "pending", 0, nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			var (
				outcome                 string
				code                    int32
				ringing, answer, bridge *uint64
			)
			require.NoError(t, conn.QueryRow(t.Context(), `SELECT outcome, sip_code, time_to_ringing_ms,
				time_to_answer_ms, time_to_bridge_ms FROM handoff_facts WHERE command_id = ?`, tt.id).
				Scan(&outcome, &code, &ringing, &answer, &bridge))
			require.Equal(t, tt.outcome, outcome)
			require.Equal(t, tt.code, code)
			require.Equal(t, tt.ringing, ringing, "ringing")
			require.Equal(t, tt.answer, answer, "answer")
			require.Equal(t, tt.bridge, bridge, "bridge")
		})
	}
	var n uint64
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT count() FROM handoff_facts").Scan(&n))
	require.Equal(t, uint64(len(seedHandoffs)), n, "one row per command despite the replayed seed")
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT sum(calls) FROM calls_hourly").Scan(&n))
	require.Equal(t, uint64(len(seedCalls)), n)
}

// An empty window gives empty lists, never null, on the API.
func TestEmptyWindow(t *testing.T) {
	conn := seeded(t)
	rep, err := New(conn).Report(t.Context(), day.Add(-48*time.Hour), day.Add(-24*time.Hour), 10)
	require.NoError(t, err)
	data, err := json.Marshal(rep)
	require.NoError(t, err)
	require.NotContains(t, string(data), "null")
}

// The JSON API serves the same report; the page embeds it.
func TestHTTP(t *testing.T) {
	conn := seeded(t)
	srv := httptest.NewServer(NewHandler(New(conn), nil, nil, slog.New(slog.DiscardHandler), func() time.Time { return to }))
	defer srv.Close()
	get := func(path string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
		require.NoError(t, err)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer func() { _ = res.Body.Close() }()
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res.StatusCode, string(body)
	}
	window := "?from=" + strconv.FormatInt(from.Unix(), 10) + "&to=" + to.Format(time.RFC3339) + "&limit=3"

	code, body := get("/api/dashboard" + window)
	require.Equal(t, http.StatusOK, code, body)
	var got Report
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	require.Equal(t, want().RecentHandoffs, got.RecentHandoffs)
	require.Equal(t, want().HandoffsByReason, got.HandoffsByReason)

	// since=3h back from the clock (13:00) is the same window.
	code, sinceBody := get("/api/dashboard?since=3h&limit=3")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, body, sinceBody)

	code, page := get("/" + window)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, page, `"command_id":"h7"`)
	require.NotContains(t, page, "/*REPORT*/")

	for _, bad := range []string{"?since=-1h", "?from=yesterday", "?limit=0", "?from=" + strconv.FormatInt(to.Unix(), 10)} {
		code, _ := get("/api/dashboard" + bad)
		require.Equal(t, http.StatusBadRequest, code, bad)
	}
	code, _ = get("/nope")
	require.Equal(t, http.StatusNotFound, code)
}

// The page and the API need the token when one is set; metrics and
// probes do not. Windows and limits are capped, and a failed query's
// error text stays in the log (issue 14, item 6).
func TestTokenWindowAndErrors(t *testing.T) {
	conn := seeded(t)
	var logs bytes.Buffer
	h := NewHandler(New(conn), nil, nil, slog.New(slog.NewTextHandler(&logs, nil)), func() time.Time { return to })
	h.RequireToken("s3cret")
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path string, auth func(*http.Request)) (int, http.Header, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
		require.NoError(t, err)
		if auth != nil {
			auth(req)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer func() { _ = res.Body.Close() }()
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res.StatusCode, res.Header, string(body)
	}
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	window := "?from=" + strconv.FormatInt(from.Unix(), 10) + "&to=" + to.Format(time.RFC3339) + "&limit=3"

	for _, path := range []string{"/", "/api/dashboard"} {
		code, hdr, body := get(path+window, nil)
		require.Equal(t, http.StatusUnauthorized, code, path)
		require.Contains(t, hdr.Get("WWW-Authenticate"), "Basic")
		require.NotContains(t, body, "h7", "no call data without the token")
		code, _, _ = get(path+window, bearer("wrong"))
		require.Equal(t, http.StatusUnauthorized, code, path)
		code, _, body = get(path+window, bearer("s3cret"))
		require.Equal(t, http.StatusOK, code, body)
		code, _, _ = get(path+window, func(r *http.Request) { r.SetBasicAuth("anyone", "s3cret") })
		require.Equal(t, http.StatusOK, code, "the browser's Basic prompt")
	}
	for _, open := range []string{"/metrics", "/healthz", "/readyz"} {
		code, _, _ := get(open, nil)
		require.Equal(t, http.StatusOK, code, open)
	}

	// from=0 asked for 56 years of FINAL scans; limit=1000 for 1000 rows.
	for _, bad := range []string{"?from=0", "?since=800h", "?limit=1000", "?limit=201"} {
		code, _, body := get("/api/dashboard"+bad, bearer("s3cret"))
		require.Equal(t, http.StatusBadRequest, code, bad+": "+body)
	}
	code, _, _ := get("/api/dashboard?since=744h&limit=200", bearer("s3cret"))
	require.Equal(t, http.StatusOK, code, "31 days and 200 rows are allowed")

	require.NoError(t, conn.Exec(t.Context(), "DROP TABLE calls"))
	code, _, body := get("/api/dashboard"+window, bearer("s3cret"))
	require.Equal(t, http.StatusBadGateway, code)
	require.NotContains(t, body, "calls", "ClickHouse's error text (table names) is not returned")
	require.NotContains(t, body, "doesn't exist")
	require.Contains(t, logs.String(), "doesn't exist", "the error is logged in full")
}

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in     string
		ok     bool
		major  int
		atLeas bool // AtLeast(24, 1)
	}{
		{"18.16.1", true, 18, false},
		{"24.8.4.13", true, 24, true},
		{"25.1", true, 25, true},
		{"x.1", false, 0, false},
		{"18", false, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			v, err := ParseVersion(tt.in)
			if !tt.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.major, v.Major)
			require.Equal(t, tt.atLeas, v.AtLeast(24, 1))
		})
	}
}

func TestPanelsParse(t *testing.T) {
	ps := panels.All()
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
		require.NotEmpty(t, p.Title)
		require.Contains(t, p.SQL, "{from}")
	}
	require.Equal(t, []string{panels.HandoffsByReason, panels.SuccessByDestination, panels.TimeToTransfer,
		panels.CallsByDialedNumber, panels.RecentHandoffs, panels.AgentStreamsByReason, panels.AgentFailures,
		panels.AgentPlayout, panels.AgentMetricsByName, panels.RulesByHits}, names)
	_, err := panels.Parse("SELECT 1;\n")
	require.Error(t, err, "a query without name and title")
	r := ps[0].Render(time.Unix(100, 0), time.Unix(200, 0), 5)
	require.Contains(t, r, "toStartOfHour(toDateTime(100))")
	require.Contains(t, ps[0].Grafana(5), "$__fromTime")
}
