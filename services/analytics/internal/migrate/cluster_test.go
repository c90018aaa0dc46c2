package migrate_test

import (
	"io/fs"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/schemas"
	"github.com/baton-voice/baton/services/analytics/internal/migrate"
)

func TestForClusterShippedSchema(t *testing.T) {
	sub, err := fs.Sub(schemas.ClickHouse, "clickhouse")
	require.NoError(t, err)
	ms, err := migrate.Load(sub)
	require.NoError(t, err)
	cms, err := migrate.ForCluster(ms, migrate.Cluster{Name: "baton_cluster", Database: "baton"})
	require.NoError(t, err)
	require.Len(t, cms, len(ms), "one cluster migration per file, same versions")

	all := map[string]string{}
	for i, m := range cms {
		require.Equal(t, ms[i].Version, m.Version)
		require.Equal(t, ms[i].Name, m.Name)
		for _, stmt := range m.Statements {
			require.Contains(t, stmt, " ON CLUSTER baton_cluster", stmt)
			require.NotContains(t, stmt, "\n--", "comments are dropped")
			first, _, _ := strings.Cut(stmt, "\n")
			all[first] = stmt
		}
	}
	// calls keeps its version column, on the replicated local table.
	calls := all["CREATE TABLE IF NOT EXISTS baton.calls_local ON CLUSTER baton_cluster"]
	require.Contains(t, calls, "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/baton/calls_local', '{replica}', version)")
	require.Contains(t, calls, "ORDER BY call_id")
	// events has no version: no third engine argument.
	require.Contains(t, all["CREATE TABLE IF NOT EXISTS baton.events_local ON CLUSTER baton_cluster"],
		"ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/baton/events_local', '{replica}')\n")
	for _, table := range []string{"events", "calls", "call_ends", "handoffs", "transfer_outcomes", "agent_metrics", "agent_streams", "agent_connects"} {
		dist := all["CREATE TABLE IF NOT EXISTS baton."+table+" ON CLUSTER baton_cluster AS baton."+table+"_local"]
		require.Equal(t, "CREATE TABLE IF NOT EXISTS baton."+table+" ON CLUSTER baton_cluster AS baton."+table+"_local\n"+
			"ENGINE = Distributed('baton_cluster', 'baton', '"+table+"_local', cityHash64(call_id))", dist)
	}
	// 0003's ADD COLUMN runs on the local table; the Distributed one is
	// made again (18.16 refuses ON CLUSTER ALTERs of it).
	require.Equal(t, []string{
		"ALTER TABLE baton.events_local ON CLUSTER baton_cluster ADD COLUMN payload_proto String",
		"DROP TABLE IF EXISTS baton.events ON CLUSTER baton_cluster",
		"CREATE TABLE IF NOT EXISTS baton.events ON CLUSTER baton_cluster AS baton.events_local\n" +
			"ENGINE = Distributed('baton_cluster', 'baton', 'events_local', cityHash64(call_id))",
	}, cms[2].Statements)
	// Views drop and create with ON CLUSTER and read DB-qualified names,
	// tables and views alike; subqueries stay as they are.
	require.Contains(t, all, "DROP TABLE IF EXISTS baton.handoff_facts ON CLUSTER baton_cluster")
	facts := all["CREATE VIEW IF NOT EXISTS baton.handoff_facts ON CLUSTER baton_cluster AS"]
	require.Contains(t, facts, "FROM baton.handoffs FINAL")
	require.Contains(t, facts, "FROM baton.transfer_outcomes FINAL")
	require.Contains(t, all["CREATE VIEW IF NOT EXISTS baton.handoffs_hourly ON CLUSTER baton_cluster AS"], "FROM baton.handoff_facts\n")
	require.NotRegexp(t, `(FROM|JOIN)\s+(handoffs|transfer_outcomes|calls|handoff_facts)\b`, facts)
	// 0005: the agent stream tables keep their partitions and sorting
	// key on the replicated local tables; their view reads both, qualified.
	streams := all["CREATE TABLE IF NOT EXISTS baton.agent_streams_local ON CLUSTER baton_cluster"]
	require.Contains(t, streams, "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/baton/agent_streams_local', '{replica}')\n"+
		"PARTITION BY toYYYYMM(ended_at)\nORDER BY (call_id, stream_sid, event_id)")
	agent := all["CREATE VIEW IF NOT EXISTS baton.agent_stream_facts ON CLUSTER baton_cluster AS"]
	require.Contains(t, agent, "FROM baton.agent_streams FINAL")
	require.Contains(t, agent, "FROM baton.agent_connects FINAL")
	require.NotRegexp(t, `(FROM|JOIN)\s+agent_`, agent)
}

func TestForClusterRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		stmt string
		c    migrate.Cluster
		want string
	}{
		{"no call_id", "CREATE TABLE IF NOT EXISTS x\n(\n    id String\n)\nENGINE = ReplacingMergeTree()\nORDER BY id",
			migrate.Cluster{Name: "c", Database: "d"}, "no call_id String column"},
		{"unknown statement", "OPTIMIZE TABLE calls FINAL", migrate.Cluster{Name: "c", Database: "d"}, `no cluster form for "OPTIMIZE TABLE calls FINAL"`},
		{"alter of a view", "ALTER TABLE handoff_facts ADD COLUMN x String", migrate.Cluster{Name: "c", Database: "d"}, "no earlier migration created as a table"},
		{"plain MergeTree", "CREATE TABLE IF NOT EXISTS x (call_id String) ENGINE = MergeTree() ORDER BY call_id",
			migrate.Cluster{Name: "c", Database: "d"}, "no cluster form"},
		{"cluster name", "DROP TABLE IF EXISTS v", migrate.Cluster{Name: "a'b", Database: "d"}, "must be identifiers"},
		{"database name", "DROP TABLE IF EXISTS v", migrate.Cluster{Name: "c", Database: ""}, "must be identifiers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := migrate.ForCluster([]migrate.Migration{{Version: 9, Name: "0009_x.sql", Statements: []string{tc.stmt}}}, tc.c)
			require.ErrorIs(t, err, migrate.ErrBadMigration)
			require.ErrorContains(t, err, tc.want)
		})
	}
}
