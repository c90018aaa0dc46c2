package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// DefaultRestoreLookback is how far back a newly assigned partition's log
// is re-read: a call whose facts are all older is taken as over.
const DefaultRestoreLookback = 4 * time.Hour

// DefaultRedeliver is how far back a restore pushes the transitions of
// the history it re-folds again.
const DefaultRedeliver = time.Minute

// restoreIdle ends a restore read once a poll brings nothing more.
const restoreIdle = time.Second

// restorer rebuilds the fold's state of partitions this instance was just
// assigned (after a restart, a rebalance or a scale-out), before any of
// their records is handled: it re-reads each partition's records of the
// consumed topics from lookback ago up to the group's committed offset,
// in event-time order, and folds them with the decisions discarded (they
// were published when the records were first handled). Without it, a
// call that started before the assignment was unknown to the new owner,
// and its handoff request was skipped. Decision 0013 says why a re-read
// and not a changelog topic.
type restorer struct {
	clientOpts []kgo.Opt
	group      string
	topics     []string
	lookback   time.Duration
	// redeliver is how far back the restored transitions are pushed again.
	redeliver time.Duration
	logger    *slog.Logger

	mu      sync.Mutex
	pending map[int32]struct{}
	// owned are the partitions of the calls topic (topics[0]) this
	// instance is assigned now.
	owned map[int32]bool
	// folded is, per topic and partition, the offset after the last record
	// this instance folded in a committed transaction: a partition whose
	// committed offset is still that (the group gave it back to this
	// instance, nobody else handled it) needs no restore.
	folded map[string]map[int32]int64
}

// committedBatch records the records of a committed transaction.
func (s *restorer) committedBatch(records []*kgo.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range records {
		if s.folded[r.Topic] == nil {
			s.folded[r.Topic] = map[int32]int64{}
		}
		if r.Offset+1 > s.folded[r.Topic][r.Partition] {
			s.folded[r.Topic][r.Partition] = r.Offset + 1
		}
	}
}

// current reports whether this instance's fold already holds topic's
// partition p up to committed.
func (s *restorer) current(topic string, p int32, committed int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.folded[topic][p]
	return ok && at == committed
}

// assigned is the session's OnPartitionsAssigned: the partitions are
// restored before the next batch is handled.
func (s *restorer) assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ps := range assigned {
		for _, p := range ps {
			s.pending[p] = struct{}{}
		}
	}
	if s.owned == nil {
		s.owned = map[int32]bool{}
	}
	for _, p := range assigned[s.topics[0]] {
		s.owned[p] = true
	}
}

// revoked is the session's OnPartitionsRevoked and OnPartitionsLost: the
// partitions are no longer this instance's to evict from.
func (s *restorer) revoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range revoked[s.topics[0]] {
		delete(s.owned, p)
	}
}

// ownedPartitions returns the partitions of the calls topic this instance
// is assigned now.
func (s *restorer) ownedPartitions() map[int32]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.owned)
}

// take returns the partitions waiting for a restore and forgets them.
func (s *restorer) take() []int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int32, 0, len(s.pending))
	for p := range s.pending {
		out = append(out, p)
	}
	clear(s.pending)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// errNotListed is a partition the broker left out of a listing.
var errNotListed = errors.New("partition not listed")

// restore folds partitions' history into fold and commits it. It returns
// how many records it folded.
func (s *restorer) restore(ctx context.Context, fold *handoff.Fold, partitions []int32) (int, error) {
	if len(partitions) == 0 {
		return 0, nil
	}
	start := time.Now()
	cl, err := kgo.NewClient(s.clientOpts...)
	if err != nil {
		return 0, fmt.Errorf("restore client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	committed, err := adm.FetchOffsetsForTopics(ctx, s.group, s.topics...)
	if err != nil {
		return 0, fmt.Errorf("restore: committed offsets of %s: %w", s.group, err)
	}
	from, err := adm.ListOffsetsAfterMilli(ctx, start.Add(-s.lookback).UnixMilli(), s.topics...)
	if err != nil {
		return 0, fmt.Errorf("restore: offsets %v back: %w", s.lookback, err)
	}
	want := map[string]map[int32]kgo.Offset{}
	ends := map[string]map[int32]int64{}
	for _, p := range partitions {
		fresh := true
		for _, t := range s.topics {
			c, ok := committed.Lookup(t, p)
			if ok && c.Err == nil && c.At >= 0 && !s.current(t, p, c.At) {
				fresh = false
			}
		}
		if fresh {
			continue // given back to this instance, unchanged: its fold holds it
		}
		for _, t := range s.topics {
			c, ok := committed.Lookup(t, p)
			if !ok || c.Err != nil || c.At < 0 {
				continue // nothing committed: the group reads the log from its start
			}
			f, ok := from.Lookup(t, p)
			if !ok || f.Err != nil {
				// Skipping would lose the partition's calls: fail, and the
				// caller retries.
				return 0, fmt.Errorf("restore: offsets %v back of %s/%d: %w", s.lookback, t, p, cmp.Or(f.Err, errNotListed))
			}
			if f.Offset >= c.At {
				continue
			}
			if want[t] == nil {
				want[t], ends[t] = map[int32]kgo.Offset{}, map[int32]int64{}
			}
			want[t][p], ends[t][p] = kgo.NewOffset().At(f.Offset), c.At
		}
	}
	if len(want) == 0 {
		return 0, nil
	}
	cl.AddConsumePartitions(want)
	var evs []events.Event
	remaining := 0
	for _, ps := range ends {
		remaining += len(ps)
	}
	for remaining > 0 {
		pollCtx, cancel := context.WithTimeout(ctx, restoreIdle)
		fetches := cl.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		got := 0
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := ends[r.Topic][r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			got++
			if r.Offset == end-1 {
				delete(ends[r.Topic], r.Partition)
				remaining--
			}
			if ev, err := events.Decode(r); err == nil {
				evs = append(evs, ev)
			}
		})
		if got == 0 && fetches.NumRecords() == 0 {
			break // idle: every committed record below the ends was read (a control record may sit last)
		}
	}
	// Facts and outcomes of a call are in one partition of each topic;
	// folded in event-time order, as router replay does.
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
	for _, ev := range evs {
		_ = fold.Apply(ctx, ev) // published when first handled
	}
	// Their transitions were pushed (webhooks) when first folded; those of
	// the last moments are pushed again, as the instance before may have
	// died before it could (at least once; receivers dedupe on the id).
	fold.CommitSince(start.Add(-s.redeliver))
	s.logger.InfoContext(ctx, "partitions restored", "partitions", partitions, "records", len(evs), "calls", fold.Calls(),
		"took", time.Since(start).String())
	return len(evs), nil
}
