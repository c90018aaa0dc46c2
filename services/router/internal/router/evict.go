package router

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// DefaultSweepInterval is the longest wait between two looks for idle
// calls.
const DefaultSweepInterval = time.Minute

// maxEvictionsPerSweep bounds the CallEvicted records of one transaction;
// the rest are found by the next sweep.
const maxEvictionsPerSweep = 1000

// metadataTimeout bounds the look-up of the calls topic's partitions.
const metadataTimeout = 10 * time.Second

// evictor finds the calls of this instance's partitions that had no event
// for maxIdle and makes their CallEvicted records, published in the
// router's transaction. It forgets nothing itself: the fold forgets a
// call when it folds the CallEvicted read back from the log, as every
// other fold of the log does (restore, the call view, a replay).
type evictor struct {
	maxIdle time.Duration
	every   time.Duration
	now     func() time.Time
	topic   string
	by      string
	restore *restorer
	logger  *slog.Logger

	next time.Time
	// pending are the calls whose CallEvicted is committed but not yet
	// folded back, with when it was: not evicted twice.
	pending map[string]time.Time
}

func newEvictor(opts Options, rs *restorer, logger *slog.Logger) *evictor {
	e := &evictor{maxIdle: opts.MaxCallDuration, every: opts.SweepInterval, now: opts.Now, topic: opts.Kafka.Topics.Calls,
		by: opts.TransactionalID, restore: rs, logger: logger, pending: map[string]time.Time{}}
	if e.now == nil {
		e.now = time.Now
	}
	if e.every <= 0 {
		e.every = min(DefaultSweepInterval, max(opts.MaxCallDuration/10, time.Second))
	}
	return e
}

func (e *evictor) on() bool { return e.maxIdle > 0 }

// sweep returns the CallEvicted records of the idle calls of this
// instance's partitions, when a sweep is due.
func (e *evictor) sweep(ctx context.Context, fold *handoff.Fold, cl *kgo.Client) []*kgo.Record {
	now := e.now()
	if !e.on() || now.Before(e.next) {
		return nil
	}
	e.next = now.Add(e.every)
	idle := fold.Idle(now, e.maxIdle)
	if len(e.pending) > 0 {
		still := make(map[string]bool, len(idle))
		for _, c := range idle {
			still[c.ID] = true
		}
		for id, at := range e.pending {
			// Folded back, or its record lost a while ago: forget it.
			if !still[id] || now.Sub(at) > 10*e.every {
				delete(e.pending, id)
			}
		}
	}
	if len(idle) == 0 {
		return nil
	}
	n, err := e.partitions(ctx, cl)
	if err != nil {
		e.logger.WarnContext(ctx, "eviction sweep skipped: partitions of the calls topic unknown", "topic", e.topic, "err", err)
		return nil
	}
	owned := e.restore.ownedPartitions()
	var out []*kgo.Record
	for _, c := range idle {
		if _, sent := e.pending[c.ID]; sent || !owned[kafka.PartitionFor([]byte(c.ID), n)] {
			continue // another instance's call, kept from before a rebalance
		}
		msg := &batonv1.CallEvicted{CallId: c.ID, Reason: handoff.EvictedIdle, IdleMs: c.Idle.Milliseconds(), EvictedBy: e.by}
		ev, err := events.New(Source, c.ID, msg, now)
		var rec *kgo.Record
		if err == nil {
			rec, err = events.Encode(e.topic, ev)
		}
		if err != nil {
			e.logger.ErrorContext(ctx, "encode eviction", "call_id", c.ID, "err", err)
			continue
		}
		out = append(out, rec)
		if len(out) == maxEvictionsPerSweep {
			e.next = now // the rest at the next poll
			break
		}
	}
	return out
}

// committed records evictions whose transaction committed.
func (e *evictor) committed(ctx context.Context, recs []*kgo.Record) {
	now := e.now()
	for _, rec := range recs {
		e.pending[string(rec.Key)] = now
		e.logger.InfoContext(ctx, "call evicted: no event for max_call_duration", "call_id", string(rec.Key),
			"max_call_duration", e.maxIdle.String(), "topic", rec.Topic, "partition", rec.Partition)
	}
}

// partitions is the number of partitions of the calls topic.
func (e *evictor) partitions(ctx context.Context, cl *kgo.Client) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	topics, err := kadm.NewClient(cl).ListTopics(ctx, e.topic)
	if err != nil {
		return 0, fmt.Errorf("list topic %s: %w", e.topic, err)
	}
	d, ok := topics[e.topic]
	if !ok || d.Err != nil || len(d.Partitions) == 0 {
		return 0, fmt.Errorf("list topic %s: %w", e.topic, cmp.Or(d.Err, errNotListed))
	}
	return len(d.Partitions), nil
}
