//go:build chdb

// The test in this file runs the lookup and window queries of this
// package on a current ClickHouse (26.x in process through chDB,
// docs/decisions/0011-current-clickhouse-through-chdb.md), after the
// shipped migrations including 0006. chdb-go loads libchdb.so when the
// package initialises, so the file needs the chdb tag and CHDB_LIB_PATH
// (`make test` sets both).
package chreplay

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chdb-io/chdb-go/chdb"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/cmd/baton/internal/clickhousetest"
	"github.com/baton-voice/baton/cmd/baton/internal/replay"
	"github.com/baton-voice/baton/cmd/baton/internal/synthcalls"
	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/schemas/panels"
)

// tsvRows reads rows of Columns with payload_proto as hex, as the
// wrapped queries below return them.
func tsvRows(t *testing.T, out string) []Row {
	t.Helper()
	var rows []Row
	for line := range strings.Lines(out) {
		f := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
		require.Len(t, f, 11, line)
		p, err := strconv.ParseInt(f[1], 10, 32)
		require.NoError(t, err)
		off, err := strconv.ParseInt(f[2], 10, 64)
		require.NoError(t, err)
		ms, err := strconv.ParseUint(f[7], 10, 64)
		require.NoError(t, err)
		payload, err := hex.DecodeString(f[10])
		require.NoError(t, err)
		rows = append(rows, Row{Topic: f[0], Partition: int32(p), Offset: off, EventID: f[3], Type: f[4], Source: f[5], CallID: f[6],
			TimeMS: ms, CETime: f[8], TraceParent: f[9], Payload: string(payload)})
	}
	return rows
}

// hexed wraps a query of Columns so that the payload comes back as hex
// (TabSeparated escapes bytes; hex is plain).
func hexed(q string) string {
	return "SELECT topic, partition, offset, event_id, type, source, call_id, time_ms, ce_time, traceparent, hex(payload_proto) FROM (" +
		q + ")"
}

// TestQueriesOnCurrentEngine migrates a chDB database with every shipped
// migration, inserts a day of synthetic calls (each row twice, as a
// Kafka replay would), and checks on ClickHouse 26.x that:
//   - the lookup query uses the primary key (EXPLAIN indexes) and reads
//     each call back byte for byte, nanosecond times included;
//   - the window's count, call list (with --trunk) and batched events
//     queries return what was inserted.
func TestQueriesOnCurrentEngine(t *testing.T) {
	dir := t.TempDir()
	s, err := chdb.NewSession(filepath.Join(dir, "data"))
	require.NoError(t, err, "open chDB (CHDB_LIB_PATH=%s)", os.Getenv("CHDB_LIB_PATH"))
	t.Cleanup(s.Close)
	run := func(sql string) string {
		t.Helper()
		res, err := s.Query(sql, "TabSeparated")
		require.NoErrorf(t, err, "%s", sql)
		defer res.Free()
		require.NoErrorf(t, res.Error(), "%s", sql)
		return res.String()
	}
	run("CREATE DATABASE baton")
	run("USE baton")
	t.Logf("current engine: ClickHouse %s (chDB)", strings.TrimSpace(run("SELECT version()")))
	for _, st := range clickhousetest.Statements(t) {
		run(st)
	}

	from := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	var calls []synthcalls.Call
	require.NoError(t, synthcalls.Generate(t.Context(), synthcalls.Config{Calls: 20, From: from, To: from.Add(24 * time.Hour), Seed: 3, Partitions: 3}, 20,
		func(_ context.Context, cs []synthcalls.Call) error { calls = cs; return nil }))
	var evRows, callRows []string
	for _, c := range calls {
		for _, rec := range c.Records {
			ev, err := events.Decode(recordOf(rec))
			require.NoError(t, err)
			ceTime := ""
			for _, h := range rec.Headers {
				if h.Key == events.HeaderTime {
					ceTime = string(h.Value)
				}
			}
			evRows = append(evRows, fmt.Sprintf("(%s, %s, %s, %s, toDateTime(%d), %d, %s, %d, %d, unhex('%x'), %s, '')",
				panels.Quote(ev.ID), panels.Quote(ev.Type), panels.Quote(c.ID), panels.Quote(ev.Source), ev.Time.Unix(), ev.Time.UnixMilli(), panels.Quote(rec.Topic),
				rec.Partition, rec.Offset, rec.Value, panels.Quote(ceTime)))
			if ev.Type == events.TypeCallStarted {
				callRows = append(callRows, fmt.Sprintf("(%s, toDateTime(%d), %d, %s, %d)", panels.Quote(c.ID), ev.Time.Unix(),
					ev.Time.UnixMilli(), panels.Quote(c.Trunk), ev.Time.UnixMilli()))
			}
		}
	}
	for range 2 {
		run("INSERT INTO events (event_id, type, call_id, source, time, time_ms, topic, partition, offset, payload_proto, ce_time, traceparent) VALUES " +
			strings.Join(evRows, ", "))
		run("INSERT INTO calls (call_id, started_at, started_ms, trunk, version) VALUES " + strings.Join(callRows, ", "))
	}

	plan := run("EXPLAIN indexes = 1 " + CallQuery(calls[5].ID, nil))
	require.Contains(t, plan, "PrimaryKey", plan)
	require.Contains(t, plan, "call_id", plan)

	for _, c := range calls {
		var got []replay.Record
		seen := map[string]bool{}
		for _, r := range tsvRows(t, run(hexed(CallQuery(c.ID, nil)))) {
			if !seen[r.EventID] {
				seen[r.EventID] = true
				rec, exact := r.Record()
				require.True(t, exact)
				got = append(got, rec)
			}
		}
		require.ElementsMatch(t, c.Records, got, c.ID)
	}

	w := Window{From: from, To: from.Add(12 * time.Hour), Trunk: "sbc-east"}
	var want []string
	for _, c := range calls {
		if c.Trunk == "sbc-east" && c.Records[0].Timestamp.Before(w.To) {
			want = append(want, c.ID)
		}
	}
	slices.Sort(want)
	require.NotEmpty(t, want)
	require.Equal(t, strconv.Itoa(len(want))+"\n", run(w.CountQuery()))
	require.Equal(t, strings.Join(want, "\n")+"\n", run(w.CallsQuery()))
	n := 0
	for _, c := range calls {
		if slices.Contains(want, c.ID) {
			n += len(c.Records)
		}
	}
	require.Len(t, tsvRows(t, run(hexed(EventsQuery(want, nil)))), 2*n, "both copies; Stream keeps one")
}

func recordOf(r replay.Record) *kgo.Record {
	return &kgo.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Headers: r.Headers,
		Timestamp: r.Timestamp}
}
