package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/cmd/baton/internal/clickhousetest"
	"github.com/baton-voice/baton/cmd/baton/internal/synthcalls"
)

func TestSpanFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30d": 30 * 24 * time.Hour, "24h": 24 * time.Hour, "1d12h": 36 * time.Hour, "90m": 90 * time.Minute, "0d": 0,
	} {
		var d span
		require.NoError(t, d.UnmarshalText([]byte(in)), in)
		require.Equal(t, want, time.Duration(d), in)
	}
	for _, in := range []string{"d", "-1d", "30x", "1d-5h", "99999999d", "3.5d"} {
		var d span
		require.Error(t, d.UnmarshalText([]byte(in)), in)
	}
}

// Bad combinations of replay's flags are refused with a clear error
// while parsing, before anything is read.
func TestReplayFlagErrors(t *testing.T) {
	rules := filepath.Join("internal", "replay", "testdata", "rules", "changed.yaml")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"replay"}, "--call is required (or --rules without --call"},
		{[]string{"replay", "--call", "c", "--since", "2w"}, `duration "2w"`},
		{[]string{"replay", "--call", "c", "--source", "s3"}, "--source"},
		{[]string{"replay", "--call", "c", "--trunk", "t"}, "use them with --rules and without --call"},
		{[]string{"replay", "--call", "c", "--rules", rules, "--report", "r.md"}, "use them with --rules and without --call"},
		{[]string{"replay", "--rules", rules, "--source", "kafka"}, "a period is read from ClickHouse"},
		{[]string{"replay", "--rules", rules, "--from", "yesterday"}, `--from: "yesterday": want RFC 3339`},
		{[]string{"replay", "--rules", rules, "--from", "2026-11-02", "--to", "2026-11-01"}, "is not before its end"},
		{[]string{"replay", "--rules", rules, "--batch", "0"}, "--batch 0"},
		{[]string{"export", "--source", "clickhouse"}, "--call is required"},
		{[]string{"replay", "--call", "c", "--kafka-timeout", "0s"}, "--kafka-timeout 0s: want a positive duration"},
		{[]string{"replay", "--rules", rules, "--workers", "0"}, "--workers 0"},
	} {
		var c cli
		p, err := newParser(&c, &strings.Builder{}, &strings.Builder{}, func(int) { t.Fatal("exit called") })
		require.NoError(t, err)
		_, err = p.Parse(tc.args)
		require.ErrorContains(t, err, tc.want, "%v", tc.args)
	}
}

// `baton replay --rules NEW --from --to --report FILE` over a recorded
// period in clickhouse-server 18.16: stdout has the aggregate and the
// throughput, stderr names the source and shows progress, the report
// file is written, and --trunk narrows the calls.
func TestReplayPeriodCommand(t *testing.T) {
	ch := clickhousetest.Start(t)
	conn := ch.Database(t, "baton")
	clickhousetest.Migrate(t, conn)
	router := clickhousetest.Binary(t, "router")
	bench := filepath.Join(clickhousetest.RepoRoot(t), "bench", "replay")
	from := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	to := from.AddDate(0, 0, 30)
	rec := &synthcalls.Recorder{RouterBin: router, Rules: filepath.Join(bench, "old.yaml")}
	require.NoError(t, synthcalls.Generate(t.Context(), synthcalls.Config{Calls: 60, From: from, To: to, Seed: 7}, 25,
		func(ctx context.Context, cs []synthcalls.Call) error {
			if err := rec.Record(ctx, cs); err != nil {
				return err
			}
			return synthcalls.Load(ctx, conn, cs)
		}))

	report := filepath.Join(t.TempDir(), "whatif.md")
	args := []string{"replay", "--rules", filepath.Join(bench, "new.yaml"), "--from", "2026-09-01", "--to", "2026-10-01T00:00:00Z",
		"--clickhouse", ch.Addr, "--router-bin", router, "--batch", "16"}
	out, errOut := runBaton(t, append(args, "--report", report)...)
	require.Contains(t, errOut, "source: clickhouse "+ch.Addr+"/baton: 60 calls from 2026-09-01T00:00:00Z to 2026-10-01T00:00:00Z")
	require.Contains(t, errOut, "re-decided 16 of 60 calls")
	require.Contains(t, errOut, "re-decided 60 of 60 calls")
	require.Contains(t, out, "60 calls re-decided in ")
	require.Contains(t, out, " calls/s)")
	require.Contains(t, out, "rules that never matched: toll-fraud")
	require.Contains(t, out, "billing -> billing-queue  *")
	require.Contains(t, out, "wrote "+report)
	md, err := os.ReadFile(report)
	require.NoError(t, err)
	require.Contains(t, string(md), "# What-if: ")
	require.Contains(t, string(md), "- Calls re-decided: 60 in ")
	require.Contains(t, string(md), "## From → to, per decision")

	out, _ = runBaton(t, append(args, "--trunk", "sbc-west")...)
	require.Contains(t, out, "30 calls re-decided in ")
	require.Contains(t, out, "trunk sbc-west")
}

// With --source auto and no broker listening, replay waits for Kafka
// only --kafka-timeout, says why, and reads the call from ClickHouse.
func TestReplayAutoWithoutBroker(t *testing.T) {
	ch := clickhousetest.Start(t)
	conn := ch.Database(t, "baton")
	clickhousetest.Migrate(t, conn)
	from := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	var calls []synthcalls.Call
	require.NoError(t, synthcalls.Generate(t.Context(), synthcalls.Config{Calls: 2, From: from, To: from.Add(time.Hour), Seed: 9}, 2,
		func(ctx context.Context, cs []synthcalls.Call) error {
			calls = cs
			return synthcalls.Load(ctx, conn, cs)
		}))
	closed := "127.0.0.1:" + strconv.Itoa(clickhousetest.FreePort(t)) // nothing listens there
	out, errOut := runBaton(t, "replay", "--call", calls[1].ID, "--brokers", closed, "--kafka-timeout", "1s", "--clickhouse", ch.Addr)
	require.Contains(t, errOut, "kafka: ")
	require.Contains(t, errOut, "; reading clickhouse")
	require.Contains(t, errOut, "source: clickhouse "+ch.Addr+"/baton ("+strconv.Itoa(len(calls[1].Records))+" records")
	require.Contains(t, out, "call "+calls[1].ID+": "+strconv.Itoa(len(calls[1].Records))+" records")
}
