package kafka

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
)

func testConfig(brokers []string) Config {
	c := DefaultConfig()
	c.Brokers = brokers
	c.Partitions = 3
	return c
}

func TestEnsureTopicsCreatesMissingAndKeepsExisting(t *testing.T) {
	addrs := kafkatest.NewCluster(t, 2, "baton.calls")
	cfg := testConfig(addrs)
	cl, err := kgo.NewClient(ClientOpts(cfg, slog.New(slog.DiscardHandler))...)
	require.NoError(t, err)
	defer cl.Close()

	require.NoError(t, EnsureTopics(t.Context(), cl, cfg.Partitions, cfg.ReplicationFactor, cfg.Topics.All()...))
	// A second run finds them all and succeeds.
	require.NoError(t, EnsureTopics(t.Context(), cl, cfg.Partitions, cfg.ReplicationFactor, cfg.Topics.All()...))

	details, err := kadm.NewClient(cl).ListTopics(t.Context(), cfg.Topics.All()...)
	require.NoError(t, err)
	require.Len(t, details["baton.calls"].Partitions, 2, "an existing topic keeps its partitions")
	require.Len(t, details["baton.handoffs"].Partitions, 3)
	require.Len(t, details["baton.transfers"].Partitions, 3)
}

func TestValidateNamesFields(t *testing.T) {
	c := DefaultConfig()
	c.Brokers = nil
	c.Partitions = 0
	err := c.Validate()
	require.ErrorContains(t, err, "kafka.brokers")
	require.ErrorContains(t, err, "kafka.partitions")
	require.NoError(t, DefaultConfig().Validate())
}

// A rebalance waits for each member's next heartbeat, so the interval is
// configurable, reaches the client, and must leave the session timeout
// room for missed beats.
func TestHeartbeatInterval(t *testing.T) {
	c := DefaultConfig()
	cl, err := kgo.NewClient(ClientOpts(c, slog.New(slog.DiscardHandler))...)
	require.NoError(t, err)
	defer cl.Close()
	require.Equal(t, time.Second, cl.OptValue(kgo.HeartbeatInterval), "the default reaches the client")

	for _, hb := range []time.Duration{0, -time.Second, 16 * time.Second} {
		c.HeartbeatInterval = hb
		require.ErrorContains(t, c.Validate(), "kafka.heartbeat_interval", "%v with a 45s session", hb)
	}
	c.HeartbeatInterval = 15 * time.Second
	require.NoError(t, c.Validate())
}

func TestConsumeLoopRetriesThenCommits(t *testing.T) {
	addrs := kafkatest.NewCluster(t, 1, "t")
	cfg := testConfig(addrs)
	logger := slog.New(slog.DiscardHandler)
	prod, err := kgo.NewClient(ClientOpts(cfg, logger)...)
	require.NoError(t, err)
	defer prod.Close()
	for _, v := range []string{"a", "b", "c"} {
		require.NoError(t, prod.ProduceSync(t.Context(), &kgo.Record{Topic: "t", Key: []byte("k"), Value: []byte(v)}).FirstErr())
	}

	consume := func(handle Handler) {
		cl, err := kgo.NewClient(append(ClientOpts(cfg, logger), ConsumerOpts("g", "t")...)...)
		require.NoError(t, err)
		defer cl.Close()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		done := make(chan error, 1)
		go func() {
			done <- ConsumeLoop(ctx, cl, logger, 10*time.Millisecond, func(ctx context.Context, rs []*kgo.Record) error {
				err := handle(ctx, rs)
				if err == nil {
					defer cancel()
				}
				return err
			})
		}()
		require.NoError(t, <-done)
	}

	var calls atomic.Int32
	var seen []string
	consume(func(_ context.Context, rs []*kgo.Record) error {
		if calls.Add(1) < 3 {
			return errors.New("clickhouse down")
		}
		for _, r := range rs {
			seen = append(seen, string(r.Value))
		}
		return nil
	})
	require.GreaterOrEqual(t, calls.Load(), int32(3), "a failed batch is retried")
	require.Equal(t, []string{"a", "b", "c"}, seen, "the retried batch keeps its order")

	// The offsets were committed: a new member of the group sees only new records.
	require.NoError(t, prod.ProduceSync(t.Context(), &kgo.Record{Topic: "t", Key: []byte("k"), Value: []byte("d")}).FirstErr())
	var second []string
	consume(func(_ context.Context, rs []*kgo.Record) error {
		for _, r := range rs {
			second = append(second, string(r.Value))
		}
		return nil
	})
	require.Equal(t, []string{"d"}, second)
}

func TestProduceOldEvent(t *testing.T) {
	// Records keep the event's time as their timestamp; a replayed event from
	// long ago must still be produced.
	addrs := kafkatest.NewCluster(t, 1, "t")
	cl, err := kgo.NewClient(ClientOpts(testConfig(addrs), slog.New(slog.DiscardHandler))...)
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), DefaultConfig().ProduceTimeout)
	defer cancel()
	rec := &kgo.Record{Topic: "t", Key: []byte("k"), Value: []byte("v"), Timestamp: time.Now().Add(-time.Hour)}
	require.NoError(t, cl.ProduceSync(ctx, rec).FirstErr())
}

func TestPartitionForMatchesProducer(t *testing.T) {
	const partitions = 6
	addrs := kafkatest.NewCluster(t, partitions, "t")
	cl, err := kgo.NewClient(ClientOpts(testConfig(addrs), slog.New(slog.DiscardHandler))...)
	require.NoError(t, err)
	defer cl.Close()
	seen := map[int32]bool{}
	for i := range 40 {
		key := []byte("call-" + string(rune('a'+i%26)) + string(rune('0'+i/26)))
		r, err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: "t", Key: key, Value: []byte("v")}).First()
		require.NoError(t, err)
		require.Equal(t, r.Partition, PartitionFor(key, partitions), "key %s", key)
		seen[r.Partition] = true
	}
	require.Greater(t, len(seen), 2, "keys spread over partitions")
}

func TestStaticMember(t *testing.T) {
	c := DefaultConfig()
	if len(StaticMember(c)) != 0 {
		t.Fatal("an empty instance id made a static member")
	}
	t.Setenv("BATON_TEST_POD", "router-7")
	c.InstanceID = "${BATON_TEST_POD}"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(StaticMember(c)) != 1 {
		t.Fatal("no InstanceID option")
	}
	t.Setenv("BATON_TEST_POD", "")
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "kafka.instance_id") {
		t.Fatalf("an unset variable: %v", err)
	}
}
