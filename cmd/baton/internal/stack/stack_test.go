package stack

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/cmd/baton/internal/checker"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
)

// repoRoot walks up to the directory that holds go.work.
func repoRoot(tb testing.TB) string {
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

// binaries returns a directory with the built services: BATON_BIN_DIR when
// set (make test builds them once), else a fresh build into a temp dir.
func binaries(tb testing.TB, repo string) string {
	tb.Helper()
	if dir := os.Getenv("BATON_BIN_DIR"); dir != "" {
		return dir
	}
	dir := tb.TempDir()
	builds := map[string]string{
		"ingress":   "./services/ingress/cmd/ingress",
		"router":    "./services/router/cmd/router",
		"transfer":  "./services/transfer/cmd/transfer",
		"analytics": "./services/analytics/cmd/analytics",
		"baton":     "./cmd/baton",
	}
	for name, pkg := range builds {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		require.NoError(tb, err, "build %s: %s", name, out)
	}
	return dir
}

// requireTools fails (never skips) when a real component is missing.
func requireTools(tb testing.TB, tools ...string) {
	tb.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Fatalf("%s not found: the end-to-end test needs it (make deps installs sip-tester and clickhouse-server)", tool)
		}
	}
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func startStack(t *testing.T) *Stack {
	t.Helper()
	return startStackWith(t, nil)
}

// startStackWith starts the pipeline with replicas instances per stage.
func startStackWith(t *testing.T, replicas map[string]int) *Stack {
	t.Helper()
	return startStackTuned(t, func(o *Options) { o.Replicas = replicas })
}

// startStackTuned starts the pipeline with options tune changed.
func startStackTuned(t *testing.T, tune func(*Options)) *Stack {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: needs sipp and clickhouse-server; run without -short")
	}
	requireTools(t, "sipp", "clickhouse-server")
	repo := repoRoot(t)
	opts := Options{
		BinDir:   binaries(t, repo),
		RunDir:   t.TempDir(),
		RepoDir:  repo,
		Progress: testWriter{t},
	}
	tune(&opts)
	s, err := Start(t.Context(), opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range append([]string{"broker"}, s.Instances()...) {
				t.Logf("--- %s log (tail) ---\n%s", name, tail(s.LogPath(name), 30))
			}
		}
		s.Stop(context.WithoutCancel(t.Context()))
	})
	return s
}

// TestEndToEnd places real SIPp calls carrying X- headers through ingress,
// Kafka (the embedded broker over TCP), router, transfer (REFER back to the
// SIPp SBC, which answers 202 and NOTIFYs 100, 180 and 200) and analytics into
// ClickHouse, then checks what reached the SBC and what reached ClickHouse.
func TestEndToEnd(t *testing.T) {
	s := startStack(t)
	const calls = 3
	since := time.Now().Add(-time.Second)
	res, err := s.PlaceCalls(t.Context(), "sbc_refer", calls, calls)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode, "sipp failed; logs in %s; failures %v\n%s", res.LogDir, res.Failures,
		tail(filepath.Join(res.LogDir, "sipp.out"), 30))
	require.Empty(t, res.Failures)
	require.Len(t, res.Refers, calls, "every call must be REFERred back to the SBC")

	conn, err := s.Open()
	require.NoError(t, err)
	defer conn.Close()
	rows, err := WaitHandoffs(t.Context(), conn, since, calls, 60*time.Second)
	require.NoError(t, err)
	byCall := map[string]HandoffRow{}
	for _, r := range rows {
		byCall[r.CallID] = r
	}

	for _, refer := range res.Refers {
		// The X- headers of the INVITE came back, rendered by the router's
		// templates, inside the Refer-To URI.
		headers, err := sipx.ReferToHeaders(refer.ReferTo)
		require.NoError(t, err, refer.ReferTo)
		got := map[string]string{}
		for _, h := range headers {
			got[h.Name] = h.Value
		}
		require.NotEmpty(t, refer.Sent["x_customer_id"])
		require.Equal(t, refer.Sent["x_customer_id"], got["X-Customer-Id"], refer.ReferTo)
		require.Equal(t, refer.Sent["x_intent"], got["X-Intent"], refer.ReferTo)
		require.Equal(t, refer.Sent["x_language"], got["X-Language"], refer.ReferTo)
		require.Equal(t, refer.CallID, got["X-Baton-Call-Id"], refer.ReferTo)

		// ClickHouse has the call and its handoff, with the outcome the
		// SBC's NOTIFY reported.
		row, ok := byCall[refer.CallID]
		require.True(t, ok, "call %s not in ClickHouse; rows: %+v", refer.CallID, rows)
		require.Equal(t, refer.Sent["x_customer_id"], row.CustomerID)
		require.Equal(t, "support", row.Destination)
		require.Equal(t, "REFER", row.Method)
		require.Equal(t, "succeeded", row.Status)
		require.EqualValues(t, 200, row.SIPCode)
	}

	// Kafka has each handoff's steps in order: the 202, the SBC's progress
	// NOTIFYs (100 Trying, 180 Ringing) and the final 200.
	recs, err := checker.Read(t.Context(), s.BrokerAddr)
	require.NoError(t, err)
	steps := transferSteps(recs)
	for _, refer := range res.Refers {
		require.Equal(t, []string{"OUTCOME_STATUS_ACCEPTED 202", "OUTCOME_STATUS_PROGRESS 100", "OUTCOME_STATUS_PROGRESS 180",
			"OUTCOME_STATUS_SUCCEEDED 200"}, steps[refer.CallID], refer.CallID)
	}

	// The summary decides a warm transfer by its bridged outcome, not by the
	// ended one that follows, and shows an undecided one as it stands.
	seed := func(query string) {
		require.NoError(t, conn.Exec(t.Context(), query))
	}
	at := uint64(time.Now().UnixMilli())
	seed(fmt.Sprintf("INSERT INTO calls (call_id, started_ms, version) SELECT 'warm-1', %d, %d", at, at))
	seed(fmt.Sprintf("INSERT INTO calls (call_id, started_ms, version) SELECT 'warm-2', %d, %d", at, at))
	seed("INSERT INTO handoffs (command_id, call_id, destination, method) SELECT 'wc1', 'warm-1', 'sales', 'INVITE'")
	seed("INSERT INTO handoffs (command_id, call_id, destination, method) SELECT 'wc2', 'warm-2', 'sales', 'INVITE'")
	for i, o := range []struct {
		cmd, status string
		code        int
	}{{"wc1", "ringing", 180}, {"wc1", "bridged", 200}, {"wc1", "ended", 0}, {"wc2", "ringing", 180}} {
		seed(fmt.Sprintf("INSERT INTO transfer_outcomes (event_id, command_id, call_id, time_ms, status, sip_code) "+
			"SELECT 'we%d', '%s', '', %d, '%s', %d", i, o.cmd, at+uint64(i), o.status, o.code))
	}
	rows, err = Handoffs(t.Context(), conn, time.UnixMilli(int64(at)))
	require.NoError(t, err)
	got := map[string]HandoffRow{}
	for _, r := range rows {
		got[r.CallID] = r
	}
	require.Equal(t, "succeeded", got["warm-1"].Status)
	require.EqualValues(t, 200, got["warm-1"].SIPCode)
	require.Equal(t, "ringing", got["warm-2"].Status)
}

// requireSucceededHandoff waits for the one handoff ClickHouse has since
// then and checks that it is the call's, succeeded with 200, for the
// customer the INVITE named.
func requireSucceededHandoff(t *testing.T, s *Stack, since time.Time, callID, customer string) {
	t.Helper()
	ch, err := s.Open()
	require.NoError(t, err)
	defer ch.Close()
	rows, err := WaitHandoffs(t.Context(), ch, since, 1, 60*time.Second)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, callID, rows[0].CallID)
	require.Equal(t, "succeeded", rows[0].Status)
	require.EqualValues(t, 200, rows[0].SIPCode)
	require.Equal(t, customer, rows[0].CustomerID)
}

// transferSteps is each call's transfer outcomes in Kafka, in order, as
// "STATUS code".
func transferSteps(recs []checker.Record) map[string][]string {
	steps := map[string][]string{}
	for _, r := range recs {
		if o, ok := r.Event.Data.(*batonv1.TransferOutcome); ok {
			steps[o.GetCallId()] = append(steps[o.GetCallId()], fmt.Sprintf("%s %d", o.GetStatus(), o.GetSipCode()))
		}
	}
	return steps
}
