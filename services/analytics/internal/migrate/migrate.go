// Package migrate applies Baton's ClickHouse migrations: it creates the
// database when missing, then runs every NNNN_name.sql file that is not yet
// recorded in the database's schema_migrations table, in file-name order,
// each once, and records it.
//
// ClickHouse has no transactional DDL, so a file is recorded only after all
// of its statements ran; the statements themselves must be idempotent
// (IF NOT EXISTS), so a file that failed half-way can simply run again.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Table records the applied migrations, one row per file.
const Table = "schema_migrations"

// ErrBadMigration is returned (wrapped) for a migration file that cannot be
// applied as it is: a bad name, a repeated version, no statements.
var ErrBadMigration = errors.New("bad migration")

// Migration is one file of statements.
type Migration struct {
	// Version is the number the file name starts with.
	Version uint32
	// Name is the file name, 0001_init.sql.
	Name string
	// Statements run one per Exec (the native protocol takes one at a time).
	Statements []string
}

var fileName = regexp.MustCompile(`^([0-9]+)_[A-Za-z0-9_]+\.sql$`)

// Load reads the *.sql files at the root of fsys, sorted by name.
func Load(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	sort.Strings(names)
	seen := map[uint32]string{}
	out := make([]Migration, 0, len(names))
	for _, name := range names {
		m := fileName.FindStringSubmatch(name)
		if m == nil {
			return nil, fmt.Errorf("%w: %s: want NNNN_name.sql", ErrBadMigration, name)
		}
		v, err := strconv.ParseUint(m[1], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: version: %w", ErrBadMigration, name, err)
		}
		if other, dup := seen[uint32(v)]; dup {
			return nil, fmt.Errorf("%w: %s: version %d is also %s", ErrBadMigration, name, v, other)
		}
		seen[uint32(v)] = name
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		stmts := Split(string(data))
		if len(stmts) == 0 {
			return nil, fmt.Errorf("%w: %s: no statements", ErrBadMigration, name)
		}
		out = append(out, Migration{Version: uint32(v), Name: path.Base(name), Statements: stmts})
	}
	return out, nil
}

// Split cuts a file into statements at every ';' that ends a line. Chunks
// that hold only comments and blank lines are dropped.
func Split(sql string) []string {
	sql = strings.ReplaceAll(sql, "\r\n", "\n")
	var out []string
	for _, chunk := range strings.Split(sql+"\n", ";\n") {
		if code(chunk) != "" {
			out = append(out, strings.TrimSpace(chunk))
		}
	}
	return out
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

// Run creates the database of opts when missing and applies the pending
// migrations of fsys to it. It returns the names of the files it applied.
// With a cluster name, every statement runs ON CLUSTER in its ForCluster
// form, and the record of applied files is itself a replicated table that
// every node shares. The server must be up; Run does not wait for it.
func Run(ctx context.Context, opts *clickhouse.Options, fsys fs.FS, cluster string, logger *slog.Logger) ([]string, error) {
	migrations, err := Load(fsys)
	if err != nil {
		return nil, err
	}
	database := opts.Auth.Database
	if cluster != "" {
		if migrations, err = ForCluster(migrations, Cluster{Name: cluster, Database: database}); err != nil {
			return nil, err
		}
	}
	if err := createDatabase(ctx, opts, database, cluster); err != nil {
		return nil, err
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", database, err)
	}
	applied, err := apply(ctx, conn, database, recordTable(database, cluster), migrations, logger)
	if cerr := conn.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close database %s: %w", database, cerr)
	}
	return applied, err
}

// createDatabase runs CREATE DATABASE through a connection to the default
// database, since connecting to a missing one fails.
func createDatabase(ctx context.Context, opts *clickhouse.Options, database, cluster string) (err error) {
	admin := *opts
	admin.Auth.Database = "default"
	conn, err := clickhouse.Open(&admin)
	if err != nil {
		return fmt.Errorf("create database %s: %w", database, err)
	}
	defer func() {
		if cerr := conn.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("create database %s: close: %w", database, cerr)
		}
	}()
	stmt := "CREATE DATABASE IF NOT EXISTS " + quote(database)
	if cluster != "" {
		stmt += " ON CLUSTER " + cluster
	}
	if err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("create database %s: %w", database, err)
	}
	return nil
}

// recordTable is the DDL of Table: on a cluster, one replicated table
// that every node of every shard shares, so any analytics instance sees
// what another applied.
func recordTable(database, cluster string) string {
	const columns = " (version UInt32, name String, applied_at DateTime('UTC'))"
	if cluster == "" {
		return "CREATE TABLE IF NOT EXISTS " + Table + columns + " ENGINE = ReplacingMergeTree() ORDER BY version"
	}
	return "CREATE TABLE IF NOT EXISTS " + Table + " ON CLUSTER " + cluster + columns +
		" ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/" + database + "/" + Table + "', '{replica}') ORDER BY version"
}

func apply(ctx context.Context, conn driver.Conn, database, recordDDL string, migrations []Migration, logger *slog.Logger) ([]string, error) {
	err := conn.Exec(ctx, recordDDL)
	if err != nil {
		return nil, fmt.Errorf("create %s.%s: %w", database, Table, err)
	}
	done, err := appliedVersions(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("read %s.%s: %w", database, Table, err)
	}
	var applied []string
	for _, m := range migrations {
		if done[m.Version] {
			continue
		}
		ran, err := runFile(ctx, conn, database, m, logger)
		if err != nil {
			return applied, err
		}
		if !ran {
			continue // another migrator applied and recorded it meanwhile
		}
		if err := record(ctx, conn, m); err != nil {
			return applied, fmt.Errorf("migrate %s: record %s: %w", database, m.Name, err)
		}
		logger.InfoContext(ctx, "migration applied", "database", database, "migration", m.Name, "statements", len(m.Statements))
		applied = append(applied, m.Name)
	}
	return applied, nil
}

// fileAttempts is how many times one file is run before its error is
// returned. Several analytics instances may start together and migrate
// the same database: files are idempotent, but their statements can
// interleave (one instance drops a view another has just created and is
// about to read, 0004), so a failed file is run again whole, after a
// pause, unless another instance has recorded it by then.
const fileAttempts = 5

// filePause is the pause before the second attempt; it doubles.
const filePause = 100 * time.Millisecond

// runFile runs m's statements, again after a failure (fileAttempts). It
// reports false when another migrator recorded m meanwhile.
func runFile(ctx context.Context, conn driver.Conn, database string, m Migration, logger *slog.Logger) (bool, error) {
	pause := filePause
	for attempt := 1; ; attempt++ {
		err := runStatements(ctx, conn, database, m, logger)
		if err == nil {
			return true, nil
		}
		if attempt == fileAttempts || ctx.Err() != nil {
			return false, err
		}
		logger.WarnContext(ctx, "migration failed; running it again (another migrator may be running)",
			"database", database, "migration", m.Name, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return false, err
		case <-time.After(pause):
		}
		pause *= 2
		if done, derr := appliedVersions(ctx, conn); derr == nil && done[m.Version] {
			logger.InfoContext(ctx, "migration applied by another migrator", "database", database, "migration", m.Name)
			return false, nil
		}
	}
}

func runStatements(ctx context.Context, conn driver.Conn, database string, m Migration, logger *slog.Logger) error {
	for i, stmt := range m.Statements {
		err := conn.Exec(ctx, stmt)
		if err != nil && isAddColumn(stmt) && columnExists(err) {
			// Added by an earlier run that stopped before recording m.
			logger.InfoContext(ctx, "migration column already added", "database", database, "migration", m.Name, "statement", i+1)
			err = nil
		}
		if err != nil {
			return fmt.Errorf("migrate %s: %s statement %d: %w", database, m.Name, i+1, err)
		}
	}
	return nil
}

// addColumn matches an ALTER TABLE ... ADD COLUMN statement.
var addColumn = regexp.MustCompile(`(?is)^ALTER\s+TABLE\s+\S+(\s+ON\s+CLUSTER\s+\S+)?\s+ADD\s+COLUMN\s`)

// isAddColumn reports whether stmt, past its comment lines, adds a column.
// 18.16 has no ADD COLUMN IF NOT EXISTS, so such a statement is made
// idempotent here instead of in its file.
func isAddColumn(stmt string) bool {
	return addColumn.MatchString(code(stmt))
}

// Codes a server answers ADD COLUMN with when the column exists: 18.16
// says ILLEGAL_COLUMN, current servers DUPLICATE_COLUMN.
const (
	codeDuplicateColumn = 15
	codeIllegalColumn   = 44
)

// columnExists reports whether err is the server refusing to add a column
// that is already there.
func columnExists(err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && (ex.Code == codeDuplicateColumn || ex.Code == codeIllegalColumn) &&
		strings.Contains(ex.Message, "already exists")
}

// record inserts m's row. A batch, not INSERT ... VALUES through Exec:
// 18.16 keeps waiting for a data block after the latter.
func record(ctx context.Context, conn driver.Conn, m Migration) error {
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+Table+" (version, name, applied_at)")
	if err != nil {
		return err
	}
	if err := batch.Append(m.Version, m.Name, time.Now().UTC().Truncate(time.Second)); err != nil {
		return errors.Join(err, batch.Abort())
	}
	return batch.Send()
}

func appliedVersions(ctx context.Context, conn driver.Conn) (map[uint32]bool, error) {
	rows, err := conn.Query(ctx, "SELECT version FROM "+Table+" FINAL")
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	done := map[uint32]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		done[v] = true
	}
	return done, rows.Err()
}

// quote writes a database name as a quoted identifier.
func quote(name string) string {
	return "`" + strings.ReplaceAll(strings.ReplaceAll(name, `\`, `\\`), "`", "\\`") + "`"
}
