//go:build chdb

// The tests in this file run the schema, the writer's inserts and every
// query Baton ships on two ClickHouse engines and compare the rows:
// Debian's clickhouse-server 18.16 (chtest, over the native protocol and
// HTTP) and a current engine, ClickHouse 26.x in process through chDB
// (github.com/chdb-io/chdb-go loading libchdb.so from npm's
// @chdb/lib-linux-x64-gnu; docs/decisions/0011-current-clickhouse-through-chdb.md).
//
// The tag keeps them out of builds that have no libchdb.so: chdb-go loads
// it when the package initialises and panics without it. `make test` sets
// the tag and CHDB_LIB_PATH.
package writer

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chdb-io/chdb-go/chdb"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/schemas"
	"github.com/baton-voice/baton/schemas/panels"
	"github.com/baton-voice/baton/services/analytics/internal/chconn"
	"github.com/baton-voice/baton/services/analytics/internal/dashboard"
	"github.com/baton-voice/baton/services/analytics/internal/migrate"
)

// engineCalls is how many calls the scenario has: every kind of handoff
// several times, over a few hours.
const engineCalls = 42

// scenarioStart is the first call's start; calls are 7 minutes apart.
var scenarioStart = time.Date(2026, 11, 30, 9, 0, 0, 123_000_000, time.UTC)

// TestEnginesAgree migrates both engines, inserts the same realistic batch
// twice (a Kafka replay) through the writer's column lists, and runs every
// view, panel, Grafana query and the dev summary on both, with the
// default join_use_nulls and with join_use_nulls = 1: the rows must be the
// same, byte for byte in TabSeparatedWithNames.
func TestEnginesAgree(t *testing.T) {
	server.Require(t)
	recs := scenario(t, kafka.DefaultConfig().Topics)
	r, dead := build(recs)
	require.Empty(t, dead, "every scenario event becomes a row")
	require.Len(t, r.calls, engineCalls)

	old := oldEngine(t, r)
	cur := currentEngine(t, r)

	from, to := scenarioStart.Add(-time.Hour), scenarioStart.Add(time.Duration(engineCalls)*7*time.Minute+time.Hour)
	queries := shippedQueries(t, from, to)

	// The default profile's rows, per query: join_use_nulls = 1 in a
	// user's profile must not change them.
	defaults := map[string]string{}
	for _, nulls := range []int{0, 1} {
		t.Run("join_use_nulls="+strconv.Itoa(nulls), func(t *testing.T) {
			// The setting must really be in force on both engines, or the
			// comparison below proves nothing about it.
			const probe = "SELECT b FROM (SELECT 1 AS a) AS l ANY LEFT JOIN (SELECT 2 AS a, 5 AS b) AS r USING a"
			want := map[int]string{0: "b\n0\n", 1: "b\n\\N\n"}[nulls]
			require.Equal(t, want, old.query(t, probe, nulls), "18.16 probe")
			require.Equal(t, want, cur.query(t, probe, nulls), "current engine probe")

			for _, q := range queries {
				got18, got26 := old.query(t, q.sql, nulls), cur.query(t, q.sql, nulls)
				require.Equalf(t, got18, got26, "%s: 18.16 and the current engine disagree\n%s", q.name, q.sql)
				require.Greaterf(t, strings.Count(got18, "\n"), 1, "%s returned no rows; the comparison would be empty", q.name)
				if nulls == 0 {
					defaults[q.name] = got18
				} else {
					require.Equalf(t, defaults[q.name], got18, "%s: join_use_nulls = 1 changed the rows\n%s", q.name, q.sql)
				}
			}
		})
	}

	t.Run("summary", func(t *testing.T) {
		// Call 2 (kind 2) had a busy destination, then a fallback that
		// succeeded: the summary shows the fallback, the latest command.
		// Call 3 is pending with two outcomes in the same millisecond:
		// the tie breaks on event_id, so "progress" (the later id) wins.
		rows := tsvRows(old.query(t, panels.Summary(scenarioStart), 0))
		byCall := map[string][]string{}
		for _, row := range rows[1:] {
			byCall[row[0]] = row
		}
		require.Len(t, byCall, engineCalls)
		require.Equal(t, []string{"fallback", "INVITE", "succeeded", "200"}, byCall[callID(2)][5:])
		require.Equal(t, []string{"sales", "REFER", "progress", "180"}, byCall[callID(3)][5:])
		require.Equal(t, []string{"", "", "", "0"}, byCall[callID(5)][5:])
	})
}

// TestClusterDDLOnCurrentEngine checks what of the cluster schema a single
// in-process engine can check: every statement migrate.ForCluster makes
// parses on the current engine (formatQuery, ON CLUSTER included), and
// each replicated *_local table is created (with ClickHouse's in-memory
// test Keeper and the {shard}/{replica} macros from a config file). Not
// run here: ON CLUSTER itself (chDB has no distributed DDL worker:
// "Replicated DDL queries are disabled"), inserts and ALTERs on the
// replicated tables (chDB opens them read-only: TABLE_IS_READ_ONLY), and
// the Distributed tables (chDB has no server port for a shard to reach).
// internal/clustertest runs all of those on a real 2×2 cluster of 18.16.
func TestClusterDDLOnCurrentEngine(t *testing.T) {
	server.Require(t)
	cur := currentEngine(t, nil)
	cms, err := migrate.ForCluster(loadMigrations(t), migrate.Cluster{Name: "baton", Database: "cl"})
	require.NoError(t, err)

	cur.exec(t, "CREATE DATABASE IF NOT EXISTS cl")
	cur.exec(t, "USE cl")
	// Closing a chDB session that still holds replicated tables can hang
	// in libchdb's shutdown; drop them first (cleanups run last first).
	t.Cleanup(func() { cur.exec(t, "DROP DATABASE IF EXISTS cl SYNC") })
	var statements, locals int
	for _, m := range cms {
		for _, stmt := range m.Statements {
			statements++
			require.Containsf(t, stmt, " ON CLUSTER baton", "%s: every cluster statement runs ON CLUSTER", m.Name)
			quoted := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(stmt)
			formatted := cur.query(t, "SELECT formatQuery('"+quoted+"') FORMAT TSVRaw", 0)
			require.Containsf(t, formatted, "ON CLUSTER baton", "%s: the current engine's parse of\n%s", m.Name, stmt)
			if strings.Contains(stmt, "ENGINE = ReplicatedReplacingMergeTree") {
				cur.exec(t, strings.Replace(stmt, " ON CLUSTER baton", "", 1))
				locals++
			}
		}
	}
	t.Logf("%d cluster statements parsed, %d replicated tables created", statements, locals)
	require.Equal(t, 8, locals, "one replicated table per table of the schema")
	require.Equal(t, "ReplicatedReplacingMergeTree\t8\n",
		cur.query(t, "SELECT engine, count() FROM system.tables WHERE database = 'cl' AND name LIKE '%_local' GROUP BY engine FORMAT TabSeparated", 0))
}

// query is one shipped query.
type query struct{ name, sql string }

// shippedQueries is every query Baton ships, rendered for the window:
// the views whole, each panel as the analytics page and `baton report`
// render it, each Grafana panel of the shipped dashboard JSON with its
// macros expanded as grafana-clickhouse-datasource expands them, and the
// dev summary.
func shippedQueries(t *testing.T, from, to time.Time) []query {
	t.Helper()
	qs := []query{
		{"view handoff_facts", "SELECT * FROM handoff_facts ORDER BY command_id"},
		{"view handoffs_hourly", "SELECT * FROM handoffs_hourly ORDER BY hour, reason, destination, method"},
		{"view calls_hourly", "SELECT * FROM calls_hourly ORDER BY hour, callee_number, trunk"},
		{"agent_metrics", "SELECT name, call_id, value, tags.key, tags.value FROM agent_metrics FINAL ORDER BY name, call_id, event_id"},
		{"view agent_stream_facts", "SELECT * FROM agent_stream_facts ORDER BY call_id, stream_sid, ended_ms"},
		{"agent_streams", "SELECT * FROM agent_streams FINAL ORDER BY call_id, stream_sid, event_id"},
		{"agent_connects", "SELECT * FROM agent_connects FINAL ORDER BY call_id, stream_sid, event_id"},
		{"call_ends", "SELECT * FROM call_ends FINAL ORDER BY call_id"},
		{"events", "SELECT event_id, type, call_id, time, time_ms, topic, length(payload_proto) FROM events FINAL ORDER BY call_id, event_id"},
		{"dev summary", panels.Summary(scenarioStart)},
	}
	all := panels.All()
	require.Len(t, all, 5)
	for _, p := range all {
		qs = append(qs, query{"panel " + p.Name, p.Render(from, to, 100)})
	}

	path := filepath.Join("..", "..", "..", "..", dashboard.GrafanaPath)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RawSQL string `json:"rawSql"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(data, &dash))
	require.Len(t, dash.Panels, len(all))
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			qs = append(qs, query{"grafana " + p.Title, grafanaMacros(t, target.RawSQL, from, to)})
		}
	}
	return qs
}

// grafanaMacros expands the time macros the way grafana-clickhouse-datasource
// does ($__fromTime and $__toTime become toDateTime(<unix seconds>)); a
// macro it does not know fails the test, so a new one gets expanded here
// before the dashboard may use it.
func grafanaMacros(t *testing.T, sql string, from, to time.Time) string {
	t.Helper()
	out := strings.NewReplacer(
		"$__fromTime", "toDateTime("+strconv.FormatInt(from.Unix(), 10)+")",
		"$__toTime", "toDateTime("+strconv.FormatInt(to.Unix(), 10)+")",
	).Replace(sql)
	require.NotContainsf(t, out, "$__", "a Grafana macro this test does not expand: %s", sql)
	return out
}

// engine runs SQL on one ClickHouse and returns TabSeparatedWithNames.
type engine struct {
	// query runs sql with join_use_nulls set as asked.
	query func(t *testing.T, sql string, joinUseNulls int) string
	exec  func(t *testing.T, sql string)
}

// oldEngine is Debian's 18.16: the real migrator, the writer's real
// insert (twice), queries over HTTP.
func oldEngine(t *testing.T, r *rows) engine {
	t.Helper()
	ch := server.Config(t)
	_, err := migrate.Run(t.Context(), chconn.Options(ch, ch.Database), migrationsFS(t), "", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	conn := server.Conn(t, ch)
	for range 2 {
		require.NoError(t, insert(t.Context(), conn, r))
	}
	q := func(t *testing.T, sql string, nulls int) string {
		t.Helper()
		u := url.URL{Scheme: "http", Host: server.HTTPAddr, Path: "/", RawQuery: url.Values{
			"database":           {ch.Database},
			"join_use_nulls":     {strconv.Itoa(nulls)},
			"default_format":     {"TabSeparatedWithNames"},
			"max_result_rows":    {"100000"},
			"max_execution_time": {"60"},
		}.Encode()}
		resp, err := http.Post(u.String(), "text/plain", strings.NewReader(sql))
		require.NoError(t, err)
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equalf(t, http.StatusOK, resp.StatusCode, "18.16: %s\n%s", body, sql)
		return string(body)
	}
	return engine{query: q, exec: func(t *testing.T, sql string) { t.Helper(); q(t, sql, 0) }}
}

// chdbConfig gives the in-process engine ClickHouse's in-memory test
// Keeper and the macros replicated tables name their paths with.
const chdbConfig = `<clickhouse>
  <zookeeper><implementation>testkeeper</implementation></zookeeper>
  <macros><shard>01</shard><replica>r1</replica></macros>
</clickhouse>
`

// currentEngine is a chDB session of the test's own. With rows, it migrates a fresh database by
// running every statement of every migration, as the migrator does, and
// inserts rows twice with the writer's column lists.
func currentEngine(t *testing.T, r *rows) engine {
	t.Helper()
	s := chdbSession(t)
	run := func(t *testing.T, sql, format string) string {
		t.Helper()
		res, err := s.Query(sql, format)
		require.NoErrorf(t, err, "current engine: %s", sql)
		defer res.Free()
		require.NoErrorf(t, res.Error(), "current engine: %s", sql)
		return res.String()
	}
	e := engine{
		query: func(t *testing.T, sql string, nulls int) string {
			t.Helper()
			run(t, "SET join_use_nulls = "+strconv.Itoa(nulls), "TabSeparated")
			return run(t, sql, "TabSeparatedWithNames")
		},
		exec: func(t *testing.T, sql string) { t.Helper(); run(t, sql, "TabSeparated") },
	}
	if r == nil {
		return e
	}
	db := "cur_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	e.exec(t, "CREATE DATABASE "+db)
	e.exec(t, "USE "+db)
	version := run(t, "SELECT version()", "TabSeparated")
	t.Logf("current engine: ClickHouse %s (chDB)", strings.TrimSpace(version))
	for _, m := range loadMigrations(t) {
		for _, stmt := range m.Statements {
			e.exec(t, stmt)
		}
	}
	for range 2 {
		insertTSV(t, e, eventsTable, r.events, "")
		insertTSV(t, e, callsTable, r.calls, "")
		insertTSV(t, e, callEndsTable, r.callEnds, "")
		insertTSV(t, e, handoffsTable, r.handoffs, "")
		insertTSV(t, e, outcomesTable, r.outcomes, "")
		insertTSV(t, e, agentMetricsTable, r.metrics, "")
		insertTSV(t, e, agentStreamsTable, r.streams, "")
		insertTSV(t, e, agentConnectsTable, r.connects, "")
	}
	return e
}

// chdbSession opens a chDB session for the test and closes it when the
// test ends (chdb-go allows one per process at a time; an open session at
// process exit crashes libchdb's teardown).
func chdbSession(t *testing.T) *chdb.Session {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.xml")
	require.NoError(t, os.WriteFile(cfg, []byte(chdbConfig), 0o600))
	s, err := chdb.NewSession(filepath.Join(dir, "data") + "?config-file=" + cfg)
	require.NoError(t, err, "open chDB (CHDB_LIB_PATH=%s)", os.Getenv("CHDB_LIB_PATH"))
	t.Cleanup(s.Close)
	return s
}

// insertTSV inserts rows into t (plus suffix) with t's column list, the
// values rendered by the writer's column functions: the same columns and
// values the writer's batch sends.
func insertTSV[T any](t *testing.T, e engine, tbl table[T], rows []T, suffix string) {
	t.Helper()
	if len(rows) == 0 {
		return
	}
	var b strings.Builder
	b.WriteString("INSERT INTO " + tbl.name + suffix + " (" + tbl.columnList() + ") FORMAT TabSeparated\n")
	cols := make([]reflect.Value, len(tbl.columns))
	for i, c := range tbl.columns {
		cols[i] = reflect.ValueOf(c.values(rows))
	}
	for i := range rows {
		for j, c := range cols {
			if j > 0 {
				b.WriteByte('\t')
			}
			b.WriteString(tsv(c.Index(i).Interface()))
		}
		b.WriteByte('\n')
	}
	e.exec(t, b.String())
}

func loadMigrations(t *testing.T) []migrate.Migration {
	t.Helper()
	ms, err := migrate.Load(migrationsFS(t))
	require.NoError(t, err)
	return ms
}

func migrationsFS(t *testing.T) fs.FS {
	t.Helper()
	sub, err := fs.Sub(schemas.ClickHouse, "clickhouse")
	require.NoError(t, err)
	return sub
}

// tsvRows splits TabSeparated text into rows of fields.
func tsvRows(s string) [][]string {
	var out [][]string
	for line := range strings.Lines(s) {
		out = append(out, strings.Split(strings.TrimSuffix(line, "\n"), "\t"))
	}
	return out
}

func callID(i int) string { return fmt.Sprintf("engines-call-%02d", i) }

// scenario is engineCalls calls, 7 minutes apart, cycling through what
// happens to calls in production:
//
//	0 blind REFER that succeeds after 180 Ringing
//	1 blind REFER the target refuses (603)
//	2 warm INVITE to a busy destination (486), then a fallback INVITE
//	  that rings, answers and bridges
//	3 a REFER still pending: accepted and progress 180 in one millisecond
//	4 BYE hand-back to the SBC
//	5 no handoff at all (the caller hung up on the agent)
//	6 warm INVITE that is never answered (408), agent metrics only
//
// Every call starts (with X- variables) and ends; calls 0 and 6 carry
// agent metrics. Every call has an agent stream: it ends with the handoff
// (kinds 0, 1, 2, 4), with the call (5), because the agent closed it and
// on_agent_failure handed off (6), or it never opened (3: connect_failed,
// hang up, no AgentConnected).
func scenario(t *testing.T, topics kafka.Topics) []*kgo.Record {
	t.Helper()
	var recs []*kgo.Record
	for i := range engineCalls {
		id := callID(i)
		start := scenarioStart.Add(time.Duration(i) * 7 * time.Minute)
		seq := 0
		add := func(topic string, at time.Duration, msg proto.Message) {
			typ, err := events.TypeOf(msg)
			require.NoError(t, err)
			seq++
			rec, err := events.Encode(topic, events.Event{
				ID: fmt.Sprintf("%s-e%02d", id, seq), Type: typ, Source: "baton/test", Subject: id,
				Time: start.Add(at), Data: msg,
			})
			require.NoError(t, err)
			recs = append(recs, rec)
		}
		// command publishes a HandoffCommand and returns how to publish
		// its outcomes.
		command := func(n int, at time.Duration, m batonv1.Method, dest, reason string) func(time.Duration, batonv1.OutcomeStatus, int32, string) {
			cmd := fmt.Sprintf("%s-cmd-%d", id, n)
			add(topics.Handoffs, at, &batonv1.HandoffCommand{
				CommandId: cmd, CallId: id, Method: m, Destination: dest, Route: "sip:" + dest + "@192.0.2.50:5060",
				Reason: reason, Utterance: "let me get you someone", Attempt: uint32(n),
				Headers: []*batonv1.SipHeader{{Name: "X-Customer-Id", Value: strconv.Itoa(1000 + i)}},
			})
			return func(at time.Duration, st batonv1.OutcomeStatus, code int32, sipReason string) {
				add(topics.Transfers, at, &batonv1.TransferOutcome{
					CommandId: cmd, CallId: id, Status: st, Method: m, Destination: dest,
					SipCode: code, SipReason: sipReason, Elapsed: durationpb.New(at - 10*time.Second),
				})
			}
		}
		const (
			accepted  = batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED
			progress  = batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS
			ringing   = batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING
			answered  = batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED
			bridged   = batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED
			succeeded = batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED
			failed    = batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED
		)
		kind := i % 7
		intents := []string{"billing", "sales", "support"}
		add(topics.Calls, 0, &batonv1.CallStarted{
			Trunk: []string{"carrier-a", "carrier-b"}[i%2], SourceAddress: "192.0.2.10:5060",
			CallerNumber: fmt.Sprintf("+1555010%04d", i), CallerNumberRaw: "sip:caller@carrier",
			CalleeNumber: []string{"+15550199", "+15550200", "+15550201"}[i%3], CalleeNumberRaw: "sip:dialed@baton",
			RequestUri: "sip:dialed@baton",
			Variables:  map[string]string{"Customer-Id": strconv.Itoa(1000 + i), "Intent": intents[i%3], "Language": "en"},
			SipHeaders: []*batonv1.SipHeader{{Name: "Via", Value: "SIP/2.0/UDP 192.0.2.10"}, {Name: "X-Intent", Value: intents[i%3]}},
		})
		s := func(n int) time.Duration { return time.Duration(n)*time.Second + time.Duration(i)*time.Millisecond }
		switch kind {
		case 0:
			outcome := command(1, s(10), batonv1.Method_METHOD_REFER, "support", "billing_dispute")
			outcome(s(10)+40*time.Millisecond, accepted, 202, "Accepted")
			outcome(s(11), progress, 180, "Ringing")
			outcome(s(14), succeeded, 200, "OK")
		case 1:
			outcome := command(1, s(10), batonv1.Method_METHOD_REFER, "billing", "refund")
			outcome(s(10)+60*time.Millisecond, failed, 603, "Decline")
		case 2:
			busy := command(1, s(10), batonv1.Method_METHOD_INVITE, "sales", "upgrade")
			busy(s(11), failed, 486, "Busy Here")
			fb := command(2, s(12), batonv1.Method_METHOD_INVITE, "fallback", "upgrade")
			fb(s(13), progress, 180, "Ringing")
			fb(s(13), ringing, 180, "Ringing")
			fb(s(16), progress, 200, "OK")
			fb(s(16), answered, 200, "OK")
			fb(s(17), bridged, 200, "OK")
			fb(s(17), succeeded, 200, "OK")
		case 3:
			outcome := command(1, s(10), batonv1.Method_METHOD_REFER, "sales", "new_order")
			outcome(s(11), accepted, 202, "Accepted")
			outcome(s(11), progress, 180, "Ringing")
		case 4:
			outcome := command(1, s(10), batonv1.Method_METHOD_BYE, "sbc", "agent_done")
			outcome(s(10)+30*time.Millisecond, succeeded, 200, "OK")
		case 6:
			outcome := command(1, s(10), batonv1.Method_METHOD_INVITE, "support", "tech_issue")
			outcome(s(42), failed, 408, "Request Timeout")
		}
		sid := "MZ-" + id
		stats := &batonv1.AgentStreamStats{
			FramesOut: uint64(400 + i), FramesIn: uint64(200 + i), FramesPlayed: uint64(380 + i),
			Late: uint64(i % 3), Dropped: uint64(i % 5), Cleared: uint64(i%4) * 10, MaxQueueMs: uint64(200 + 37*i),
			Marks: uint64(i % 2), BadMessages: uint64(i / 40),
		}
		if kind != 3 {
			add(topics.Calls, s(1), &batonv1.AgentConnected{CallId: id, StreamSid: sid, Url: "wss://bot.example/" + intents[i%3],
				Format: []string{"audio/x-mulaw", "audio/l16"}[i%2], ConnectMs: int64(50 + i), Source: []string{"trunk", "number"}[i%2]})
		}
		switch kind {
		case 3:
			add(topics.Calls, s(0)+500*time.Millisecond, &batonv1.AgentDisconnected{CallId: id, Reason: "connect_failed",
				Detail: "dial tcp 192.0.2.80:443: connect: connection refused", Action: "hangup", Stats: &batonv1.AgentStreamStats{}})
		case 5:
			add(topics.Calls, s(59), &batonv1.AgentDisconnected{CallId: id, StreamSid: sid, Reason: "call_ended", Action: "none", Stats: stats})
		case 6:
			add(topics.Calls, s(8), &batonv1.AgentDisconnected{CallId: id, StreamSid: sid, Reason: "agent_closed",
				Detail: "websocket: close 1011", Action: "handoff", Stats: stats})
		default:
			add(topics.Calls, s(9), &batonv1.AgentDisconnected{CallId: id, StreamSid: sid, Reason: "handoff", Action: "none", Stats: stats})
		}
		if kind == 0 || kind == 6 {
			add(topics.Calls, s(5), &batonv1.AgentMetric{CallId: id, Name: "llm_latency_ms", Value: 312.5 + float64(i), Tags: map[string]string{"model": "m1"}})
			add(topics.Calls, s(6), &batonv1.AgentMetric{CallId: id, Name: "sentiment", Value: -0.25, RequestId: "req-" + id})
		}
		add(topics.Calls, s(60), &batonv1.CallEnded{
			CallId: id, EndedBy: []batonv1.Party{batonv1.Party_PARTY_REMOTE, batonv1.Party_PARTY_BATON}[i%2], Method: "BYE",
			Reason: "normal", Duration: durationpb.New(s(60)),
		})
	}
	return recs
}
