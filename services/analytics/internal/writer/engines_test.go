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
	require.Len(t, all, 10)
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
				Reason: reason, Utterance: "let me get you someone", Attempt: uint32(n), Rule: []string{"", "vip", "billing"}[i%3],
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

// agentDay is the day of the agent fixture; its window is 10:00 to 13:00.
var agentDay = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// agentFixture is a small set of agent events, each record twice (a
// producer's retry): streams that ended for each kind of reason, two that
// never opened, one outside the window (a6), one still open (a7), and
// agent metrics. Every stream connected 5 minutes before it ended.
func agentFixture(t *testing.T) []*kgo.Record {
	t.Helper()
	at := func(hhmm string) time.Time {
		ts, err := time.Parse("15:04", hhmm)
		require.NoError(t, err)
		return agentDay.Add(time.Duration(ts.Hour())*time.Hour + time.Duration(ts.Minute())*time.Minute)
	}
	var recs []*kgo.Record
	add := func(id, call string, ts time.Time, msg proto.Message) {
		typ, err := events.TypeOf(msg)
		require.NoError(t, err)
		rec, err := events.Encode("baton.calls", events.Event{ID: id, Type: typ, Source: "baton/ingress", Subject: "call-" + call, Time: ts, Data: msg})
		require.NoError(t, err)
		recs = append(recs, rec, rec)
	}
	for i, st := range []struct {
		call, sid, end, reason, action             string
		played, late, dropped, cleared, maxQueueMS uint64
	}{
		{"a1", "s1", "10:05", "handoff", "none", 900, 2, 0, 10, 400},
		{"a2", "s2", "10:30", "call_ended", "none", 500, 0, 5, 0, 1200},
		{"a3", "", "10:40", "connect_failed", "hangup", 0, 0, 0, 0, 0},
		{"a4", "s4", "11:15", "agent_closed", "handoff", 300, 7, 50, 20, 6000},
		{"a5", "s5", "11:50", "write_timeout", "play_then_hangup", 100, 1, 0, 0, 200},
		{"a6", "s6", "09:00", "connect_failed", "hangup", 0, 0, 0, 0, 0},
		{"a8", "", "12:10", "connect_failed", "hangup", 0, 0, 0, 0, 0},
	} {
		end := at(st.end)
		if st.sid != "" {
			add("conn-"+st.call, st.call, end.Add(-5*time.Minute), &batonv1.AgentConnected{CallId: "call-" + st.call, StreamSid: st.sid,
				Url: "wss://bot.example/" + st.call, Format: []string{"audio/x-mulaw", "audio/l16"}[i%2], ConnectMs: int64(100 + i),
				Source: []string{"trunk", "number"}[i%2]})
		}
		add("disc-"+st.call, st.call, end, &batonv1.AgentDisconnected{CallId: "call-" + st.call, StreamSid: st.sid,
			Reason: st.reason, Action: st.action, Stats: &batonv1.AgentStreamStats{
				FramesOut: st.played + 10, FramesIn: st.played / 2, FramesPlayed: st.played, Late: st.late, Dropped: st.dropped,
				Cleared: st.cleared, MaxQueueMs: st.maxQueueMS,
			}})
	}
	add("conn-a7", "a7", at("12:59"), &batonv1.AgentConnected{CallId: "call-a7", StreamSid: "s7", Url: "wss://bot.example/a7"})
	for _, m := range []struct {
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
	} {
		add(m.id, m.call, at(m.time), &batonv1.AgentMetric{CallId: "call-" + m.call, Name: m.name, Value: m.value})
	}
	return recs
}

// TestAgentPanelsOnBothEngines writes the agent fixture (every record
// twice, then the whole batch twice) on 18.16 through the writer's insert
// and on the current engine through its column lists, and checks that
// each event id is one row and that agent_stream_facts and every agent
// panel give the expected figures on both engines, with join_use_nulls 0
// and 1.
func TestAgentPanelsOnBothEngines(t *testing.T) {
	server.Require(t)
	r, dead := build(agentFixture(t))
	require.Empty(t, dead)
	require.Len(t, r.streams, 14, "every disconnect twice in the batch")
	old := oldEngine(t, r)
	cur := currentEngine(t, r)
	from, to := agentDay.Add(10*time.Hour), agentDay.Add(13*time.Hour)
	panel := func(name string) string {
		p, err := panels.Lookup(name)
		require.NoError(t, err)
		return p.Render(from, to, 3)
	}
	tests := []struct{ name, sql, want string }{
		{"one row per event id",
			"SELECT (SELECT count() FROM agent_streams FINAL) AS streams, (SELECT count() FROM agent_connects FINAL) AS connects, " +
				"(SELECT count() FROM agent_metrics FINAL) AS metrics",
			"streams\tconnects\tmetrics\n7\t6\t7\n"},
		{"agent_stream_facts",
			"SELECT call_id, stream_sid, reason, action, frames_out, frames_played, max_queue_ms, url, format, connect_ms, source, duration_ms " +
				"FROM agent_stream_facts ORDER BY call_id, stream_sid",
			"call_id\tstream_sid\treason\taction\tframes_out\tframes_played\tmax_queue_ms\turl\tformat\tconnect_ms\tsource\tduration_ms\n" +
				"call-a1\ts1\thandoff\tnone\t910\t900\t400\twss://bot.example/a1\taudio/x-mulaw\t100\ttrunk\t300000\n" +
				"call-a2\ts2\tcall_ended\tnone\t510\t500\t1200\twss://bot.example/a2\taudio/l16\t101\tnumber\t300000\n" +
				"call-a3\t\tconnect_failed\thangup\t10\t0\t0\t\t\t0\t\t0\n" +
				"call-a4\ts4\tagent_closed\thandoff\t310\t300\t6000\twss://bot.example/a4\taudio/l16\t103\tnumber\t300000\n" +
				"call-a5\ts5\twrite_timeout\tplay_then_hangup\t110\t100\t200\twss://bot.example/a5\taudio/x-mulaw\t104\ttrunk\t300000\n" +
				"call-a6\ts6\tconnect_failed\thangup\t10\t0\t0\twss://bot.example/a6\taudio/l16\t105\tnumber\t300000\n" +
				"call-a8\t\tconnect_failed\thangup\t10\t0\t0\t\t\t0\t\t0\n"},
		{"panel " + panels.AgentStreamsByReason, panel(panels.AgentStreamsByReason),
			"hour\treason\tstreams\n" +
				"2026-12-01 10:00:00\tcall_ended\t1\n" +
				"2026-12-01 10:00:00\tconnect_failed\t1\n" +
				"2026-12-01 10:00:00\thandoff\t1\n" +
				"2026-12-01 11:00:00\tagent_closed\t1\n" +
				"2026-12-01 11:00:00\twrite_timeout\t1\n" +
				"2026-12-01 12:00:00\tconnect_failed\t1\n"},
		{"panel " + panels.AgentFailures, panel(panels.AgentFailures),
			"reason\taction\tstreams\tcalls\n" +
				"connect_failed\thangup\t2\t2\n" +
				"agent_closed\thandoff\t1\t1\n" +
				"write_timeout\tplay_then_hangup\t1\t1\n"},
		// 10:00: deepest queues 0, 400, 1200, p95 at floor(3*0.95)=2;
		// 11:00: 200, 6000, p95 at floor(2*0.95)=1.
		{"panel " + panels.AgentPlayout, panel(panels.AgentPlayout),
			"hour\tstreams\tframes_played\tlate_frames\tdropped_frames\tcleared_frames\tp95_max_queue_ms\tdeepest_queue_ms\n" +
				"2026-12-01 10:00:00\t3\t1400\t2\t5\t10\t1200\t1200\n" +
				"2026-12-01 11:00:00\t2\t400\t8\t50\t20\t6000\t6000\n" +
				"2026-12-01 12:00:00\t1\t0\t0\t0\t0\t0\t0\n"},
		// llm_latency_ms sorted 100, 200, 300, 1000: p50 at 2, p95 at 3.
		{"panel " + panels.AgentMetricsByName, panel(panels.AgentMetricsByName),
			"name\tsamples\tcalls\tavg_value\tmin_value\tp50_value\tp95_value\tmax_value\n" +
				"llm_latency_ms\t4\t3\t400\t100\t300\t1000\t1000\n" +
				"sentiment\t2\t2\t-0.125\t-0.5\t0.25\t0.25\t0.25\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, nulls := range []int{0, 1} {
				require.Equalf(t, tt.want, old.query(t, tt.sql, nulls), "18.16, join_use_nulls = %d\n%s", nulls, tt.sql)
				require.Equalf(t, tt.want, cur.query(t, tt.sql, nulls), "current engine, join_use_nulls = %d\n%s", nulls, tt.sql)
			}
		})
	}
}
