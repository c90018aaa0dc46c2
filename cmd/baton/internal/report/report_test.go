package report

import (
	"bytes"
	"context"
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

	"github.com/baton-voice/baton/schemas/panels"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, parent, dir, "go.work not found above the test directory")
		dir = parent
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// clickHouse starts a private server with deploy/local/clickhouse.sh,
// creates database baton with the migrations of schemas/clickhouse, and
// returns its address and a connection. It fails when clickhouse-server is
// missing; -short skips it.
func clickHouse(t *testing.T) (string, driver.Conn) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs clickhouse-server; run without -short")
	}
	root := repoRoot(t)
	script := filepath.Join(root, "deploy", "local", "clickhouse.sh")
	dir := t.TempDir()
	tcp := freePort(t)
	start := exec.CommandContext(t.Context(), script, "start", dir)
	start.Env = append(os.Environ(), "CH_TCP_PORT="+strconv.Itoa(tcp), "CH_HTTP_PORT="+strconv.Itoa(freePort(t)))
	out, err := start.CombinedOutput()
	require.NoError(t, err, "clickhouse-server is needed (apt-get install clickhouse-server): %s", out)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), time.Minute)
		defer cancel()
		_ = exec.CommandContext(ctx, script, "stop", dir).Run()
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tcp))
	admin, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Protocol: clickhouse.Native})
	require.NoError(t, err)
	require.NoError(t, admin.Exec(t.Context(), "CREATE DATABASE IF NOT EXISTS baton"))
	require.NoError(t, admin.Close())

	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Protocol: clickhouse.Native,
		Auth: clickhouse.Auth{Database: "baton"}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	files, err := filepath.Glob(filepath.Join(root, "schemas", "clickhouse", "*.sql"))
	require.NoError(t, err)
	sort.Strings(files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		for chunk := range strings.SplitSeq(string(data)+"\n", ";\n") {
			if code := stripComments(chunk); code != "" {
				require.NoError(t, conn.Exec(t.Context(), code), "%s: %s", f, code)
			}
		}
	}
	return addr, conn
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

// The report prints every panel's exact figures for the window, counting
// replayed rows once.
func TestReport(t *testing.T) {
	addr, conn := clickHouse(t)
	day := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	for range 2 { // a replay inserts the same keys again
		b, err := conn.PrepareBatch(t.Context(), "INSERT INTO handoffs (command_id, call_id, requested_at, requested_ms, destination, method, reason)")
		require.NoError(t, err)
		for i, h := range []struct{ id, reason, dest string }{{"h1", "billing", "support"}, {"h2", "billing", "support"}, {"h3", "technical", "sales"}} {
			ts := day.Add(time.Duration(i) * 10 * time.Minute)
			require.NoError(t, b.Append(h.id, "call-"+h.id, ts, uint64(ts.UnixMilli()), h.dest, "REFER", h.reason))
		}
		require.NoError(t, b.Send())
		b, err = conn.PrepareBatch(t.Context(), "INSERT INTO transfer_outcomes (event_id, command_id, time, time_ms, status, sip_code, elapsed_ms)")
		require.NoError(t, err)
		require.NoError(t, b.Append("o1", "h1", day, uint64(1), "succeeded", int32(200), uint64(900)))
		require.NoError(t, b.Append("o2", "h2", day, uint64(2), "failed", int32(603), uint64(100)))
		require.NoError(t, b.Send())
		b, err = conn.PrepareBatch(t.Context(), "INSERT INTO calls (call_id, started_at, started_ms, callee_number, version)")
		require.NoError(t, err)
		require.NoError(t, b.Append("call-h1", day, uint64(1), "+15550199", uint64(1)))
		require.NoError(t, b.Append("call-h2", day, uint64(2), "+15550199", uint64(2)))
		require.NoError(t, b.Send())
		b, err = conn.PrepareBatch(t.Context(), "INSERT INTO agent_streams (event_id, call_id, stream_sid, ended_at, ended_ms, reason, action, frames_played, late)")
		require.NoError(t, err)
		require.NoError(t, b.Append("a1", "call-h1", "MZ1", day, uint64(1), "agent_closed", "hangup", uint64(250), uint64(3)))
		require.NoError(t, b.Send())
	}

	var out bytes.Buffer
	require.NoError(t, Run(t.Context(), Options{Addr: addr, Database: "baton", Username: "default",
		From: day, To: day.Add(time.Hour), Limit: 10}, &out))
	got := out.String()
	for _, want := range []string{
		"Baton handoffs 2025-06-01 10:00 to 2025-06-01 11:00 UTC (ClickHouse 18.16",
		"Handoffs by reason per hour",
		"2025-06-01 10:00:00  billing    2",
		"2025-06-01 10:00:00  technical  1",
		"Success rate by destination and method",
		"sales        REFER   1         0          0       1        0.0%",
		"support      REFER   2         1          1       0        50.0%",
		"Time to transfer",
		"REFER   1          900     900     900     900",
		"Calls per dialed number",
		"+15550199      2",
		"Recent handoffs",
		"call-h3  h3          technical  sales        REFER   pending    0         -",
		"call-h1  h1          billing    support      REFER   succeeded  200       900",
		"Agent streams per hour by end reason",
		"Agent failures by reason and on_agent_failure action",
		"agent_closed",
	} {
		require.Contains(t, got, want, got)
	}
	require.Equal(t, len(panels.All()), strings.Count(got, "\n\n"), "every panel, the agent's too:\n%s", got)
	require.Equal(t, 10, len(panels.All()))

	// Numbers, call ids and reasons are caller-chosen text: printed
	// escaped, never raw (issue 14, finding 9).
	const owned = "\x1b[2J\x1b]0;owned\a"
	later := day.Add(24 * time.Hour)
	b, err := conn.PrepareBatch(t.Context(), "INSERT INTO handoffs (command_id, call_id, requested_at, requested_ms, destination, method, reason)")
	require.NoError(t, err)
	require.NoError(t, b.Append("h9", "call-"+owned, later, uint64(later.UnixMilli()), owned, "REFER", owned))
	require.NoError(t, b.Send())
	b, err = conn.PrepareBatch(t.Context(), "INSERT INTO calls (call_id, started_at, started_ms, callee_number, version)")
	require.NoError(t, err)
	require.NoError(t, b.Append("call-"+owned, later, uint64(later.UnixMilli()), owned, uint64(1)))
	require.NoError(t, b.Send())
	out.Reset()
	require.NoError(t, Run(t.Context(), Options{Addr: addr, Database: "baton", Username: "default",
		From: later, To: later.Add(time.Hour), Limit: 10}, &out))
	got = out.String()
	require.NotContains(t, got, "\x1b", "ESC reached the terminal")
	require.NotContains(t, got, "\a", "BEL reached the terminal")
	require.Contains(t, got, `call-\x1b[2J\x1b]0;owned\a  h9`, got)
	require.Contains(t, got, `\x1b[2J\x1b]0;owned\a  1`, "calls per dialed number:\n%s", got)
}
