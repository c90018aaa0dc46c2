package migrate_test

import (
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/schemas"
	"github.com/baton-voice/baton/services/analytics/internal/chconn"
	"github.com/baton-voice/baton/services/analytics/internal/chtest"
	"github.com/baton-voice/baton/services/analytics/internal/migrate"
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

func TestSplit(t *testing.T) {
	tests := []struct {
		name string
		sql  string
		want []string
	}{
		{"one without final semicolon", "SELECT 1", []string{"SELECT 1"}},
		{"two", "CREATE TABLE a (x UInt8) ENGINE = Memory;\nSELECT 2;\n", []string{
			"CREATE TABLE a (x UInt8) ENGINE = Memory", "SELECT 2",
		}},
		{"comment-only chunks dropped", "-- head\n\n-- more\n;\nSELECT 1;\n-- tail\n", []string{"SELECT 1"}},
		{"semicolon inside a line does not split", "SELECT ';' AS x;\n", []string{"SELECT ';' AS x"}},
		{"crlf", "SELECT 1;\r\nSELECT 2;\r\n", []string{"SELECT 1", "SELECT 2"}},
		{"empty", "\n-- nothing\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, migrate.Split(tt.sql))
		})
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		files   fstest.MapFS
		want    []string
		wantErr string
	}{
		{"name order", fstest.MapFS{
			"0002_b.sql": {Data: []byte("SELECT 2;\n")},
			"0001_a.sql": {Data: []byte("SELECT 1;\n")},
			"README.md":  {Data: []byte("not a migration")},
		}, []string{"0001_a.sql", "0002_b.sql"}, ""},
		{"bad name", fstest.MapFS{"init.sql": {Data: []byte("SELECT 1")}}, nil, "want NNNN_name.sql"},
		{"repeated version", fstest.MapFS{
			"0001_a.sql": {Data: []byte("SELECT 1")},
			"01_b.sql":   {Data: []byte("SELECT 1")},
		}, nil, "version 1 is also"},
		{"no statements", fstest.MapFS{"0001_a.sql": {Data: []byte("-- nothing\n")}}, nil, "no statements"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms, err := migrate.Load(tt.files)
			if tt.wantErr != "" {
				require.ErrorIs(t, err, migrate.ErrBadMigration)
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			var names []string
			for _, m := range ms {
				names = append(names, m.Name)
			}
			require.Equal(t, tt.want, names)
		})
	}
}

// The embedded migrations load: names are valid, versions unique.
func TestEmbeddedMigrationsLoad(t *testing.T) {
	ms, err := migrate.Load(embedded(t))
	require.NoError(t, err)
	require.NotEmpty(t, ms)
	require.Equal(t, "0001_init.sql", ms[0].Name)
}

func embedded(t *testing.T) fs.FS {
	t.Helper()
	fsys, err := fs.Sub(schemas.ClickHouse, "clickhouse")
	require.NoError(t, err)
	return fsys
}

// Migrations apply once: the second run applies nothing, and every file is
// recorded exactly once.
func TestRunAppliesOnce(t *testing.T) {
	cfg := server.Config(t)
	opts := chconn.Options(cfg, cfg.Database)
	fsys := embedded(t)
	files, err := migrate.Load(fsys)
	require.NoError(t, err)
	logger := slog.New(slog.DiscardHandler)

	applied, err := migrate.Run(t.Context(), opts, fsys, "", logger)
	require.NoError(t, err)
	require.Len(t, applied, len(files))

	again, err := migrate.Run(t.Context(), opts, fsys, "", logger)
	require.NoError(t, err)
	require.Empty(t, again)

	conn := server.Conn(t, cfg)
	for _, f := range files {
		var n uint64
		require.NoError(t, conn.QueryRow(t.Context(),
			"SELECT count() FROM schema_migrations WHERE version = ? AND name = ?", f.Version, f.Name).Scan(&n))
		require.Equal(t, uint64(1), n, f.Name)
	}
	var total uint64
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT count() FROM schema_migrations").Scan(&total))
	require.Equal(t, uint64(len(files)), total)

	for _, table := range []string{"events", "calls", "call_ends", "handoffs", "transfer_outcomes", "agent_metrics",
		"agent_streams", "agent_connects", "agent_stream_facts"} {
		var n uint64
		require.NoError(t, conn.QueryRow(t.Context(),
			"SELECT count() FROM system.tables WHERE database = ? AND name = ?", cfg.Database, table).Scan(&n))
		require.Equal(t, uint64(1), n, table)
	}
}

// A new file is applied on the next run, alone.
func TestRunAppliesPendingOnly(t *testing.T) {
	cfg := server.Config(t)
	opts := chconn.Options(cfg, cfg.Database)
	logger := slog.New(slog.DiscardHandler)
	first := fstest.MapFS{
		"0001_a.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE = MergeTree() ORDER BY x;\n")},
	}
	applied, err := migrate.Run(t.Context(), opts, first, "", logger)
	require.NoError(t, err)
	require.Equal(t, []string{"0001_a.sql"}, applied)

	second := fstest.MapFS{
		"0001_a.sql": first["0001_a.sql"],
		// Not idempotent on purpose: running it twice would fail.
		"0002_b.sql": {Data: []byte("CREATE TABLE b (x UInt8) ENGINE = MergeTree() ORDER BY x;\n" +
			"INSERT INTO b (x) SELECT 7;\n")},
	}
	applied, err = migrate.Run(t.Context(), opts, second, "", logger)
	require.NoError(t, err)
	require.Equal(t, []string{"0002_b.sql"}, applied)
	applied, err = migrate.Run(t.Context(), opts, second, "", logger)
	require.NoError(t, err)
	require.Empty(t, applied)

	conn := server.Conn(t, cfg)
	var x uint8
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT x FROM b").Scan(&x))
	require.Equal(t, uint8(7), x)
}

// A failing statement stops the run and leaves the file unrecorded.
func TestRunStopsAtFailure(t *testing.T) {
	cfg := server.Config(t)
	opts := chconn.Options(cfg, cfg.Database)
	bad := fstest.MapFS{"0001_bad.sql": {Data: []byte("CREATE TABLE c (x NoSuchType) ENGINE = Memory;\n")}}
	applied, err := migrate.Run(t.Context(), opts, bad, "", slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "0001_bad.sql statement 1")
	require.Empty(t, applied)

	conn := server.Conn(t, cfg)
	var n uint64
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT count() FROM schema_migrations").Scan(&n))
	require.Zero(t, n)
}

// An ADD COLUMN whose column is already there (an earlier run added it and
// stopped before recording the file) counts as done; other ADD COLUMN
// failures still stop the run.
func TestRunAddColumnAgain(t *testing.T) {
	cfg := server.Config(t)
	opts := chconn.Options(cfg, cfg.Database)
	logger := slog.New(slog.DiscardHandler)
	fsys := fstest.MapFS{"0001_d.sql": {Data: []byte("CREATE TABLE d (x UInt8) ENGINE = MergeTree() ORDER BY x;\n")}}
	_, err := migrate.Run(t.Context(), opts, fsys, "", logger)
	require.NoError(t, err)
	conn := server.Conn(t, cfg)
	// 0002 ran its first statement, then the process died.
	require.NoError(t, conn.Exec(t.Context(), "ALTER TABLE d ADD COLUMN y String"))

	fsys["0002_y.sql"] = &fstest.MapFile{Data: []byte("-- y was added before the crash.\n" +
		"ALTER TABLE d ADD COLUMN y String;\n" +
		"alter table d add column z UInt8;\n")}
	applied, err := migrate.Run(t.Context(), opts, fsys, "", logger)
	require.NoError(t, err)
	require.Equal(t, []string{"0002_y.sql"}, applied)
	var n uint64
	require.NoError(t, conn.QueryRow(t.Context(),
		"SELECT count() FROM system.columns WHERE database = ? AND table = 'd' AND name IN ('y', 'z')", cfg.Database).Scan(&n))
	require.Equal(t, uint64(2), n)

	fsys["0003_m.sql"] = &fstest.MapFile{Data: []byte("ALTER TABLE no_such_table ADD COLUMN y String;\n")}
	applied, err = migrate.Run(t.Context(), opts, fsys, "", logger)
	require.ErrorContains(t, err, "0003_m.sql statement 1")
	require.Empty(t, applied)
}

// Analytics instances that start together migrate the same database at
// once. A file that drops and re-creates dependent views (0004) can then
// interleave with itself: one migrator drops v1 between another's CREATE
// v1 and its CREATE v2 that reads v1. A failed file is run again, so
// every migrator succeeds and the views are there (the scale-out stack
// test hit this with two analytics instances).
func TestConcurrentMigratorsConverge(t *testing.T) {
	fsys := fstest.MapFS{"0001_views.sql": {Data: []byte(
		"DROP TABLE IF EXISTS v2;\nDROP TABLE IF EXISTS v1;\n" +
			"CREATE VIEW IF NOT EXISTS v1 AS SELECT 1 AS x;\nCREATE VIEW IF NOT EXISTS v2 AS SELECT x FROM v1;\n")}}
	for round := range 5 {
		cfg := server.Config(t)
		opts := chconn.Options(cfg, cfg.Database)
		errs := make(chan error, 8)
		for range 8 {
			go func() {
				_, err := migrate.Run(t.Context(), opts, fsys, "", slog.New(slog.DiscardHandler))
				errs <- err
			}()
		}
		for range 8 {
			require.NoError(t, <-errs, "round %d", round)
		}
		var x uint8
		require.NoError(t, server.Conn(t, cfg).QueryRow(t.Context(), "SELECT x FROM v2").Scan(&x))
		require.Equal(t, uint8(1), x)
	}
}
