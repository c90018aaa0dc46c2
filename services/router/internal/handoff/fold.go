package handoff

import (
	"context"
	"log/slog"
	"maps"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/router/internal/template"
)

// Fold is the router's state: every live call it saw start, kept until
// the call ends. Changes are made in batches that mirror the Kafka
// transaction they belong to: Commit keeps them, Rollback restores the
// state as it was after the last Commit, so records handled again after an
// aborted transaction are decided again, exactly as the first time.
//
// A Fold is not safe for concurrent use.
type Fold struct {
	table  Table
	logger *slog.Logger
	calls  map[string]*call
	// undo holds, for every call touched since the last Commit, its state
	// before the batch (nil: the call was unknown).
	undo map[string]*call
}

// call is the state of one live call. A call value is never changed once
// a batch can roll back to it: changes copy it first (see mutable).
type call struct {
	startedID    string
	dialog       *batonv1.Dialog
	variables    map[string]string
	callerNumber string
	calleeNumber string
	// handled holds the ids of the events that already produced a
	// decision, so a duplicated record decides nothing twice.
	handled map[string]bool
}

func (c *call) clone() *call {
	cp := *c
	cp.handled = maps.Clone(c.handled)
	return &cp
}

// New returns an empty fold over table.
func New(table Table, logger *slog.Logger) *Fold {
	return &Fold{table: table, logger: logger, calls: map[string]*call{}, undo: map[string]*call{}}
}

// Calls is the number of live calls.
func (f *Fold) Calls() int { return len(f.calls) }

// Commit keeps every change since the last Commit or Rollback.
func (f *Fold) Commit() { clear(f.undo) }

// Rollback undoes every change since the last Commit or Rollback.
func (f *Fold) Rollback() {
	for id, before := range f.undo {
		if before == nil {
			delete(f.calls, id)
		} else {
			f.calls[id] = before
		}
	}
	clear(f.undo)
}

// touch records the state of a call before its first change in a batch.
func (f *Fold) touch(id string) {
	if _, saved := f.undo[id]; !saved {
		f.undo[id] = f.calls[id]
	}
}

// mutable returns the call's state, copied if the batch has not yet.
func (f *Fold) mutable(id string) *call {
	f.touch(id)
	c := f.calls[id]
	if c != nil && c == f.undo[id] {
		c = c.clone()
		f.calls[id] = c
	}
	return c
}

// Apply folds one event and returns the commands it causes.
func (f *Fold) Apply(ctx context.Context, ev events.Event) []*batonv1.HandoffCommand {
	switch msg := ev.Data.(type) {
	case *batonv1.CallStarted:
		return f.callStarted(ctx, ev, msg)
	case *batonv1.CallEnded:
		f.callEnded(ctx, ev)
	case *batonv1.HandoffRequested:
		return f.handoffRequested(ctx, ev, msg)
	case *batonv1.TransferOutcome:
		f.logger.InfoContext(ctx, "transfer outcome", "call_id", ev.Subject, "command_id", msg.GetCommandId(),
			"status", msg.GetStatus().String(), "destination", msg.GetDestination(),
			"sip_code", msg.GetSipCode(), "detail", msg.GetDetail())
	default:
		f.logger.DebugContext(ctx, "event ignored", "call_id", ev.Subject, "type", ev.Type)
	}
	return nil
}

func (f *Fold) callStarted(ctx context.Context, ev events.Event, msg *batonv1.CallStarted) []*batonv1.HandoffCommand {
	id := ev.Subject
	if c := f.calls[id]; c != nil {
		f.logger.InfoContext(ctx, "call already started; duplicate ignored", "call_id", id,
			"event_id", ev.ID, "first_event_id", c.startedID)
		return nil
	}
	f.touch(id)
	c := &call{
		startedID:    ev.ID,
		dialog:       msg.GetDialog(),
		variables:    msg.GetVariables(),
		callerNumber: msg.GetCallerNumber(),
		calleeNumber: msg.GetCalleeNumber(),
		handled:      map[string]bool{ev.ID: true},
	}
	f.calls[id] = c
	r, ok := f.matchRule(c)
	if !ok {
		return nil
	}
	cmd := f.decide(ctx, id, c, ev.ID, r.Destination, "rule:"+r.Name, nil)
	if cmd == nil {
		return nil
	}
	return []*batonv1.HandoffCommand{cmd}
}

// matchRule returns the first rule that matches a starting call. Rules have
// no conditions yet, so the first rule matches every call.
func (f *Fold) matchRule(*call) (Rule, bool) {
	if len(f.table.Rules) == 0 {
		return Rule{}, false
	}
	return f.table.Rules[0], true
}

func (f *Fold) callEnded(ctx context.Context, ev events.Event) {
	id := ev.Subject
	if f.calls[id] == nil {
		f.logger.DebugContext(ctx, "end of an unknown call", "call_id", id)
		return
	}
	f.touch(id)
	delete(f.calls, id)
}

func (f *Fold) handoffRequested(ctx context.Context, ev events.Event, msg *batonv1.HandoffRequested) []*batonv1.HandoffCommand {
	id := ev.Subject
	if msg.GetCallId() != "" && msg.GetCallId() != id {
		f.logger.WarnContext(ctx, "handoff request names another call; skipped", "call_id", id,
			"request_call_id", msg.GetCallId(), "request_id", msg.GetRequestId())
		return nil
	}
	if f.calls[id] == nil {
		f.logger.WarnContext(ctx, "handoff requested for an unknown call; skipped", "call_id", id,
			"request_id", msg.GetRequestId())
		return nil
	}
	if f.calls[id].handled[ev.ID] {
		f.logger.InfoContext(ctx, "handoff request already handled; duplicate ignored", "call_id", id,
			"event_id", ev.ID, "request_id", msg.GetRequestId())
		return nil
	}
	c := f.mutable(id)
	c.handled[ev.ID] = true

	dest := msg.GetDestination()
	if dest == "" {
		dest = f.table.Default
	} else if _, ok := f.table.destination(dest); !ok {
		f.logger.WarnContext(ctx, "handoff requested to an unknown destination; using the default", "call_id", id,
			"request_id", msg.GetRequestId(), "destination", dest, "default", f.table.Default)
		dest = f.table.Default
	}
	cmd := f.decide(ctx, id, c, ev.ID, dest, msg.GetReason(), msg)
	if cmd == nil {
		return nil
	}
	return []*batonv1.HandoffCommand{cmd}
}

// decide builds the command that hands call id off to the destination
// named dest, or returns nil when a header renders to a value that must not
// be sent.
func (f *Fold) decide(ctx context.Context, id string, c *call, triggerID, dest, reason string, req *batonv1.HandoffRequested) *batonv1.HandoffCommand {
	d, ok := f.table.destination(dest)
	if !ok {
		// Configuration validation makes this unreachable.
		f.logger.ErrorContext(ctx, "handoff refused: destination not configured", "call_id", id, "destination", dest)
		return nil
	}
	commandID := CommandID(id, triggerID)
	system := map[string]any{
		"call_id":           id,
		"caller_number":     c.callerNumber,
		"callee_number":     c.calleeNumber,
		"from_phone_number": c.callerNumber,
		"to_phone_number":   c.calleeNumber,
	}
	scope := template.NewScope(system, template.Strings(req.GetVariables()), template.Strings(c.variables))
	headers := make([]*batonv1.SipHeader, 0, len(d.Headers))
	var missing []string
	for _, h := range d.Headers {
		v, miss := h.Value.Render(scope)
		missing = append(missing, miss...)
		if err := sipx.ValidateCustom(h.Name, v); err != nil {
			f.logger.WarnContext(ctx, "handoff refused: rendered header is invalid", "call_id", id,
				"command_id", commandID, "destination", d.Name, "header", h.Name, "reason", err.Error())
			return nil
		}
		headers = append(headers, &batonv1.SipHeader{Name: h.Name, Value: v})
	}
	if len(missing) > 0 {
		f.logger.InfoContext(ctx, "template variables missing; rendered empty", "call_id", id,
			"command_id", commandID, "destination", d.Name, "missing", missing)
	}
	cmd := &batonv1.HandoffCommand{
		CommandId:     commandID,
		CallId:        id,
		Method:        d.Method,
		Destination:   d.Name,
		Route:         d.Route,
		Headers:       headers,
		Reason:        reason,
		AnswerTimeout: durationpb.New(d.AnswerTimeout),
		Attempt:       1,
		Utterance:     req.GetUtterance(),
		RequestId:     req.GetRequestId(),
	}
	if c.dialog != nil {
		cmd.Dialog = proto.CloneOf(c.dialog)
	}
	return cmd
}
