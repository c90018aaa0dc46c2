package clustertest_test

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/schemas"
	"github.com/baton-voice/baton/services/analytics/internal/chconn"
	"github.com/baton-voice/baton/services/analytics/internal/clustertest"
	"github.com/baton-voice/baton/services/analytics/internal/migrate"
)

var cluster *clustertest.Cluster

func TestMain(m *testing.M) {
	flag.Parse()
	cluster = clustertest.Start()
	if cluster.StartTime > 0 {
		_, _ = fmt.Fprintf(os.Stderr, "clustertest: cluster started in %v\n", cluster.StartTime.Round(time.Millisecond))
	}
	code := m.Run()
	cluster.Stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			_, _ = fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// The tables the migrations create: each a Distributed table in front of
// its replicated *_local part.
var tables = []string{"events", "calls", "call_ends", "handoffs", "transfer_outcomes", "agent_metrics", "agent_streams", "agent_connects"}

var views = []string{"handoff_facts", "handoffs_hourly", "calls_hourly", "agent_stream_facts"}

// The migrations, applied through node 1 with the cluster set, create the
// same schema on every node, record themselves in a table every node
// shares, and apply nothing when run again (through any node). Rows
// inserted through the Distributed tables land on the shard of their
// call_id, reach both replicas of it, and a batch inserted again (a Kafka
// replay, through either shard) is counted once: every copy of a key lands
// on the shard of the first, where ReplacingMergeTree folds them.
func TestClusterMigrations(t *testing.T) {
	cluster.Require(t)
	t.Logf("cluster started in %v (nodes %v)", cluster.StartTime.Round(time.Millisecond), cluster.Nodes)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	db := clustertest.Database()
	fsys, err := fs.Sub(schemas.ClickHouse, "clickhouse")
	require.NoError(t, err)
	files, err := migrate.Load(fsys)
	require.NoError(t, err)
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))

	// Node 1 applies everything, then nothing: idempotent.
	cfg := cluster.Config(t, 0, db)
	opts := chconn.Options(cfg, db)
	require.Equal(t, 1, opts.Settings["insert_distributed_sync"], "chconn must set insert_distributed_sync on a cluster")
	t0 := time.Now()
	applied, err := migrate.Run(ctx, opts, fsys, cfg.Cluster, logger)
	require.NoError(t, err, "first migrate.Run on cluster %s", cfg.Cluster)
	require.Equal(t, names, applied)
	t.Logf("migrations applied ON CLUSTER in %v", time.Since(t0).Round(time.Millisecond))
	again, err := migrate.Run(ctx, opts, fsys, cfg.Cluster, logger)
	require.NoError(t, err, "second migrate.Run")
	require.Empty(t, again, "second run through node 1")
	// Another analytics instance, on the other shard, sees the same record.
	cfg3 := cluster.Config(t, 2, db)
	again, err = migrate.Run(ctx, chconn.Options(cfg3, db), fsys, cfg3.Cluster, logger)
	require.NoError(t, err, "migrate.Run through node 3")
	require.Empty(t, again, "run through node 3")

	conns := nodeConns(t, db)
	checkSchema(ctx, t, conns, db)
	syncReplicas(ctx, t, conns, db, migrate.Table)
	for i, conn := range conns {
		require.Equal(t, names, texts(ctx, t, conn, "SELECT name FROM "+migrate.Table+" FINAL ORDER BY version"),
			"node %d: %s", i+1, migrate.Table)
	}
	checkRows(ctx, t, conns, db)
}

// Every statement migrate.ForCluster makes of the migrations runs on the
// cluster, in file order, through node 1. migrate.Run stops at the first
// statement the servers reject; this test names each rejected statement
// and the server's answer. One rejection can make later statements fail
// too, when they use what it should have created, so the statements run
// twice: in a database of their own, as migrate.Run would, and in
// "default", the database every host runs a distributed DDL statement in,
// where an unqualified name finds its table whatever the statement's
// database was (what fails there fails for another reason).
func TestClusterStatements(t *testing.T) {
	cluster.Require(t)
	fsys, err := fs.Sub(schemas.ClickHouse, "clickhouse")
	require.NoError(t, err)
	files, err := migrate.Load(fsys)
	require.NoError(t, err)
	for _, db := range []string{clustertest.Database(), "default"} {
		t.Run(db, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
			defer cancel()
			ms, err := migrate.ForCluster(files, migrate.Cluster{Name: clustertest.Name, Database: db})
			require.NoError(t, err)
			admin := cluster.Conn(t, 0, "default")
			require.NoError(t, admin.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db+" ON CLUSTER "+clustertest.Name))
			conn := cluster.Conn(t, 0, db)
			for _, m := range ms {
				for i, stmt := range m.Statements {
					if err := conn.Exec(ctx, stmt); err != nil {
						t.Errorf("%s statement %d was rejected:\n%s\n-- server: %v", m.Name, i+1, stmt, err)
					}
				}
			}
		})
	}
}

// nodeConns opens a connection to every node, in database.
func nodeConns(t *testing.T, database string) []driver.Conn {
	t.Helper()
	conns := make([]driver.Conn, len(cluster.Nodes))
	for i := range cluster.Nodes {
		conns[i] = cluster.Conn(t, i, database)
	}
	return conns
}

// checkSchema checks on every node that the migrations' tables are
// Distributed in front of ReplicatedReplacingMergeTree *_local parts with
// the node's shard and replica, that the views exist, and that the last
// ALTER reached both parts of events.
func checkSchema(ctx context.Context, t *testing.T, conns []driver.Conn, db string) {
	t.Helper()
	// The schema, on every node.
	for i, conn := range conns {
		engines := tableEngines(ctx, t, conn, db)
		for _, name := range tables {
			require.Equal(t, "Distributed", engines[name], "node %d: %s.%s", i+1, db, name)
			require.Equal(t, "ReplicatedReplacingMergeTree", engines[name+migrate.LocalSuffix], "node %d: %s.%s_local", i+1, db, name)
		}
		for _, name := range views {
			require.Equal(t, "View", engines[name], "node %d: %s.%s", i+1, db, name)
		}
		require.Equal(t, "ReplicatedReplacingMergeTree", engines[migrate.Table], "node %d: %s.%s", i+1, db, migrate.Table)
		require.Len(t, engines, 2*len(tables)+len(views)+1, "node %d: tables %v", i+1, engines)
		// 0003's ALTER reached both parts of events.
		for _, name := range []string{"events", "events_local"} {
			var n uint64
			require.NoError(t, conn.QueryRow(ctx,
				"SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = 'payload_proto' AND type = 'String'",
				db, name).Scan(&n))
			require.Equal(t, uint64(1), n, "node %d: %s.payload_proto", i+1, name)
		}
		// Each node's replicas of a table are the ones of its shard.
		var zkPath, replica string
		require.NoError(t, conn.QueryRow(ctx,
			"SELECT zookeeper_path, replica_name FROM system.replicas WHERE database = ? AND table = 'calls_local'", db).
			Scan(&zkPath, &replica))
		require.Equal(t, "/clickhouse/tables/"+cluster.Nodes[i].Shard+"/"+db+"/calls_local", zkPath, "node %d", i+1)
		require.Equal(t, cluster.Nodes[i].Replica, replica, "node %d", i+1)
	}
}

// checkRows inserts calls, handoffs and their outcomes through the
// Distributed tables three times (through node 1, again through node 1,
// and through node 3 in two batches) and checks what every node reads.
func checkRows(ctx context.Context, t *testing.T, conns []driver.Conn, db string) {
	t.Helper()
	// Rows: the batch through node 1; a replay of the same batch through
	// node 1, which the replicated tables drop whole (insert_deduplicate:
	// a part identical to one they have); and a replay through node 3
	// batched differently, in halves, whose rows land next to the first
	// copies on their shards, where only ReplacingMergeTree folds them.
	calls, handoffs, outcomes := callRows(40), handoffRows(12), outcomeRows(12)
	for _, via := range []struct{ node, batches int }{{0, 1}, {0, 1}, {2, 2}} {
		insert(ctx, t, conns[via.node], "calls", callColumns, calls, via.batches)
		insert(ctx, t, conns[via.node], "handoffs", handoffColumns, handoffs, via.batches)
		insert(ctx, t, conns[via.node], "transfer_outcomes", outcomeColumns, outcomes, via.batches)
	}
	syncReplicas(ctx, t, conns, db, "calls_local", "handoffs_local", "transfer_outcomes_local")
	var raw uint64
	for i, conn := range conns {
		n := count(ctx, t, conn, "SELECT count() FROM calls_local")
		t.Logf("node %d (shard %s, replica %s): calls_local holds %d rows before FINAL",
			i+1, cluster.Nodes[i].Shard, cluster.Nodes[i].Replica, n)
		if i%2 == 0 {
			raw += n
		}
	}
	// Unless a merge folded them already, the shards hold the replayed
	// copies: FINAL has work to do.
	t.Logf("calls_local rows before FINAL, both shards: %d (calls: %d)", raw, len(calls))
	require.GreaterOrEqual(t, raw, uint64(len(calls)))

	// Every node counts each call once.
	for i, conn := range conns {
		require.Equal(t, uint64(len(calls)), count(ctx, t, conn, "SELECT count() FROM calls FINAL"), "node %d: calls FINAL", i+1)
		require.Equal(t, uint64(len(handoffs)), count(ctx, t, conn, "SELECT count() FROM handoffs FINAL"), "node %d: handoffs FINAL", i+1)
		require.Equal(t, uint64(len(outcomes)), count(ctx, t, conn, "SELECT count() FROM transfer_outcomes FINAL"), "node %d: transfer_outcomes FINAL", i+1)
		require.Equal(t, uint64(len(calls)), count(ctx, t, conn, "SELECT sum(calls) FROM calls_hourly"), "node %d: calls_hourly", i+1)
	}

	// Both shards hold some calls, each those of its slot of
	// cityHash64(call_id), and together all of them once.
	shard1 := count(ctx, t, conns[0], "SELECT count() FROM calls_local FINAL")
	shard2 := count(ctx, t, conns[2], "SELECT count() FROM calls_local FINAL")
	t.Logf("calls per shard: %d + %d", shard1, shard2)
	require.Positive(t, shard1)
	require.Positive(t, shard2)
	require.Equal(t, uint64(len(calls)), shard1+shard2)
	require.Zero(t, count(ctx, t, conns[0], "SELECT count() FROM calls_local WHERE "+migrate.ShardKey+" % 2 != 0"), "shard 1 holds slot 0")
	require.Zero(t, count(ctx, t, conns[2], "SELECT count() FROM calls_local WHERE "+migrate.ShardKey+" % 2 != 1"), "shard 2 holds slot 1")
	// Merged, a shard's local table needs no FINAL. OPTIMIZE does nothing
	// when a background merge holds some of the parts, hence the retries.
	var merged uint64
	for attempt := 1; attempt <= 20; attempt++ {
		for _, i := range []int{0, 2} {
			for _, table := range []string{"calls_local", "handoffs_local", "transfer_outcomes_local"} {
				require.NoError(t, conns[i].Exec(ctx, "OPTIMIZE TABLE "+table+" FINAL"), "node %d: optimize %s", i+1, table)
			}
		}
		syncReplicas(ctx, t, conns, db, "calls_local", "handoffs_local", "transfer_outcomes_local")
		merged = count(ctx, t, conns[0], "SELECT count() FROM calls_local") + count(ctx, t, conns[2], "SELECT count() FROM calls_local")
		if merged == uint64(len(calls)) {
			break
		}
		t.Logf("OPTIMIZE attempt %d: calls_local holds %d rows on both shards, want %d", attempt, merged, len(calls))
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for OPTIMIZE: %v", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	require.Equal(t, uint64(len(calls)), merged, "calls_local after OPTIMIZE FINAL, both shards")

	// The replicas of a shard hold the same rows.
	const localRows = "SELECT concat(call_id, '/', toString(version), '/', callee_number) FROM calls_local FINAL ORDER BY call_id"
	for _, pair := range [][2]int{{0, 1}, {2, 3}} {
		a := texts(ctx, t, conns[pair[0]], localRows)
		b := texts(ctx, t, conns[pair[1]], localRows)
		require.NotEmpty(t, a)
		require.Equal(t, a, b, "nodes %d and %d: replicas of shard %s", pair[0]+1, pair[1]+1, cluster.Nodes[pair[0]].Shard)
	}
	for _, pair := range [][2]int{{0, 1}, {2, 3}} {
		const q = "SELECT concat(command_id, '/', event_id) FROM transfer_outcomes_local FINAL ORDER BY command_id, event_id"
		require.Equal(t, texts(ctx, t, conns[pair[0]], q), texts(ctx, t, conns[pair[1]], q),
			"nodes %d and %d: transfer_outcomes_local", pair[0]+1, pair[1]+1)
	}

	// handoff_facts: one row per command, with its outcome, from every node.
	want := wantFacts(12)
	for i, conn := range conns {
		got := facts(ctx, t, conn)
		require.Equal(t, want, got, "node %d: handoff_facts", i+1)
		var succeeded, failed, pending uint64
		require.NoError(t, conn.QueryRow(ctx,
			"SELECT sum(succeeded), sum(failed), sum(pending) FROM handoffs_hourly").Scan(&succeeded, &failed, &pending))
		require.Equal(t, []uint64{4, 4, 4}, []uint64{succeeded, failed, pending}, "node %d: handoffs_hourly", i+1)
	}
}

// tableEngines maps the tables of database to their engines.
func tableEngines(ctx context.Context, t *testing.T, conn driver.Conn, database string) map[string]string {
	t.Helper()
	rows, err := conn.Query(ctx, "SELECT name, engine FROM system.tables WHERE database = ?", database)
	require.NoError(t, err)
	defer func() { _ = rows.Close() }()
	out := map[string]string{}
	for rows.Next() {
		var name, engine string
		require.NoError(t, rows.Scan(&name, &engine))
		out[name] = engine
	}
	require.NoError(t, rows.Err())
	return out
}

// syncReplicas waits on every node until its replicas of tables have
// fetched every part the other replica of its shard has.
func syncReplicas(ctx context.Context, t *testing.T, conns []driver.Conn, database string, tables ...string) {
	t.Helper()
	for i, conn := range conns {
		for _, table := range tables {
			require.NoError(t, conn.Exec(ctx, "SYSTEM SYNC REPLICA "+database+"."+table), "node %d: sync %s", i+1, table)
		}
	}
}

func count(ctx context.Context, t *testing.T, conn driver.Conn, query string) uint64 {
	t.Helper()
	var n uint64
	require.NoError(t, conn.QueryRow(ctx, query).Scan(&n), query)
	return n
}

func texts(ctx context.Context, t *testing.T, conn driver.Conn, query string) []string {
	t.Helper()
	rows, err := conn.Query(ctx, query)
	require.NoError(t, err, query)
	defer func() { _ = rows.Close() }()
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err(), query)
	return out
}

// insert sends rows to table through conn in that many consecutive
// batches, columns named (18.16 needs the list).
func insert(ctx context.Context, t *testing.T, conn driver.Conn, table, columns string, rows [][]any, batches int) {
	t.Helper()
	size := (len(rows) + batches - 1) / batches
	for chunk := range slices.Chunk(rows, size) {
		batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+table+" ("+columns+")")
		require.NoError(t, err, "prepare insert into %s", table)
		for _, row := range chunk {
			require.NoError(t, batch.Append(row...), "append to %s", table)
		}
		require.NoError(t, batch.Send(), "insert %d rows into %s", len(chunk), table)
	}
}

var base = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)

func ms(t time.Time) uint64 { return uint64(t.UnixMilli()) }

func callID(i int) string {
	return fmt.Sprintf("%08x-5e1d-4c2a@sbc-%d.example.net", 0x3a7f0000+i*7919, i%3+1)
}

const callColumns = "call_id, started_at, started_ms, trunk, source_address, caller_number, caller_number_raw, " +
	"callee_number, callee_number_raw, request_uri, variables.key, variables.value, header_count, oversized_headers, event_id, version"

// callRows are n CallStarted rows with distinct call ids.
func callRows(n int) [][]any {
	rows := make([][]any, n)
	for i := range rows {
		started := base.Add(time.Duration(i) * 97 * time.Second)
		trunk := []string{"carrier-a", "carrier-b"}[i%2]
		callee := []string{"+498912345600", "+498912345699"}[i%2]
		rows[i] = []any{
			callID(i), started, ms(started), trunk, fmt.Sprintf("203.0.113.%d:5060", 10+i%4),
			fmt.Sprintf("+4917612%06d", 345000+i), fmt.Sprintf("017612%06d", 345000+i),
			callee, "0" + callee[3:], "sip:" + callee + "@baton.example.net;user=phone",
			[]string{"campaign", "lang"}, []string{"winter-" + trunk, "de"},
			uint32(14 + i%5), uint32(0), fmt.Sprintf("ev-call-started-%03d", i), ms(started),
		}
	}
	return rows
}

const handoffColumns = "command_id, call_id, requested_at, requested_ms, destination, method, route, reason, " +
	"utterance, attempt, headers.name, headers.value, event_id"

func commandID(i int) string { return fmt.Sprintf("cmd-%03d", i) }

func requested(i int) time.Time { return base.Add(time.Duration(i)*97*time.Second + 42*time.Second) }

// handoffMethod: REFER, except every third command, a warm INVITE.
func handoffMethod(i int) string {
	if i%3 == 1 {
		return "INVITE"
	}
	return "REFER"
}

// handoffRows are n router commands, one on each of the first n calls.
func handoffRows(n int) [][]any {
	rows := make([][]any, n)
	for i := range rows {
		at := requested(i)
		rows[i] = []any{
			commandID(i), callID(i), at, ms(at), "sip:+4989987650@pbx.example.net", handoffMethod(i),
			"agents-de", "caller_asked_for_human", "Ich möchte bitte mit einem Menschen sprechen.", uint32(1),
			[]string{"X-Baton-Reason"}, []string{"caller_asked_for_human"}, fmt.Sprintf("ev-handoff-%03d", i),
		}
	}
	return rows
}

const outcomeColumns = "event_id, command_id, call_id, time, time_ms, status, method, destination, reason, " +
	"sip_code, sip_reason, detail, elapsed_ms"

// outcomeRows are the transfer outcomes of n commands: command i succeeds
// (i%3 == 0: 202 accepted, 180 ringing, 200 succeeded), fails (1: 180
// ringing, 486 busy) or is still pending (2: only the REFER's 202).
func outcomeRows(n int) [][]any {
	var rows [][]any
	add := func(i int, status string, code int32, reason string, elapsed uint64) {
		at := requested(i).Add(time.Duration(elapsed) * time.Millisecond)
		rows = append(rows, []any{
			fmt.Sprintf("ev-outcome-%03d-%d", i, len(rows)), commandID(i), callID(i), at, ms(at), status,
			handoffMethod(i), "sip:+4989987650@pbx.example.net", "caller_asked_for_human", code, reason, "", elapsed,
		})
	}
	for i := range n {
		switch i % 3 {
		case 0:
			add(i, "accepted", 202, "Accepted", 35)
			add(i, "progress", 180, "Ringing", 900)
			add(i, "succeeded", 200, "OK", 4200)
		case 1:
			add(i, "progress", 180, "Ringing", 700)
			add(i, "failed", 486, "Busy Here", 3100)
		case 2:
			add(i, "accepted", 202, "Accepted", 40)
		}
	}
	return rows
}

// fact is a handoff_facts row, the columns this test checks.
type fact struct {
	CommandID, CallID, Outcome string
	SIPCode                    int32
	Ringing, Answer, Bridge    *uint64
}

func wantFacts(n int) []fact {
	p := func(v uint64) *uint64 { return &v }
	out := make([]fact, n)
	for i := range out {
		f := fact{CommandID: commandID(i), CallID: callID(i)}
		switch i % 3 {
		case 0:
			f.Outcome, f.SIPCode, f.Ringing, f.Answer, f.Bridge = "succeeded", 200, p(900), p(4200), p(4200)
		case 1:
			f.Outcome, f.SIPCode, f.Ringing = "failed", 486, p(700)
		case 2:
			f.Outcome = "pending"
		}
		out[i] = f
	}
	return out
}

func facts(ctx context.Context, t *testing.T, conn driver.Conn) []fact {
	t.Helper()
	rows, err := conn.Query(ctx, "SELECT command_id, call_id, outcome, sip_code, "+
		"time_to_ringing_ms, time_to_answer_ms, time_to_bridge_ms FROM handoff_facts ORDER BY command_id")
	require.NoError(t, err, "select from handoff_facts")
	defer func() { _ = rows.Close() }()
	var out []fact
	for rows.Next() {
		var f fact
		require.NoError(t, rows.Scan(&f.CommandID, &f.CallID, &f.Outcome, &f.SIPCode, &f.Ringing, &f.Answer, &f.Bridge))
		out = append(out, f)
	}
	require.NoError(t, rows.Err())
	return out
}
