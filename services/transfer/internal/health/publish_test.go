package health

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/pkg/sipprobe"
)

// TestKafkaPublisherCopiesToEveryPartition: a destination's first check
// and each change of its state are a DestinationHealth in every partition
// of the topic (over the Kafka protocol, kfake), each copy naming its
// partition and the count; a check that changes nothing publishes nothing.
func TestKafkaPublisherCopiesToEveryPartition(t *testing.T) {
	const topic, partitions = "baton.calls", 3
	brokers := kafkatest.NewCluster(t, partitions, topic)
	cfg := kafka.DefaultConfig()
	cfg.Brokers = brokers
	pub, err := NewKafkaPublisher(kafka.ClientOpts(cfg, slog.New(slog.DiscardHandler)), topic, "transfer-1", 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(pub.Close)

	closed := closedTCPPort(t)
	c, err := New(Config{Interval: time.Minute, Timeout: time.Second, Destinations: []Destination{
		{Name: "gone", Route: "sip:x@127.0.0.1:" + strconv.Itoa(closed), Transport: "tcp"},
	}}, sipURI, nil, NewMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	c.SetPublisher(pub)
	c.Round(t.Context())
	c.Round(t.Context()) // still down: nothing new

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	var got []*kgo.Record
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for len(got) < partitions && ctx.Err() == nil {
		got = append(got, cl.PollFetches(ctx).Records()...)
	}
	require.Len(t, got, partitions)
	seen := map[int32]bool{}
	for _, rec := range got {
		ev, err := events.Decode(rec)
		require.NoError(t, err)
		require.Equal(t, events.TypeDestinationHealth, ev.Type)
		require.Equal(t, SubjectPrefix+"gone", ev.Subject)
		h := ev.Data.(*batonv1.DestinationHealth)
		require.Equal(t, "gone", h.GetDestination())
		require.False(t, h.GetUp())
		require.Equal(t, "transfer-1", h.GetCheckedBy())
		require.Equal(t, rec.Partition, h.GetPartition(), "each copy names the partition it is in")
		require.Equal(t, int32(partitions), h.GetPartitions())
		seen[rec.Partition] = true
	}
	require.Len(t, seen, partitions, "one copy per partition")
	// Nothing more: the second round changed nothing.
	short, cancelShort := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancelShort()
	require.Empty(t, cl.PollFetches(short).Records())
}

type flakyPublisher struct {
	fail  bool
	calls []bool
}

func (p *flakyPublisher) Changed(_ context.Context, r sipprobe.Result) error {
	p.calls = append(p.calls, r.Up)
	if p.fail {
		return errors.New("broker unreachable")
	}
	return nil
}

// TestPublishIsRetriedUntilItSucceeds: a change whose publication failed
// is published again at the next check, and only until it succeeds.
func TestPublishIsRetriedUntilItSucceeds(t *testing.T) {
	closed := closedTCPPort(t)
	c, err := New(Config{Interval: time.Minute, Timeout: time.Second, Destinations: []Destination{
		{Name: "gone", Route: "sip:x@127.0.0.1:" + strconv.Itoa(closed), Transport: "tcp"},
	}}, sipURI, nil, NewMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	pub := &flakyPublisher{fail: true}
	c.SetPublisher(pub)
	c.Round(t.Context())
	pub.fail = false
	c.Round(t.Context())
	c.Round(t.Context())
	require.Equal(t, []bool{false, false}, pub.calls, "failed, retried once it could, then quiet")
}
