package kafkahealth

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestReach(t *testing.T) {
	brokers := kafkatest.NewCluster(t, 1, "t")
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	r := NewReach(cl)
	require.NoError(t, r.Check(t.Context()))

	down, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"))
	require.NoError(t, err)
	defer down.Close()
	rd := NewReach(down)
	require.ErrorContains(t, rd.Check(t.Context()), "kafka not reachable")
	// The answer is cached: a second check does not wait another second.
	start := time.Now()
	require.Error(t, rd.Check(t.Context()))
	require.Less(t, time.Since(start), 500*time.Millisecond)
}

func TestSampleLag(t *testing.T) {
	brokers := kafkatest.NewCluster(t, 1, "t")
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("t"))
	require.NoError(t, err)
	defer cl.Close()
	for range 3 {
		require.NoError(t, cl.ProduceSync(t.Context(), &kgo.Record{Value: []byte("x")}).FirstErr())
	}
	_, err = kadm.NewClient(cl).CommitOffsets(t.Context(), "g", kadm.OffsetsFromRecords(kgo.Record{Topic: "t", Partition: 0, Offset: 0}))
	require.NoError(t, err)

	gauge := NewLagGauge("test")
	done := make(chan struct{})
	sctx, stop := context.WithCancel(t.Context())
	go func() {
		defer close(done)
		SampleLag(sctx, cl, "g", gauge, 10*time.Millisecond, slog.New(slog.DiscardHandler))
	}()
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(gauge.WithLabelValues("t", "0")) == 2
	}, 5*time.Second, 10*time.Millisecond)
	stop()
	<-done
}

func TestJoined(t *testing.T) {
	addrs := kafkatest.NewCluster(t, 1, "t")
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("t"))
	require.NoError(t, err)
	defer cl.Close()
	joined := Joined(cl, "g")
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		cl.PollFetches(ctx) // the group is joined while polling
		return joined(t.Context()) == nil
	}, 10*time.Second, 10*time.Millisecond, "the client joins its group")

	lone, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	require.NoError(t, err)
	defer lone.Close()
	require.ErrorContains(t, Joined(lone, "g")(t.Context()), "not in consumer group g")
}
