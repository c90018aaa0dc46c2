package handoff

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// EvictedIdle is CallEvicted.reason for a call that had no event for
// max_call_duration.
const EvictedIdle = "max_call_duration"

// IdleCall is a live call that has had no event for a while.
type IdleCall struct {
	ID string
	// LastEvent is the time of the call's latest event folded.
	LastEvent time.Time
	// Idle is how long before now that was.
	Idle time.Duration
}

// Idle returns the calls whose latest event is at least limit before now,
// by call id. It reads the batch's state, so it must be called from the
// goroutine that applies.
func (f *Fold) Idle(now time.Time, limit time.Duration) []IdleCall {
	var out []IdleCall
	for id, c := range f.calls {
		if idle := now.Sub(c.lastEvent); idle >= limit {
			out = append(out, IdleCall{ID: id, LastEvent: c.lastEvent, Idle: idle})
		}
	}
	slices.SortFunc(out, func(a, b IdleCall) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// seen records the time of an event of a live call.
func (f *Fold) seen(ev events.Event) {
	if c := f.calls[ev.Subject]; c != nil && ev.Time.After(c.lastEvent) {
		f.mutable(ev.Subject).lastEvent = ev.Time
	}
}

// callEvicted forgets a call an owner evicted. The owner decided at the
// event's time that the call had been idle for idle_ms; when the log holds
// an event of the call newer than that (it raced the eviction), the call
// is kept. The test reads only the log, so every fold of it (the owner,
// a restore, the call view, a replay) keeps or forgets the call alike.
func (f *Fold) callEvicted(ctx context.Context, ev events.Event, msg *batonv1.CallEvicted) {
	id := ev.Subject
	c := f.calls[id]
	if c == nil {
		f.logger.DebugContext(ctx, "eviction of an unknown call", "call_id", id)
		return
	}
	quietSince := ev.Time.Add(-time.Duration(msg.GetIdleMs()) * time.Millisecond)
	if c.lastEvent.After(quietSince) {
		f.logger.InfoContext(ctx, "eviction overtaken by an event of the call; kept", "call_id", id,
			"event_id", ev.ID, "last_event", c.lastEvent, "idle_since", quietSince)
		return
	}
	f.touch(id)
	f.emitGone(c, TransitionCallEvicted, ev, msg.GetReason())
	delete(f.calls, id)
	f.evicted[id] = true
	f.logger.InfoContext(ctx, "call evicted", "call_id", id, "reason", msg.GetReason(), "idle_ms", msg.GetIdleMs(),
		"evicted_by", msg.GetEvictedBy())
}

// WithMaxCalls bounds the calls the fold holds to n (0: no bound): a
// call that starts while n are held is not held at all (counted in
// Dropped, logged). It returns f, and must be called before any Apply.
func (f *Fold) WithMaxCalls(n int) *Fold {
	f.limit.max = n
	return f
}

// Held is the number of committed live calls; safe from any goroutine.
func (f *Fold) Held() int { return int(f.held.Load()) }

// Dropped is how many calls were not held for the max_calls bound; safe
// from any goroutine.
func (f *Fold) Dropped() int64 { return f.limit.dropped.Load() }

// callLimit is the bound on the calls a fold holds.
type callLimit struct {
	max     int
	full    bool
	dropped atomic.Int64
}

// admit reports whether a call that starts may be held, held being the
// calls held now; it logs once when the bound is reached and once when it
// no longer is.
func (l *callLimit) admit(ctx context.Context, logger *slog.Logger, id string, held int) bool {
	if l.max <= 0 || held < l.max {
		if l.full {
			l.full = false
			logger.InfoContext(ctx, "call bound no longer reached; new calls are held again", "max_calls", l.max,
				"dropped_total", l.dropped.Load())
		}
		return true
	}
	l.dropped.Add(1)
	if !l.full {
		l.full = true
		logger.ErrorContext(ctx, "call bound reached: new calls are not held (no rule or request decides for them, the API answers 404) until calls end or are evicted",
			"max_calls", l.max, "call_id", id)
	} else {
		logger.DebugContext(ctx, "call not held: call bound reached", "max_calls", l.max, "call_id", id)
	}
	return false
}
