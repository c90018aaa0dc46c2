package server

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
)

// CallEnded is queued, not awaited, before the BYE's 200 (issue 18,
// docs/decisions/0021), and a graceful shutdown still writes it: the
// broker holds every produce request from the BYE on, the BYE is answered
// 200 meanwhile, Serve returns, and the flush main does after Serve waits
// for the CallEnded, which then is in the topic once.
func TestCallEndedQueuedAtByeIsFlushedAtShutdown(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topics.All()...))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	var hold atomic.Bool
	release := make(chan struct{})
	var held atomic.Int32
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		if hold.Load() {
			held.Add(1)
			cluster.SleepControl(func() { <-release })
		}
		return nil, nil, false // then handled as usual
	})
	brokers := cluster.ListenAddrs()
	in := startIngress(t, brokers, nil)
	c := dial(t, in, "ended-at-shutdown", "0")

	hold.Store(true)
	require.Equal(t, sip.StatusOK, c.inDialog(sip.BYE, "", "").StatusCode, "answered while Kafka holds the CallEnded")
	require.Eventually(t, func() bool { return held.Load() > 0 }, 10*time.Second, 5*time.Millisecond,
		"the CallEnded was produced")
	in.stop() // Serve returns: nothing in it waits for the CallEnded

	flushed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 30*time.Second)
		defer cancel()
		flushed <- in.cl.Flush(ctx)
	}()
	select {
	case err := <-flushed:
		t.Fatalf("flush returned (%v) while the CallEnded was held", err)
	default:
	}
	close(release)
	require.NoError(t, <-flushed)
	in.cl.Close()

	consumer := newCalls(t, brokers, topics.Calls)
	require.Equal(t, events.TypeCallStarted, consumer.next(t).Type)
	ev := consumer.next(t)
	require.Equal(t, events.TypeCallEnded, ev.Type)
	require.Equal(t, "ended-at-shutdown", ev.Subject)
	require.Equal(t, batonv1.Party_PARTY_REMOTE, ev.Data.(*batonv1.CallEnded).GetEndedBy())
	require.Equal(t, "BYE", ev.Data.(*batonv1.CallEnded).GetMethod())
}
