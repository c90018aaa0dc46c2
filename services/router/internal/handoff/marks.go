package handoff

import (
	"context"
	"slices"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// MaxMarks bounds the names of played marks a call keeps: the last
// MaxMarks, older ones forgotten first.
const MaxMarks = 32

// MaxMarkLen bounds a mark name; a longer one (the agent names marks) is
// not kept.
const MaxMarkLen = 128

// Mark waits: how the wait of a handoff asked for after a mark ended
// (HandoffRequested.mark_wait).
const (
	MarkPlayed        = "played"
	MarkAlreadyPlayed = "already_played"
	MarkTimeout       = "timeout"
	MarkNoStream      = "no_stream"
)

// MarkState is what a call's committed state says of one mark.
type MarkState struct {
	// Found is false for a call that is not live (unknown or ended).
	Found bool
	// Stream is set while the call's agent stream is connected.
	Stream bool
	// Played is set when the mark is among the call's last MaxMarks played.
	Played bool
}

// MarkState returns what the committed state says of call id's mark
// name. It is safe to call from any goroutine, and cheaper than View.
func (f *Fold) MarkState(id, name string) MarkState {
	f.mu.RLock()
	c := f.view[id]
	f.mu.RUnlock()
	if c == nil {
		return MarkState{}
	}
	return MarkState{Found: true, Stream: c.agentStream, Played: slices.Contains(c.marks, name)}
}

// Changed returns a channel closed by the next Commit: a reader waiting
// for the committed state to change takes it, reads, and waits on it.
func (f *Fold) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

// agentStream records whether the call's agent stream is connected.
func (f *Fold) agentStream(ctx context.Context, ev events.Event, connected bool) {
	id := ev.Subject
	if f.calls[id] == nil {
		f.logger.DebugContext(ctx, "agent stream event of an unknown call", "call_id", id, "type", ev.Type)
		return
	}
	if f.calls[id].agentStream == connected {
		return
	}
	f.mutable(id).agentStream = connected
}

// markPlayed records a mark played out, keeping the last MaxMarks.
func (f *Fold) markPlayed(ctx context.Context, ev events.Event, msg *batonv1.AgentMarkPlayed) {
	id, name := ev.Subject, msg.GetName()
	if f.calls[id] == nil {
		f.logger.DebugContext(ctx, "mark played on an unknown call", "call_id", id)
		return
	}
	if name == "" || len(name) > MaxMarkLen {
		f.logger.WarnContext(ctx, "mark name empty or too long; not kept", "call_id", id, "event_id", ev.ID, "len", len(name))
		return
	}
	c := f.mutable(id)
	keep := c.marks
	if len(keep) >= MaxMarks {
		keep = keep[len(keep)-MaxMarks+1:]
	}
	marks := make([]string, 0, len(keep)+1)
	c.marks = append(append(marks, keep...), name)
}
