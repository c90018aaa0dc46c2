package handoff

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// MaxPreCallBytes bounds a pre-call webhook's response (PreCallData.data_json).
const MaxPreCallBytes = 64 << 10

// ErrPreCallData is wrapped by every reason a pre-call response is not used.
var ErrPreCallData = errors.New("pre-call data")

// preCall is the pre-call data folded for a call. results is never
// changed once set: clones of the call share it.
type preCall struct {
	eventID string
	results map[string]any // nil when the fetch failed
	err     string
}

// DecodeResults reads a pre-call response: a JSON object of at most
// MaxPreCallBytes. Numbers become int64 when they are integers that fit,
// float64 otherwise, so templates render them as written and CEL compares
// them as numbers. The fold and the fetcher both use it, so what the
// fetcher accepts is exactly what the fold can use.
func DecodeResults(data []byte) (map[string]any, error) {
	if len(data) > MaxPreCallBytes {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrPreCallData, len(data), MaxPreCallBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: not JSON: %w", ErrPreCallData, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: data after the JSON value", ErrPreCallData)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: want a JSON object, got %s", ErrPreCallData, jsonKind(v))
	}
	return numbers(obj).(map[string]any), nil
}

// numbers replaces every json.Number in v by an int64 or a float64.
func numbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64() // valid JSON; out of range gives ±Inf
		return f
	}
	return v
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "a list"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	default:
		return "a number"
	}
}

// preCallData folds a call's pre-call data: the first PreCallData of a
// call wins, later ones are ignored. Unless a handoff is already under
// way, the rules marked after: precall then run (see runRules), with the
// PreCallData's time, so the decision depends on the log alone.
func (f *Fold) preCallData(ctx context.Context, table *Table, ev events.Event, msg *batonv1.PreCallData) *Decision {
	id := ev.Subject
	if msg.GetCallId() != "" && msg.GetCallId() != id {
		f.logger.WarnContext(ctx, "pre-call data names another call; skipped", "call_id", id, "data_call_id", msg.GetCallId())
		return nil
	}
	c := f.calls[id]
	if c == nil {
		f.logger.DebugContext(ctx, "pre-call data for an unknown call; skipped", "call_id", id)
		return nil
	}
	if c.precall != nil {
		f.logger.InfoContext(ctx, "pre-call data already folded; duplicate ignored", "call_id", id,
			"event_id", ev.ID, "first_event_id", c.precall.eventID)
		return nil
	}
	c = f.mutable(id)
	c.handled[ev.ID] = true
	pc := &preCall{eventID: ev.ID, err: msg.GetError()}
	if pc.err == "" {
		results, err := DecodeResults([]byte(msg.GetDataJson()))
		if err != nil {
			pc.err = err.Error()
		} else {
			pc.results = results
		}
	}
	c.precall = pc
	if pc.err == "" {
		// The pre-call answer may choose the call's agent; it overrides a
		// rule's choice at the call's start.
		f.selectAgent(c, ev, precallAgent(msg.GetDataJson()), sourcePrecall)
	}
	if pc.err != "" {
		f.logger.WarnContext(ctx, "pre-call data unavailable; handoffs render without it", "call_id", id,
			"fetched_by", msg.GetFetchedBy(), "err", pc.err)
	} else {
		f.logger.DebugContext(ctx, "pre-call data folded", "call_id", id, "fetched_by", msg.GetFetchedBy())
	}
	if h := c.handoff; h != nil && (h.status == StatusRequested || h.status == StatusExecuting || h.status == StatusSucceeded) {
		return nil
	}
	dest, rule := f.runRules(ctx, table, c, ev, "", phasePreCall)
	if dest == "" {
		return nil
	}
	return f.startHandoff(ctx, table, c, ev, dest, rule, "rule:"+rule, nil)
}

// results is the call's pre-call data, nil when none was folded.
func (c *call) results() map[string]any {
	if c.precall == nil {
		return nil
	}
	return c.precall.results
}

// AwaitsPreCall reports whether the committed state has the call started
// by the event startedID live and without pre-call data: the fetcher asks
// before calling the webhook, so a call whose data is already in the log
// (a replay) is not fetched again. Safe from any goroutine.
func (f *Fold) AwaitsPreCall(callID, startedID string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	c := f.view[callID]
	return c != nil && c.startedID == startedID && c.precall == nil
}
