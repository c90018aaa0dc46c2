package transfer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/hops"
)

// handle records the attempts of a batch's new commands, then dispatches
// them and routes the batch's facts, in order. It never waits on a
// transfer. An error leaves the batch uncommitted (it is retried): the
// offsets of a command are committed only after its attempt is durable.
func (s *Service) handle(ctx, work context.Context, records []*kgo.Record) error {
	type item struct {
		ev  events.Event
		cmd *batonv1.HandoffCommand
		run bool
	}
	items := make([]item, 0, len(records))
	var fresh []*batonv1.HandoffCommand
	var freshCalls []string
	var freshIdx []int
	synced := false
	var polled time.Time
	if s.deps.hops.On() {
		polled = time.Now()
	}
	for _, rec := range records {
		ev, ok := s.decode(ctx, rec)
		if !ok {
			continue
		}
		if s.deps.hops.On() {
			s.markHop(ev, polled)
		}
		cmd, isCmd := ev.Data.(*batonv1.HandoffCommand)
		items = append(items, item{ev: ev, cmd: cmd})
		if !isCmd {
			continue
		}
		if !synced {
			// This process may just have been given partitions whose
			// commands another instance attempted: read its attempts first.
			if err := s.attempts.EnsureSynced(ctx); err != nil {
				return err
			}
			synced = true
		}
		if s.skip(ctx, work, ev, cmd) {
			continue
		}
		items[len(items)-1].run = true
		fresh = append(fresh, cmd)
		freshCalls = append(freshCalls, callIDOf(ev, cmd))
		freshIdx = append(freshIdx, len(items)-1)
	}
	var errs []error
	if len(fresh) > 0 {
		for j, err := range s.attempts.Record(ctx, fresh, freshCalls) {
			if err != nil {
				// Not durable: not executed now; the batch is retried.
				items[freshIdx[j]].run = false
				errs = append(errs, err)
			}
		}
	}
	for _, it := range items {
		switch {
		case it.cmd == nil:
			s.route(ctx, it.ev)
		case it.run:
			s.dispatch(ctx, work, it.ev, it.cmd)
		}
	}
	return errors.Join(errs...)
}

func callIDOf(ev events.Event, cmd *batonv1.HandoffCommand) string {
	if id := cmd.GetCallId(); id != "" {
		return id
	}
	return ev.Subject
}

// skip decides, before any attempt is recorded, that a command does not
// run: this process already runs or ran it (a redelivery; silently), its
// attempt is in the log (a redelivery after a crash or a rebalance;
// reported, never executed again), or it is too old (reported).
func (s *Service) skip(ctx, work context.Context, ev events.Event, cmd *batonv1.HandoffCommand) bool {
	id := cmd.GetCommandId()
	e := s.newExecution(ev, cmd)
	if s.reg.known(id) {
		e.log.InfoContext(ctx, "command already executed by this process; skipped")
		return true
	}
	if a, ok := s.attempts.Lookup(id); ok && id != "" {
		s.opts.Metrics.refused(cmd.GetMethod(), RefusedAlreadyAttempted)
		s.detached(ctx, work, e, failed(0, "", fmt.Sprintf("already attempted at %s by %s: not executed again",
			a.AttemptedAt.UTC().Format(time.RFC3339Nano), a.Instance)))
		return true
	}
	if age := s.deps.now().Sub(ev.Time); s.opts.MaxCommandAge > 0 && age > s.opts.MaxCommandAge {
		s.opts.Metrics.refused(cmd.GetMethod(), RefusedTooOld)
		s.detached(ctx, work, e, failed(0, "", fmt.Sprintf("command is %v old, more than max_command_age %v: not executed",
			age.Round(time.Second), s.opts.MaxCommandAge)))
		return true
	}
	return false
}

// commandAge is how long before start a command's event happened: 0 when
// its time is unknown or ahead of this clock.
func commandAge(start, at time.Time) time.Duration {
	if at.IsZero() || at.After(start) {
		return 0
	}
	return start.Sub(at)
}

// dispatch registers the command's execution, so its call's facts reach
// it from now on, and runs it in its own goroutine.
func (s *Service) dispatch(ctx, work context.Context, ev events.Event, cmd *batonv1.HandoffCommand) {
	e := s.newExecution(ev, cmd)
	switch s.reg.add(e) {
	case duplicate:
		e.log.InfoContext(ctx, "command already executed by this process; skipped")
		return
	case full:
		s.opts.Metrics.refused(cmd.GetMethod(), RefusedMaxInFlight)
		s.detached(ctx, work, e, failed(0, "", fmt.Sprintf("too many transfers in flight (max_in_flight %d)", s.opts.MaxInFlight)))
		return
	}
	e.log.InfoContext(ctx, "handoff command received", "method", cmd.GetMethod().String(), "destination", cmd.GetDestination(),
		"attempt", cmd.GetAttempt())
	s.opts.Metrics.command(cmd.GetMethod())
	s.wg.Go(func() {
		defer s.reg.remove(e)
		e.run(work)
	})
}

// newExecution is the execution of a command taken now, logging with its
// call and command ids.
func (s *Service) newExecution(ev events.Event, cmd *batonv1.HandoffCommand) *execution {
	start := s.deps.now()
	callID := callIDOf(ev, cmd)
	return &execution{
		deps:        s.deps,
		log:         s.logger.With("call_id", callID, "command_id", cmd.GetCommandId()),
		cmd:         cmd,
		method:      cmd.GetMethod(),
		callID:      callID,
		start:       start,
		age:         commandAge(start, ev.Time),
		facts:       make(chan proto.Message, factBuffer),
		traceParent: ev.TraceParent,
	}
}

// detached publishes a single outcome for a command that does not run,
// off the consume loop.
func (s *Service) detached(ctx, work context.Context, e *execution, o step) {
	e.log.WarnContext(ctx, "command not executed", "detail", o.detail)
	s.opts.Metrics.command(e.cmd.GetMethod())
	s.wg.Go(func() {
		end := e.startSpan(work)
		defer end()
		e.publish(work, o)
	})
}

// errCommandWhileDraining keeps a batch uncommitted: a command fetched
// after shutdown began is left to the next owner of its partition.
var errCommandWhileDraining = errors.New("handoff command while draining; left uncommitted")

// routeFacts is the handler while draining: facts only, no new command.
// Pausing the handoffs topic strips its buffered records from polls, so a
// command should never show up here.
func (s *Service) routeFacts(ctx context.Context, records []*kgo.Record) error {
	var err error
	for _, rec := range records {
		if rec.Topic == s.opts.Topics.Handoffs {
			err = errCommandWhileDraining
			continue
		}
		if ev, ok := s.decode(ctx, rec); ok {
			s.route(ctx, ev)
		}
	}
	return err
}

func (s *Service) decode(ctx context.Context, rec *kgo.Record) (events.Event, bool) {
	ev, err := events.Decode(rec)
	if err != nil {
		// A record that cannot be decoded never will be: skip it rather
		// than block its partition.
		s.logger.WarnContext(ctx, "undecodable record skipped", "call_id", string(rec.Key), "topic", rec.Topic,
			"partition", rec.Partition, "offset", rec.Offset, "err", err)
		return events.Event{}, false
	}
	return ev, true
}

// route hands NotifyReceived, CallUpdated and CallEnded to the executions
// of their call; other facts are not transfer's business.
func (s *Service) route(ctx context.Context, ev events.Event) {
	switch ev.Data.(type) {
	case *batonv1.NotifyReceived, *batonv1.CallEnded, *batonv1.CallUpdated:
	default:
		return
	}
	delivered, dropped := s.reg.deliver(ev.Subject, ev.Data)
	if dropped > 0 {
		s.logger.WarnContext(ctx, "fact dropped: execution not reading", "call_id", ev.Subject, "type", ev.Type)
	}
	if delivered > 0 {
		s.logger.DebugContext(ctx, "fact routed", "call_id", ev.Subject, "type", ev.Type, "executions", delivered)
	}
}

// markHop records when a command or a NOTIFY fact was polled.
func (s *Service) markHop(ev events.Event, polled time.Time) {
	switch ev.Data.(type) {
	case *batonv1.HandoffCommand:
		s.deps.hops.Mark(hops.TransferConsumed, ev.Subject, polled)
	case *batonv1.NotifyReceived:
		s.deps.hops.Mark(hops.TransferNotify, ev.Subject, polled)
	}
}
