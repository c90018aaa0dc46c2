package router

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A run killed inside a transaction leaves it open; the next run with the
// same transactional id fences it as soon as it starts, before it has
// anything to produce, so readers of the commands are not held until the
// broker's transaction timeout (TestReliabilityAvailability's 40 s stall).
func TestStartFencesTheKilledRunsTransaction(t *testing.T) {
	h := newHarness(t)
	topic := h.kcfg.Topics.Handoffs
	// The killed run: a transaction begun, a command produced, never ended.
	ghost, err := kgo.NewClient(kgo.SeedBrokers(h.kcfg.Brokers...), kgo.TransactionalID("router-fenced"),
		kgo.TransactionTimeout(60*time.Second), kgo.DefaultProduceTopic(topic))
	require.NoError(t, err)
	t.Cleanup(ghost.Close)
	require.NoError(t, ghost.BeginTransaction())
	require.NoError(t, ghost.ProduceSync(t.Context(), &kgo.Record{Key: []byte("c1"), Value: []byte("half-done")}).FirstErr())
	// A record after it, outside any transaction.
	require.NoError(t, h.prod.ProduceSync(t.Context(), &kgo.Record{Topic: topic, Key: []byte("c1"), Value: []byte("after")}).FirstErr())

	reader, err := kgo.NewClient(kgo.SeedBrokers(h.kcfg.Brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	require.NoError(t, err)
	t.Cleanup(reader.Close)
	read := func(wait time.Duration) []string {
		ctx, cancel := context.WithTimeout(t.Context(), wait)
		defer cancel()
		var got []string
		reader.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
		return got
	}
	require.Empty(t, read(time.Second), "the open transaction holds the partition")

	h.start("router-fenced")
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for len(got) == 0 && time.Now().Before(deadline) {
		got = append(got, read(time.Second)...)
	}
	require.Equal(t, []string{"after"}, got, "fenced at start: the aborted record is skipped and the next one is readable")
}
