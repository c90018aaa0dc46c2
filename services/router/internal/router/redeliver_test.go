package router

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// sinkRecorder keeps the transitions a fold commits (webhooks stand-in).
type sinkRecorder struct {
	mu  sync.Mutex
	ids []string
}

func (s *sinkRecorder) Transitions(ts []handoff.Transition) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range ts {
		s.ids = append(s.ids, t.Type+" "+t.ID)
	}
}

func (s *sinkRecorder) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.ids, id)
}

// TestRestorePushesTheLastMinuteAgain: the owner's transitions reach its
// sink (the webhooks) when their batch commits. After a failover the new
// owner's restore re-folds the partition and pushes again only the
// transitions of the last minute (router.DefaultRedeliver), which the
// instance before may not have sent: at least once, without replaying
// hours of history to the receivers.
func TestRestorePushesTheLastMinuteAgain(t *testing.T) {
	h := newHarness(t)
	now := time.Now()
	first := &sinkRecorder{}
	rt, err := New(Options{Kafka: h.kcfg, Group: "baton-router-redeliver", TransactionalID: "router-redeliver-a"},
		handoff.New(h.table, h.logger).WithSink(first), h.logger)
	require.NoError(t, err)
	stop := h.run(rt)
	handoffs := h.consumer(kgo.ReadCommitted())
	h.publish(eventAt(t, "old-1", &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "sip-old-1"}}, now.Add(-10*time.Minute)))
	h.publish(eventAt(t, "new-1", &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "sip-new-1"}}, now))
	recs := next(t, handoffs, 2) // the rule hands both off at their start
	oldCmd := "command_issued " + idOfRecord(t, recs, "old-1")
	newCmd := "command_issued " + idOfRecord(t, recs, "new-1")
	require.Eventually(t, func() bool { return first.has(oldCmd) && first.has(newCmd) }, waitTimeout, 5*time.Millisecond)
	stop()

	second := &sinkRecorder{}
	rt, err = New(Options{Kafka: h.kcfg, Group: "baton-router-redeliver", TransactionalID: "router-redeliver-b"},
		handoff.New(h.table, h.logger).WithSink(second), h.logger)
	require.NoError(t, err)
	h.run(rt)
	h.publish(eventAt(t, "new-1", &batonv1.CallEnded{CallId: "new-1"}, now)) // a batch: the restore runs first
	require.Eventually(t, func() bool { return second.has(newCmd) }, waitTimeout, 5*time.Millisecond,
		"the last minute's transition was not pushed again")
	require.Eventually(t, func() bool {
		second.mu.Lock()
		defer second.mu.Unlock()
		return len(second.ids) > 0 && strings.HasPrefix(second.ids[len(second.ids)-1], handoff.TransitionCallEnded)
	}, waitTimeout, 5*time.Millisecond)
	require.False(t, second.has(oldCmd), "a transition 10 minutes old was pushed again")
}

// idOfRecord is the event id of the record about callID among recs.
func idOfRecord(t *testing.T, recs []*kgo.Record, callID string) string {
	t.Helper()
	for _, rec := range recs {
		if string(rec.Key) == callID {
			return headerValue(rec, events.HeaderID)
		}
	}
	t.Fatalf("no record of %s", callID)
	return ""
}
