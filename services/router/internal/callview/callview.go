// Package callview keeps, on every router instance, a read-only fold of
// every partition of the calls and transfers topics, so the agent API on
// any instance reads any live call: the log is the store every instance
// can see. The owning instance still decides (its group fold); this view
// only answers reads and checks writes, and lags the log by a poll.
//
// A call the view does not know is unknown only once the view has caught
// up with the log after its start (Settled: a poll found nothing more);
// before that the API answers 503 with Retry-After rather than a wrong
// 404. Afterwards the view trails the log by a poll: a call whose
// CallStarted was published a moment ago may still read as unknown.
package callview

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// View is the shared read view.
type View struct {
	fold     *handoff.Fold
	clOpts   []kgo.Opt
	topics   []string
	lookback time.Duration
	logger   *slog.Logger

	settled atomic.Bool
	// pollSeq numbers the polls (incremented before each); doneSeq is the
	// number of the last poll whose records are committed to the fold.
	pollSeq, doneSeq atomic.Uint64
	// waits bounds the requests waiting in CatchUp.
	waits chan struct{}
}

// Bounds of CatchUp.
const (
	catchUpTimeout = 2 * time.Second
	maxCatchUps    = 256
	// viewFetchMaxWait and viewPollTimeout bound a poll on an idle log,
	// so CatchUp is quick when there is nothing new.
	viewFetchMaxWait = 250 * time.Millisecond
	viewPollTimeout  = 250 * time.Millisecond
)

// CatchUp waits until a poll that began after the call (the request
// asking for id) has been folded: whatever the log held when the request
// came is then in the view, so a call the view still does not know is
// not live. It reports false when that did not happen within
// catchUpTimeout, when too many requests wait already, or when ctx ended
// (the API then answers 503, never a wrong 404).
func (v *View) CatchUp(ctx context.Context, id string) bool {
	select {
	case v.waits <- struct{}{}:
		defer func() { <-v.waits }()
	default:
		return false
	}
	s0 := v.pollSeq.Load()
	t := time.NewTimer(catchUpTimeout)
	defer t.Stop()
	for {
		changed := v.fold.Changed()
		if v.doneSeq.Load() > s0 {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		case <-t.C:
			return false
		}
	}
}

// New returns a view folding with tables; Run feeds it. clientOpts are
// the Kafka client options (kafka.ClientOpts); topics the consumed topics.
func New(tables handoff.Source, clientOpts []kgo.Opt, topics []string, lookback time.Duration, logger *slog.Logger) *View {
	return &View{
		fold: handoff.New(tables, slog.New(slog.DiscardHandler)), clOpts: clientOpts, topics: topics,
		lookback: lookback, logger: logger, waits: make(chan struct{}, maxCatchUps),
	}
}

// View is handoff.Fold.View over every partition.
func (v *View) View(id string) (handoff.CallView, bool, bool) { return v.fold.View(id) }

// WithMaxCalls bounds the calls the view holds (handoff.Fold.WithMaxCalls);
// it must be called before Run.
func (v *View) WithMaxCalls(n int) *View {
	v.fold.WithMaxCalls(n)
	return v
}

// WithSink makes s hear the view's committed transitions (the event
// streams' hub), keeping each call's last history transitions for a
// stream resumed with Last-Event-ID. It must be called before Run.
func (v *View) WithSink(s handoff.Sink, history int) *View {
	v.fold.WithSink(s).WithHistory(history)
	return v
}

// Held is the number of live calls the view holds.
func (v *View) Held() int { return v.fold.Held() }

// Dropped counts the calls the view did not hold for max_calls.
func (v *View) Dropped() int64 { return v.fold.Dropped() }

// MarkState is handoff.Fold.MarkState over every partition.
func (v *View) MarkState(id, mark string) handoff.MarkState { return v.fold.MarkState(id, mark) }

// Changed is handoff.Fold.Changed: closed by the view's next Commit.
func (v *View) Changed() <-chan struct{} { return v.fold.Changed() }

// Settled reports whether the view caught up with the log after its start:
// a call it does not know then is not live.
func (v *View) Settled() bool { return v.settled.Load() }

// Run reads every partition of the topics, from lookback ago, until ctx
// ends, folding each poll's records (decisions discarded: the owner
// publishes them) and committing them to View.
func (v *View) Run(ctx context.Context) error {
	cl, err := kgo.NewClient(append(v.clOpts, kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(viewFetchMaxWait))...)
	if err != nil {
		return fmt.Errorf("call view client: %w", err)
	}
	defer cl.Close()
	start, err := v.startOffsets(ctx, cl)
	if err != nil {
		return err
	}
	cl.AddConsumePartitions(start)
	began := time.Now()
	for {
		// While catching up, a poll that brings nothing in a second means
		// the log is read to its end. Afterwards a poll ends at the latest
		// after viewPollTimeout, so an idle log still completes polls for
		// CatchUp (PollFetches itself waits until there are records).
		wait := viewPollTimeout
		if !v.settled.Load() {
			wait = time.Second
		}
		pollCtx, cancel := context.WithTimeout(ctx, wait)
		seq := v.pollSeq.Add(1)
		fetches := cl.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				v.logger.WarnContext(ctx, "call view fetch error", "topic", topic, "partition", p, "err", err)
			}
		})
		n := 0
		fetches.EachRecord(func(r *kgo.Record) {
			n++
			if ev, err := events.Decode(r); err == nil {
				_ = v.fold.Apply(ctx, ev)
			}
		})
		v.doneSeq.Store(seq) // before Commit wakes the waiters
		v.fold.Commit()
		if n == 0 && !v.settled.Load() {
			v.settled.Store(true)
			v.logger.InfoContext(ctx, "call view caught up", "calls", v.fold.Calls(), "took", time.Since(began).String())
		}
	}
}

// startOffsets is, for every partition of the topics, the first offset
// newer than lookback (by record time, which is the event's time). It
// retries until every partition of every topic is listed: a partition
// left out (a topic just created, a leader moving) would never be read.
func (v *View) startOffsets(ctx context.Context, cl *kgo.Client) (map[string]map[int32]kgo.Offset, error) {
	adm := kadm.NewClient(cl)
	for {
		// The end offsets first: a partition with no record in the window
		// is listed by its end offset, asked for separately, and a record
		// produced between the two asks would be skipped. Starting at the
		// smaller of the two reads it.
		ends, err := adm.ListEndOffsets(ctx, v.topics...)
		var listed kadm.ListedOffsets
		if err == nil {
			err = ends.Error()
		}
		if err == nil {
			listed, err = adm.ListOffsetsAfterMilli(ctx, time.Now().Add(-v.lookback).UnixMilli(), v.topics...)
		}
		if err == nil {
			err = listed.Error()
		}
		if err == nil {
			if out, complete := offsetsOf(listed, ends, v.topics); complete {
				return out, nil
			}
			err = errors.New("not every topic listed")
		}
		v.logger.DebugContext(ctx, "call view start offsets; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second): // topics not created yet, or the broker away
		}
	}
}

// offsetsOf turns listed offsets into consume offsets, each at most the
// partition's end offset listed before (ends), and reports whether every
// topic has at least one partition and none failed.
func offsetsOf(listed, ends kadm.ListedOffsets, topics []string) (map[string]map[int32]kgo.Offset, bool) {
	out := map[string]map[int32]kgo.Offset{}
	complete := true
	listed.Each(func(o kadm.ListedOffset) {
		end, ok := ends.Lookup(o.Topic, o.Partition)
		if o.Err != nil || o.Partition < 0 || !ok || end.Err != nil {
			complete = false
			return
		}
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]kgo.Offset{}
		}
		out[o.Topic][o.Partition] = kgo.NewOffset().At(min(o.Offset, end.Offset))
	})
	for _, t := range topics {
		if len(out[t]) == 0 {
			complete = false
		}
	}
	return out, complete
}
