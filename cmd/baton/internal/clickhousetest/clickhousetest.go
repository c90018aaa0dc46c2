// Package clickhousetest starts Debian's clickhouse-server 18.16 for
// baton's tests through deploy/local/clickhouse.sh on free loopback ports,
// migrates a database with the shipped migrations (schemas/clickhouse),
// and builds the service binaries tests run beside it. A missing
// clickhouse-server fails the test; only -short skips it.
package clickhousetest

import (
	"context"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/schemas"
)

// RepoRoot is the directory holding go.work above the working directory.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	require.NoError(tb, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(tb, parent, dir, "go.work not found above the test directory")
		dir = parent
	}
}

// FreePort is a free loopback TCP port.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// Server is a private clickhouse-server.
type Server struct {
	// Addr is the native TCP host:port.
	Addr string
}

// Start runs a server for the test and stops it when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	if testing.Short() {
		tb.Skip("needs clickhouse-server; run without -short")
	}
	root := RepoRoot(tb)
	script := filepath.Join(root, "deploy", "local", "clickhouse.sh")
	dir := tb.TempDir()
	tcp := FreePort(tb)
	start := exec.CommandContext(tb.Context(), script, "start", dir)
	start.Env = append(os.Environ(), "CH_TCP_PORT="+strconv.Itoa(tcp), "CH_HTTP_PORT="+strconv.Itoa(FreePort(tb)))
	out, err := start.CombinedOutput()
	require.NoError(tb, err, "clickhouse-server is needed (apt-get install clickhouse-server): %s", out)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(tb.Context()), time.Minute)
		defer cancel()
		_ = exec.CommandContext(ctx, script, "stop", dir).Run()
	})
	return &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(tcp))}
}

// Database creates database db and returns a connection to it.
func (s *Server) Database(tb testing.TB, db string) driver.Conn {
	tb.Helper()
	admin, err := clickhouse.Open(&clickhouse.Options{Addr: []string{s.Addr}, Protocol: clickhouse.Native})
	require.NoError(tb, err)
	require.NoError(tb, admin.Exec(tb.Context(), "CREATE DATABASE IF NOT EXISTS "+db))
	require.NoError(tb, admin.Close())
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{s.Addr}, Protocol: clickhouse.Native,
		Auth: clickhouse.Auth{Database: db}})
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Statements are the shipped migrations' statements in order, comments
// stripped, split as the analytics migrator splits them.
func Statements(tb testing.TB) []string {
	tb.Helper()
	names, err := fs.Glob(schemas.ClickHouse, "clickhouse/*.sql")
	require.NoError(tb, err)
	sort.Strings(names)
	var out []string
	for _, name := range names {
		data, err := fs.ReadFile(schemas.ClickHouse, name)
		require.NoError(tb, err)
		for chunk := range strings.SplitSeq(string(data)+"\n", ";\n") {
			if code := stripComments(chunk); code != "" {
				out = append(out, code)
			}
		}
	}
	return out
}

// Migrate runs Statements on conn.
func Migrate(tb testing.TB, conn driver.Conn) {
	tb.Helper()
	for _, st := range Statements(tb) {
		require.NoError(tb, conn.Exec(tb.Context(), st), st)
	}
}

func stripComments(chunk string) string {
	var b strings.Builder
	for line := range strings.Lines(chunk) {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "--") {
			b.WriteString(line)
		}
	}
	return strings.TrimSpace(b.String())
}

// Binary returns the path of a service binary: from BATON_BIN_DIR when
// set (make test builds them once), else built from this tree into a
// temp dir. name is ingress, router, transfer or analytics.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	if dir := os.Getenv("BATON_BIN_DIR"); dir != "" {
		return filepath.Join(dir, name)
	}
	bin := filepath.Join(tb.TempDir(), name)
	cmd := exec.CommandContext(tb.Context(), "go", "build", "-o", bin, "./services/"+name+"/cmd/"+name)
	cmd.Dir = RepoRoot(tb)
	out, err := cmd.CombinedOutput()
	require.NoError(tb, err, "build %s: %s", name, out)
	return bin
}
