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
//   - CREATE TABLE t ... ReplacingMergeTree(v) becomes t_local ON CLUSTER,
//     ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/DB/t_local',
//     '{replica}', v), and t ON CLUSTER AS t_local, ENGINE = Distributed
//     sharded by ShardKey, so that queries and inserts keep their names;
//   - CREATE VIEW and DROP TABLE gain ON CLUSTER (a dropped table's local
//     part goes too);
//   - ALTER TABLE t ADD COLUMN runs on t_local and then on t.
//
// Any other statement is an error: the generator must learn it before a
// migration may use it. The {shard} and {replica} macros come from each
// server's configuration.
func ForCluster(ms []Migration, c Cluster) ([]Migration, error) {
	if !identifier.MatchString(c.Name) || !identifier.MatchString(c.Database) {
		return nil, fmt.Errorf("%w: cluster %q and database %q must be identifiers", ErrBadMigration, c.Name, c.Database)
	}
	tables := map[string]bool{}
	out := make([]Migration, 0, len(ms))
	for _, m := range ms {
		cm := Migration{Version: m.Version, Name: m.Name}
		for i, stmt := range m.Statements {
			stmts, err := c.rewrite(code(stmt), tables)
			if err != nil {
				return nil, fmt.Errorf("%w: %s statement %d: %w", ErrBadMigration, m.Name, i+1, err)
			}
			cm.Statements = append(cm.Statements, stmts...)
		}
		out = append(out, cm)
	}
	return out, nil
}

func (c Cluster) rewrite(stmt string, tables map[string]bool) ([]string, error) {
	on := " ON CLUSTER " + c.Name
	if m := createTable.FindStringSubmatch(stmt); m != nil {
		name, columns, version, rest := m[1], m[2], strings.TrimSpace(m[3]), m[4]
		if !callIDCol.MatchString(columns) {
			return nil, fmt.Errorf("table %s has no call_id String column to shard by (%s)", name, ShardKey)
		}
		tables[name] = true
		local := name + LocalSuffix
		args := "'/clickhouse/tables/{shard}/" + c.Database + "/" + local + "', '{replica}'"
		if version != "" {
			args += ", " + version
		}
		return []string{
			"CREATE TABLE IF NOT EXISTS " + local + on + "\n(" + columns + ")\nENGINE = ReplicatedReplacingMergeTree(" + args + ")" + rest,
			"CREATE TABLE IF NOT EXISTS " + name + on + " AS " + local +
				"\nENGINE = Distributed('" + c.Name + "', '" + c.Database + "', '" + local + "', " + ShardKey + ")",
		}, nil
	}
	if m := createView.FindStringSubmatch(stmt); m != nil {
		return []string{"CREATE VIEW IF NOT EXISTS " + m[1] + on + " AS\n" + m[2]}, nil
	}
	if m := dropTable.FindStringSubmatch(stmt); m != nil {
		out := []string{"DROP TABLE IF EXISTS " + m[1] + on}
		if tables[m[1]] {
			out = append(out, "DROP TABLE IF EXISTS "+m[1]+LocalSuffix+on)
		}
		return out, nil
	}
	if m := alterTable.FindStringSubmatch(stmt); m != nil {
		if !tables[m[1]] {
			return nil, fmt.Errorf("ALTER of %s, which no earlier migration created as a table", m[1])
		}
		return []string{
			"ALTER TABLE " + m[1] + LocalSuffix + on + " " + m[2],
			"ALTER TABLE " + m[1] + on + " " + m[2],
		}, nil
	}
	first, _, _ := strings.Cut(stmt, "\n")
	return nil, fmt.Errorf("no cluster form for %q", first)
}

// code is stmt without its comment lines.
func code(stmt string) string {
	var b strings.Builder
	for line := range strings.Lines(stmt) {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "--") {
			b.WriteString(line)
		}
	}
	return strings.TrimSpace(b.String())
}

// identifier is a name that may be written into SQL unquoted.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
