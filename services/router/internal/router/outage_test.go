package router

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// TestRouterRidesOutTransactionFailures: while the broker's transaction
// coordinator is unreachable (every EndTxn dropped, or never answered),
// transactions cannot end; the router keeps running, counts the failures,
// and once EndTxn works again each command is published exactly once.
func TestRouterRidesOutTransactionFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		// answer is the control function's answer to an EndTxn during
		// the outage.
		err error
	}{
		{name: "connection closed", err: errOutage},
		{name: "no answer until the end timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topics := kafka.DefaultConfig().Topics
			cluster := kafkatest.Start(t, 1, topics.All()...)
			h := newHarnessOn(t, cluster.ListenAddrs())

			var outage atomic.Bool
			var dropped atomic.Int32
			outage.Store(true)
			cluster.ControlKey(int16(kmsg.EndTxn), func(kmsg.Request) (kmsg.Response, error, bool) {
				cluster.KeepControl()
				if !outage.Load() {
					return nil, nil, false // handled by the broker as usual
				}
				dropped.Add(1)
				// An error closes the connection; nil, nil leaves the
				// request unanswered.
				return nil, tc.err, true
			})

			metrics := NewMetrics(prometheus.NewRegistry())
			h.startWith(Options{Kafka: h.kcfg, Group: "baton-router-test", TransactionalID: "router-outage",
				Metrics: metrics, EndTimeout: 500 * time.Millisecond})
			h.publish(h.callStarted("call-1"))
			h.publish(h.callStarted("call-2"))

			require.Eventually(t, func() bool { return dropped.Load() >= 2 }, waitTimeout, 10*time.Millisecond,
				"transactions tried to end during the outage")
			outage.Store(false)

			committed := h.consumer(kgo.ReadCommitted())
			var calls []string
			for _, r := range next(t, committed, 2) {
				_, cmd := decodeCommand(t, r)
				calls = append(calls, cmd.GetCallId())
			}
			require.ElementsMatch(t, []string{"call-1", "call-2"}, calls, "each call handed off once")

			// Nothing more: a third call's command is the next record.
			h.publish(h.callStarted("call-3"))
			recs := next(t, committed, 1)
			_, cmd := decodeCommand(t, recs[0])
			require.Equal(t, "call-3", cmd.GetCallId(), "no duplicate of an earlier command")
			require.GreaterOrEqual(t, testutil.ToFloat64(metrics.Transactions.WithLabelValues("failed")), 2.0)
			require.Positive(t, testutil.ToFloat64(metrics.Transactions.WithLabelValues("committed")))
		})
	}
}

// errOutage is what the broker "says" to an EndTxn during the outage.
var errOutage = errors.New("transaction coordinator unreachable")

// TestUnusableErrors: only a fenced, unauthorized or closed producer ends
// Run; outages and timeouts are ridden out.
func TestUnusableErrors(t *testing.T) {
	for _, err := range []error{
		kgo.ErrClientClosed,
		fmt.Errorf("begin transaction: producer ID has a fatal, unrecoverable error, err: %w", kerr.ProducerFenced),
		fmt.Errorf("end transaction of 3 records: %w", kerr.InvalidProducerEpoch),
		kerr.TransactionalIDAuthorizationFailed,
	} {
		require.True(t, unusable(err), "%v", err)
	}
	for _, err := range []error{
		errOutage,
		fmt.Errorf("end transaction of 3 records: %w", context.DeadlineExceeded),
		kerr.CoordinatorNotAvailable,
	} {
		require.False(t, unusable(err), "%v", err)
	}
}

// TestFencedRouterStops: a router whose producer was fenced (a newer
// instance took its transactional id) cannot ride that out; Run returns
// the error so the process exits, and the batch is not published.
func TestFencedRouterStops(t *testing.T) {
	topics := kafka.DefaultConfig().Topics
	cluster := kafkatest.Start(t, 1, topics.All()...)
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
