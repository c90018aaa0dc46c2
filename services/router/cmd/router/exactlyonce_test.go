package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/pkg/logtest"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// child is a router process started from the test binary.
type child struct {
	cmd    *exec.Cmd
	stderr *logtest.Buffer
	done   chan struct{}
}

func startChild(t *testing.T, configPath string) *child {
	t.Helper()
	c := &child{stderr: &logtest.Buffer{}, done: make(chan struct{})}
	c.cmd = exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), childEnv+"="+configPath)
	c.cmd.Stderr = c.stderr
	require.NoError(t, c.cmd.Start())
	go func() { _ = c.cmd.Wait(); close(c.done) }() // the exit status is the test's choice (SIGKILL or SIGTERM)
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill() // already gone is fine
		<-c.done
	})
	return c
}

// TestExactlyOnceWhenAnInstanceIsKilled runs two router processes in one
// group, SIGKILLs one while calls keep arriving, and finds every call's
// command exactly once among the committed records.
func TestExactlyOnceWhenAnInstanceIsKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a session timeout")
	}
	const partitions = 4
	const calls = 240
	kcfg := kafka.DefaultConfig()
	kcfg.Partitions = partitions
	brokers := kafkatest.NewCluster(t, partitions, kcfg.Topics.All()...)
	configFor := func(txnID string) string {
		return writeConfig(t, fmt.Sprintf(`kafka:
  brokers: [%q]
  partitions: %d
  # kfake's smallest session timeout; the dead instance's transaction is
  # aborted sooner than its partitions move.
  session_timeout: 6s
group: eo-test
metrics:
  listen: ""
transactional_id: %s
transaction_timeout: 3s
reload:
  poll_interval: 0s
destinations:
  - name: support
    route: sip:support@127.0.0.1:5090
    headers:
      X-Baton-Call-Id: "$call_id"
rules:
  - name: everyone
    handoff: support
`, brokers[0], partitions, txnID))
	}
	a := startChild(t, configFor("router-a"))
	b := startChild(t, configFor("router-b"))
	for _, c := range []*child{a, b} {
		require.Eventually(t, func() bool { return strings.Contains(c.stderr.String(), "router started") },
			30*time.Second, 10*time.Millisecond, "stderr: %s", c.stderr.String())
	}
	// "router started" comes before the group is joined: wait until both
	// hold partitions, or the calls may all go to the first one and the
	// second never decides anything before A is killed.
	for _, c := range []*child{a, b} {
		require.Eventually(t, func() bool { return strings.Contains(c.stderr.String(), "assigning partitions") },
			30*time.Second, 10*time.Millisecond, "stderr: %s", c.stderr.String())
	}

	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer prod.Close()
	want := map[string]bool{}
	var starts []*kgo.Record
	for i := range calls {
		id := fmt.Sprintf("call-%03d", i)
		ev, err := events.New("baton/ingress", id, &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "sip-" + id}},
			time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(i)*time.Millisecond))
		require.NoError(t, err)
		rec, err := events.Encode(kcfg.Topics.Calls, ev)
		require.NoError(t, err)
		starts = append(starts, rec)
		want[handoff.CommandID(id, ev.ID)] = true
	}

	committed, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(kcfg.Topics.Handoffs),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	require.NoError(t, err)
	defer committed.Close()

	// Calls keep arriving while A is killed.
	var wg sync.WaitGroup
	defer wg.Wait()
	half := make(chan struct{})
	wg.Go(func() {
		for i, rec := range starts {
			if i == calls/2 {
				close(half)
			}
			if err := prod.ProduceSync(t.Context(), rec).FirstErr(); err != nil {
				t.Errorf("produce: %v", err)
				return
			}
		}
	})
	<-half
	// Both instances have handed calls off before A dies.
	require.Eventually(t, func() bool {
		return strings.Contains(a.stderr.String(), "decision published") && strings.Contains(b.stderr.String(), "decision published")
	}, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, a.cmd.Process.Kill()) // SIGKILL: no leave, no commit, no abort
	<-a.done

	seen := map[string]int{}
	total := 0
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for len(seen) < calls && ctx.Err() == nil {
		for _, rec := range committed.PollFetches(ctx).Records() {
			ev, err := events.Decode(rec)
			require.NoError(t, err)
			require.Equal(t, events.TypeHandoffCommand, ev.Type)
			seen[ev.ID]++
			total++
		}
	}
	require.Len(t, seen, calls, "every call handed off; B's stderr: %s", b.stderr.String())
	// Nothing more arrives: no duplicate trails the last command.
	quiet, cancelQuiet := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancelQuiet()
	for quiet.Err() == nil {
		for _, rec := range committed.PollFetches(quiet).Records() {
			ev, err := events.Decode(rec)
			require.NoError(t, err)
			seen[ev.ID]++
			total++
		}
	}
	for id, n := range seen {
		require.True(t, want[id], "unexpected command %s", id)
		require.Equal(t, 1, n, "command %s committed %d times", id, n)
	}
	require.Equal(t, calls, total)

	// A read_uncommitted reader shows what the kill left behind: commands
	// of A's open transaction, aborted by the broker and redone by B.
	all, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(kcfg.Topics.Handoffs),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
	)
	require.NoError(t, err)
	defer all.Close()
	n := 0
	uctx, ucancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer ucancel()
	for uctx.Err() == nil {
		n += len(all.PollFetches(uctx).Records())
	}
	t.Logf("committed %d commands; the log holds %d records with the aborted ones", total, n)
	require.Contains(t, b.stderr.String(), "decision published")
}
