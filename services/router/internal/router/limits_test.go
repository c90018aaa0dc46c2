package router

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// TestStateWritesOverTheCapAreCounted: state writes read from Kafka that
// would grow a call's state past its cap are not applied, and are counted
// by reason once their transaction committed; the router goes on.
func TestStateWritesOverTheCapAreCounted(t *testing.T) {
	h := newHarness(t)
	table := *h.table
	table.MaxStateKeys = 2
	fold := handoff.New(&table, h.logger)
	metrics := NewMetrics(prometheus.NewRegistry())
	rt, err := New(Options{Kafka: h.kcfg, Group: "baton-router-limits", TransactionalID: "router-limits",
		Metrics: metrics}, fold, h.logger)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
		rt.Close()
	}()
	out := h.consumer(kgo.ReadCommitted())

	started := h.callStarted("capped-1")
	h.publish(started)
	next(t, out, 1) // the rule's command
	for i, key := range []string{"a", "b", "c", "d"} {
		ev, err := events.New("baton/router", "capped-1", &batonv1.CallStateChanged{CallId: "capped-1", SetBy: "agent-api",
			Set: map[string]string{key: "v"}}, started.Time.Add(time.Duration(i+1)*time.Second))
		require.NoError(t, err)
		h.publish(ev)
	}
	refused := metrics.StateRefused.WithLabelValues(handoff.StateTooManyKeys)
	require.Eventually(t, func() bool { return testutil.ToFloat64(refused) == 2 }, waitTimeout, 10*time.Millisecond)
	v, found, _ := fold.View("capped-1")
	require.True(t, found)
	require.Equal(t, map[string]string{"a": "v", "b": "v"}, v.State)
}
