package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/pkg/logtest"
	"github.com/baton-voice/baton/services/analytics/internal/chconn"
)

const crashWait = 90 * time.Second

// The writer dies between an insert and its commit. The broker holds the
// writer's second offset commit, which it sends only once that batch's
// rows are in ClickHouse, and the test SIGKILLs the process while the
// commit is held: no commit, no group leave. Restarted, it reads the
// uncommitted records again and inserts them again, and every count is
// still exact.
func TestCrashBetweenInsertAndCommit(t *testing.T) {
	ch := server.Config(t)
	const calls = 60
	cfg := kafka.DefaultConfig()
	cfg.Partitions = 2
	cluster := kafkatest.Start(t, cfg.Partitions, cfg.Topics.All()...)
	brokers := cluster.ListenAddrs()
	cfg.Brokers = brokers
	held, release := holdCommit(t, cluster, "crash-test", 2)

	bin := filepath.Join(t.TempDir(), "analytics")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	// The records: 60 calls of 4 events over 3 topics and 2 partitions.
	prod, err := kgo.NewClient(kafka.ClientOpts(cfg, slog.New(slog.DiscardHandler))...)
	require.NoError(t, err)
	defer prod.Close()
	var recs []*kgo.Record
	for i := range calls {
		recs = append(recs, crashCall(t, cfg.Topics, fmt.Sprintf("crash-%02d", i), i)...)
	}
	require.NoError(t, prod.ProduceSync(t.Context(), recs...).FirstErr())

	path := writeConfig(t, fmt.Sprintf(`kafka:
  brokers: [%q]
  partitions: 2
  session_timeout: 6s
clickhouse:
  addr: %q
  database: %s
group: crash-test
retry_pause: 50ms
batch:
  max_rows: 50
  max_wait: 100ms
http:
  listen: ""
log:
  level: debug
`, brokers[0], ch.Addr, ch.Database))

	// First run: killed after its second insert, before that commit.
	first := exec.CommandContext(t.Context(), bin, "--config", path)
	var firstLog logtest.Buffer
	first.Stderr = &firstLog
	require.NoError(t, first.Start())
	waitErr := make(chan error, 1)
	go func() { waitErr <- first.Wait() }()
	select {
	case <-held:
	case err := <-waitErr:
		t.Fatalf("the writer exited before its second commit (%v):\n%s", err, firstLog.String())
	case <-time.After(crashWait):
		_ = first.Process.Kill()
		t.Fatalf("the writer did not send a second commit:\n%s", firstLog.String())
	}
	require.NoError(t, first.Process.Signal(syscall.SIGKILL))
	select {
	case err = <-waitErr:
	case <-time.After(crashWait):
		t.Fatalf("the writer did not die of SIGKILL:\n%s", firstLog.String())
	}
	release()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, firstLog.String())
	status, ok := exit.Sys().(syscall.WaitStatus)
	require.True(t, ok && status.Signaled() && status.Signal() == syscall.SIGKILL,
		"killed by SIGKILL, not %v:\n%s", exit, firstLog.String())
	require.Equal(t, 50, batchRecords(t, firstLog.String()),
		"exactly the first batch was committed before the kill")

	adm := kadm.NewClient(prod)
	committed := func() int64 {
		offs, err := adm.FetchOffsets(t.Context(), "crash-test")
		if err != nil {
			return -1
		}
		var n int64
		offs.Each(func(o kadm.OffsetResponse) { n += max(o.At, 0) })
		return n
	}
	// Only the first batch was committed; the second one's rows are in
	// ClickHouse all the same.
	afterCrash := committed()
	require.Equal(t, int64(50), afterCrash, "exactly the first batch (max_rows) is committed")

	conn, err := clickhouse.Open(chconn.Options(ch, ch.Database))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	var raw uint64
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT count() FROM events").Scan(&raw))
	require.Equal(t, uint64(100), raw, "two batches of 50 were inserted before the crash")

	// Restart: it reads from offset 50 on, writes the second batch again,
	// and goes on to the end.
	second := exec.CommandContext(t.Context(), bin, "--config", path)
	var secondLog logtest.Buffer
	second.Stderr = &secondLog
	require.NoError(t, second.Start())
	stopped := make(chan error, 1)
	go func() { stopped <- second.Wait() }()
	t.Cleanup(func() {
		if second.ProcessState == nil {
			_ = second.Process.Kill()
		}
	})
	require.Eventually(t, func() bool { return committed() == int64(len(recs)) }, crashWait, 100*time.Millisecond,
		"the restarted writer did not commit every record:\n%s", secondLog.String())
	require.NoError(t, second.Process.Signal(os.Interrupt))
	select {
	case err := <-stopped:
		require.NoError(t, err, secondLog.String())
	case <-time.After(crashWait):
		t.Fatal("the restarted writer did not stop")
	}

	// The second run read everything after the last commit: the 50
	// records of the batch that was inserted but not committed, again,
	// and the rest.
	require.Equal(t, len(recs)-int(afterCrash), batchRecords(t, secondLog.String()),
		"the restart re-read everything after the last commit")

	// Every count is exact.
	for _, c := range []struct {
		table string
		want  uint64
	}{
		{"events", uint64(len(recs))},
		{"calls", calls},
		{"handoffs", calls},
		{"transfer_outcomes", calls},
		{"call_ends", calls},
		{"handoff_facts", calls},
	} {
		final := " FINAL"
		if c.table == "handoff_facts" {
			final = ""
		}
		var n uint64
		require.NoError(t, conn.QueryRow(t.Context(), "SELECT count() FROM "+c.table+final).Scan(&n))
		require.Equal(t, c.want, n, c.table)
	}
	var succeeded, failed uint64
	require.NoError(t, conn.QueryRow(t.Context(),
		"SELECT countIf(outcome = 'succeeded'), countIf(outcome = 'failed') FROM handoff_facts").Scan(&succeeded, &failed))
	require.Equal(t, uint64(calls*2/3), succeeded)
	require.Equal(t, uint64(calls/3), failed)
}

// holdCommit makes the broker hold group's nth offset commit; the ones
// before it go through. held is closed when that commit arrives. After
// release the commit is dropped unanswered, its connection closed: it
// commits nothing.
func holdCommit(t *testing.T, c *kfake.Cluster, group string, nth int32) (held <-chan struct{}, release func()) {
	t.Helper()
	heldCh, releaseCh := make(chan struct{}), make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(releaseCh) }) }
	t.Cleanup(release)
	var commits atomic.Int32
	c.ControlKey(kmsg.OffsetCommit.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		commit, ok := req.(*kmsg.OffsetCommitRequest)
		if !ok || commit.Group != group || commits.Add(1) < nth {
			return nil, nil, false
		}
		close(heldCh)
		c.SleepControl(func() { <-releaseCh })
		return nil, errors.New("offset commit held until its writer was killed"), true
	})
	return heldCh, release
}

// batchRecords sums the records of every "batch written" log line.
func batchRecords(t *testing.T, logs string) int {
	t.Helper()
	n := 0
	for line := range strings.Lines(logs) {
		if !strings.Contains(line, `"msg":"batch written"`) {
			continue
		}
		_, rest, ok := strings.Cut(line, `"records":`)
		require.True(t, ok, line)
		end := strings.IndexAny(rest, ",}")
		v, err := strconv.Atoi(rest[:end])
		require.NoError(t, err, line)
		n += v
	}
	return n
}

// crashCall is one call's four events; every third handoff fails.
func crashCall(t *testing.T, topics kafka.Topics, callID string, i int) []*kgo.Record {
	t.Helper()
	at := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)
	mk := func(id, topic string, offset time.Duration, msg proto.Message) *kgo.Record {
		typ, err := events.TypeOf(msg)
		require.NoError(t, err)
		rec, err := events.Encode(topic, events.Event{
			ID: callID + "-" + id, Type: typ, Source: "baton/test", Subject: callID, Time: at.Add(offset), Data: msg,
		})
		require.NoError(t, err)
		return rec
	}
	status, code := batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, int32(200)
	if i%3 == 2 {
		status, code = batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, 603
	}
	cmd := callID + "-cmd"
	return []*kgo.Record{
		mk("started", topics.Calls, 0, &batonv1.CallStarted{CalleeNumber: "+15550199", Trunk: "t"}),
		mk("handoff", topics.Handoffs, time.Second, &batonv1.HandoffCommand{CommandId: cmd, CallId: callID,
			Method: batonv1.Method_METHOD_REFER, Destination: "support", Reason: "billing"}),
		mk("outcome", topics.Transfers, 2*time.Second, &batonv1.TransferOutcome{CommandId: cmd, CallId: callID,
			Status: status, Method: batonv1.Method_METHOD_REFER, Destination: "support", SipCode: code,
			Elapsed: durationpb.New(time.Second)}),
		mk("ended", topics.Calls, 3*time.Second, &batonv1.CallEnded{CallId: callID, Duration: durationpb.New(3 * time.Second)}),
	}
}
