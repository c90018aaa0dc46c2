package router

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// TestFencedRouterStops: a router whose producer was fenced (a newer
// instance took its transactional id) cannot ride that out; Run returns
// the error so the process exits, and the batch is not published.
func TestFencedRouterStops(t *testing.T) {
	topics := kafka.DefaultConfig().Topics
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topics.All()...))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	h := newHarnessOn(t, cluster.ListenAddrs())

	// The broker answers the first EndTxn as it would a fenced producer.
	cluster.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		resp, ok := req.ResponseKind().(*kmsg.EndTxnResponse)
		if !ok {
			return nil, nil, false
		}
		resp.SetVersion(req.GetVersion())
		resp.ErrorCode = kerr.ProducerFenced.Code
		return resp, nil, true
	})

	rt, err := New(Options{Kafka: h.kcfg, Group: "baton-router-test", TransactionalID: "router-fenced"},
		handoff.New(h.table, h.logger), h.logger)
	require.NoError(t, err)
	t.Cleanup(rt.Close)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()

	h.publish(h.callStarted("call-1"))
	select {
	case err := <-done:
		require.Error(t, err)
		require.True(t, errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch),
			"Run ended with %v", err)
	case <-time.After(waitTimeout):
		cancel()
		<-done
		t.Fatal("Run kept going with a fenced producer")
	}

	// Nothing of the batch became visible to read-committed consumers.
	committed := h.consumer(kgo.ReadCommitted())
	pctx, pcancel := context.WithTimeout(t.Context(), time.Second)
	defer pcancel()
	require.Empty(t, committed.PollFetches(pctx).Records(), "a fenced transaction published nothing")
}
