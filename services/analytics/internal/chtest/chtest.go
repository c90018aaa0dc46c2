// Package chtest runs a private ClickHouse server for a package's tests:
// Start (from TestMain) launches Debian's clickhouse-server through
// deploy/local/clickhouse.sh in a temporary directory on free loopback
// ports, and Server.Database gives each test its own database.
//
// A missing clickhouse-server fails the tests that need it, loudly; only
// `go test -short` skips them.
package chtest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/baton-voice/baton/services/analytics/internal/chconn"
	"github.com/baton-voice/baton/services/analytics/internal/config"
)

// SkipMessage is the reason ClickHouse tests give under -short.
const SkipMessage = "needs clickhouse-server; run without -short"

// startAttempts retries a start whose free port was taken meanwhile.
const startAttempts = 3

// scriptTimeout bounds one run of clickhouse.sh (start waits for SELECT 1).
const scriptTimeout = 90 * time.Second

// Server is a private ClickHouse server, or why there is none.
type Server struct {
	// Addr is the native TCP host:port.
	Addr string
	// HTTPAddr is the HTTP interface's host:port, for queries whose
	// results a test compares as text (the Go driver's HTTP mode fails on
	// 18.16; plain HTTP works).
	HTTPAddr string
	script   Script
	err      error
	short    bool
}

// Start launches a server unless testing.Short() (flags must be parsed:
// call flag.Parse() in TestMain first). It never fails: an error is kept
// and reported by every test that asks for a database.
func Start() *Server {
	if testing.Short() {
		return &Server{short: true}
	}
	s := &Server{}
	s.err = s.start()
	return s
}

func (s *Server) start() error {
	if _, err := ServerBinary(); err != nil {
		return err
	}
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	s.script = Script{Path: filepath.Join(root, "deploy", "local", "clickhouse.sh"), Timeout: scriptTimeout}
	s.script.Dir, err = os.MkdirTemp("", "baton-clickhouse-")
	if err != nil {
		return fmt.Errorf("clickhouse test server: %w", err)
	}
	var errs []error
	for range startAttempts {
		ports, err := freePorts(2)
		if err != nil {
			return fmt.Errorf("clickhouse test server: %w", err)
		}
		out, err := s.script.Run("start", "CH_TCP_PORT="+strconv.Itoa(ports[0]), "CH_HTTP_PORT="+strconv.Itoa(ports[1]))
		if err == nil {
			s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
			s.HTTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
			return nil
		}
		errs = append(errs, fmt.Errorf("%s start: %w\n%s", s.script.Path, err, out))
	}
	_ = os.RemoveAll(s.script.Dir)
	return fmt.Errorf("clickhouse test server did not start: %w", errors.Join(errs...))
}

// Stop stops the server and removes its directory.
func (s *Server) Stop() { s.script.Stop("chtest") }

// Require skips the test under -short and fails it when there is no server.
func (s *Server) Require(tb testing.TB) {
	tb.Helper()
	if s.short {
		tb.Skip(SkipMessage)
	}
	if s.err != nil {
		tb.Fatalf("ClickHouse tests need Debian's clickhouse-server (apt-get install clickhouse-server), "+
			"or run `go test -short` to skip them: %v", s.err)
	}
}

// Config returns a connection config for a database of the test's own,
// which is dropped when the test ends. The database itself is not created.
func (s *Server) Config(tb testing.TB) config.ClickHouse {
	tb.Helper()
	s.Require(tb)
	c := config.Default().ClickHouse
	c.Addr = s.Addr
	c.Database = databaseName(tb)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(tb.Context()), 30*time.Second)
		defer cancel()
		conn, err := clickhouse.Open(chconn.Options(c, "default"))
		if err != nil {
			tb.Errorf("drop database %s: %v", c.Database, err)
			return
		}
		defer func() { _ = conn.Close() }()
		if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+c.Database); err != nil {
			tb.Errorf("drop database %s: %v", c.Database, err)
		}
	})
	return c
}

// Conn opens a connection to database; it is closed when the test ends.
func (s *Server) Conn(tb testing.TB, c config.ClickHouse) driver.Conn {
	tb.Helper()
	s.Require(tb)
	conn, err := clickhouse.Open(chconn.Options(c, c.Database))
	if err != nil {
		tb.Fatalf("open clickhouse %s: %v", c.Addr, err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9_]+`)

// databaseName is unique per test and run: t_<test name>_<random>.
func databaseName(tb testing.TB) string {
	name := unsafeChars.ReplaceAllString(strings.ToLower(tb.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	return "t_" + name + "_" + strings.ToLower(rand.Text()[:8])
}

// ServerBinary finds clickhouse-server the way clickhouse.sh does.
func ServerBinary() (string, error) {
	if p := os.Getenv("CLICKHOUSE_SERVER"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("clickhouse-server is not installed: CLICKHOUSE_SERVER: %w", err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("clickhouse-server"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/clickhouse-server"); err == nil {
		return "/usr/sbin/clickhouse-server", nil
	}
	return "", errors.New("clickhouse-server is not installed (apt-get install clickhouse-server): not on PATH, not /usr/sbin/clickhouse-server, CLICKHOUSE_SERVER unset")
}

// RepoRoot walks up from the working directory to the one holding go.work.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repository root: no go.work above the working directory")
		}
		dir = parent
	}
}

// freePorts asks the OS for n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
