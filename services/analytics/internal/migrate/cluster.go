package migrate

import (
	"fmt"
	"regexp"
	"strings"
)

// Cluster says how the migrations run on a ClickHouse cluster: the cluster
// as the servers' remote_servers name it, and the database (written into
// the replication paths and the Distributed tables).
type Cluster struct {
	Name     string
	Database string
}

// ShardKey is the sharding expression of every Distributed table. Every
// table has a call_id, and every copy of a row (a batch inserted again
// after a crash) has the same call_id as the first, so all copies land on
// one shard, where ReplacingMergeTree folds them: deduplication by key
// holds across shards because a key never spans two.
const ShardKey = "cityHash64(call_id)"

// LocalSuffix names a table's per-node part: events_local behind the
// Distributed table events.
const LocalSuffix = "_local"

var (
	createTable = regexp.MustCompile(`(?s)^CREATE TABLE IF NOT EXISTS ([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*ENGINE\s*=\s*ReplacingMergeTree\(([^)]*)\)(.*)$`)
	createView  = regexp.MustCompile(`(?s)^CREATE VIEW IF NOT EXISTS ([A-Za-z_][A-Za-z0-9_]*) AS\s(.*)$`)
	dropTable   = regexp.MustCompile(`^DROP TABLE IF EXISTS ([A-Za-z_][A-Za-z0-9_]*)$`)
	alterTable  = regexp.MustCompile(`(?s)^ALTER TABLE ([A-Za-z_][A-Za-z0-9_]*) (ADD COLUMN .*)$`)
	callIDCol   = regexp.MustCompile(`(?m)^\s*call_id\s+String\b`)
)

// ForCluster rewrites single-server migrations for a cluster, statement by
// statement, so that there is one schema to keep in step:
//
//   - CREATE TABLE t ... ReplacingMergeTree(v) becomes DB.t_local ON
//     CLUSTER, ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/DB/t_local',
//     '{replica}', v), and DB.t ON CLUSTER AS DB.t_local, ENGINE =
//     Distributed sharded by ShardKey, so that queries and inserts keep
//     their names;
//   - CREATE VIEW and DROP TABLE gain ON CLUSTER (a dropped table's local
//     part goes too), and the tables a view reads are named with DB;
//   - ALTER TABLE t ADD COLUMN runs on t_local, then t is made again.
//
// Any other statement is an error: the generator must learn it before a
// migration may use it. The {shard} and {replica} macros come from each
// server's configuration.
func ForCluster(ms []Migration, c Cluster) ([]Migration, error) {
	if !identifier.MatchString(c.Name) || !identifier.MatchString(c.Database) {
		return nil, fmt.Errorf("%w: cluster %q and database %q must be identifiers", ErrBadMigration, c.Name, c.Database)
	}
	known := map[string]bool{}
	out := make([]Migration, 0, len(ms))
	for _, m := range ms {
		cm := Migration{Version: m.Version, Name: m.Name}
		for i, stmt := range m.Statements {
			stmts, err := c.rewrite(code(stmt), known)
			if err != nil {
				return nil, fmt.Errorf("%w: %s statement %d: %w", ErrBadMigration, m.Name, i+1, err)
			}
			cm.Statements = append(cm.Statements, stmts...)
		}
		out = append(out, cm)
	}
	return out, nil
}

// rewrite returns stmt's cluster form. Every name is written with its
// database: 18.16 runs an ON CLUSTER statement on each node in that
// node's default database, so an unqualified AS, FROM or JOIN target is
// looked up there ("Table default.events_local doesn't exist").
func (c Cluster) rewrite(stmt string, known map[string]bool) ([]string, error) {
	on := " ON CLUSTER " + c.Name
	if m := createTable.FindStringSubmatch(stmt); m != nil {
		name, columns, version, rest := m[1], m[2], strings.TrimSpace(m[3]), m[4]
		if !callIDCol.MatchString(columns) {
			return nil, fmt.Errorf("table %s has no call_id String column to shard by (%s)", name, ShardKey)
		}
		known[name], known[tableKey(name)] = true, true
		local := name + LocalSuffix
		args := "'/clickhouse/tables/{shard}/" + c.Database + "/" + local + "', '{replica}'"
		if version != "" {
			args += ", " + version
		}
		return []string{
			"CREATE TABLE IF NOT EXISTS " + c.qualified(local) + on + "\n(" + columns + ")\nENGINE = ReplicatedReplacingMergeTree(" + args + ")" + rest,
			c.distributed(name),
		}, nil
	}
	if m := createView.FindStringSubmatch(stmt); m != nil {
		sel := fromName.ReplaceAllStringFunc(m[2], func(s string) string {
			sm := fromName.FindStringSubmatch(s)
			if known[sm[2]] {
				return sm[1] + c.qualified(sm[2])
			}
			return s
		})
		known[m[1]] = true
		return []string{"CREATE VIEW IF NOT EXISTS " + c.qualified(m[1]) + on + " AS\n" + sel}, nil
	}
	if m := dropTable.FindStringSubmatch(stmt); m != nil {
		out := []string{"DROP TABLE IF EXISTS " + c.qualified(m[1]) + on}
		if known[tableKey(m[1])] {
			out = append(out, "DROP TABLE IF EXISTS "+c.qualified(m[1]+LocalSuffix)+on)
		}
		return out, nil
	}
	if m := alterTable.FindStringSubmatch(stmt); m != nil {
		if !known[tableKey(m[1])] {
			return nil, fmt.Errorf("ALTER of %s, which no earlier migration created as a table", m[1])
		}
		// 18.16 refuses an ON CLUSTER ALTER of the Distributed table
		// ("Table events isn't replicated, but shard #2 is replicated
		// according to its cluster definition"), so the Distributed
		// table is made again AS the altered local one. Queries of it
		// fail for the moment between the two; the writer retries.
		return []string{
			"ALTER TABLE " + c.qualified(m[1]+LocalSuffix) + on + " " + m[2],
			"DROP TABLE IF EXISTS " + c.qualified(m[1]) + on,
			c.distributed(m[1]),
		}, nil
	}
	first, _, _ := strings.Cut(stmt, "\n")
	return nil, fmt.Errorf("no cluster form for %q", first)
}

// distributed is the Distributed table in front of name's local tables.
func (c Cluster) distributed(name string) string {
	local := name + LocalSuffix
	return "CREATE TABLE IF NOT EXISTS " + c.qualified(name) + " ON CLUSTER " + c.Name + " AS " + c.qualified(local) +
		"\nENGINE = Distributed('" + c.Name + "', '" + c.Database + "', '" + local + "', " + ShardKey + ")"
}

func (c Cluster) qualified(name string) string { return c.Database + "." + name }

// tableKey marks a name in the known set as a table (not a view).
func tableKey(name string) string { return "table:" + name }

// fromName is a FROM or JOIN of a plain name (not a subquery).
var fromName = regexp.MustCompile(`\b((?:FROM|JOIN)\s+)([A-Za-z_][A-Za-z0-9_]*)\b`)

// identifier is a name that may be written into SQL unquoted.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
