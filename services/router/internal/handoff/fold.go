package handoff

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/router/internal/route"
	"github.com/baton-voice/baton/services/router/internal/rules"
	"github.com/baton-voice/baton/services/router/internal/template"
)

// Refusal reason codes (HandoffRefused.reason_code).
const (
	RefusedUnknownDestination = "unknown_destination"
	RefusedRouteNotAllowed    = "route_not_allowed"
	RefusedInvalidHeader      = "invalid_header"
	RefusedMissingVariable    = "missing_variable"
	RefusedInProgress         = "handoff_in_progress"
	// RefusedNumberDenied: the route dials a number of
	// allowlist.deny_numbers (a premium-rate prefix).
	RefusedNumberDenied = "number_denied"
	// RefusedTooManyHandoffs: the call already started
	// max_handoffs_per_call handoffs.
	RefusedTooManyHandoffs = "too_many_handoffs"
)

// ReasonAllFailed is the reason of the BYE that ends a call after every
// destination of its handoff failed (on_all_failed: hangup).
const ReasonAllFailed = "all_destinations_failed"

// Decision is one record the router publishes: a *batonv1.HandoffCommand
// or a *batonv1.HandoffRefused. ID is its event id, derived from the
// trigger (see CommandID), so a replay gives the same id.
type Decision struct {
	ID  string
	Msg proto.Message
}

// Fold is the router's state: every live call it saw start, kept until
// the call ends. Changes are made in batches that mirror the Kafka
// transaction they belong to: Commit keeps them, Rollback restores the
// state as it was after the last Commit, so records handled again after an
// aborted transaction are decided again, exactly as the first time.
//
// Apply, Commit and Rollback must be called from one goroutine; View may
// be called from any, and sees committed state only.
type Fold struct {
	tables Source
	logger *slog.Logger
	calls  map[string]*call
	// undo holds, for every call touched since the last Commit, its state
	// before the batch (nil: the call was unknown).
	undo map[string]*call

	// view is the committed state, for readers on other goroutines. The
	// calls it points to are never changed (see mutable).
	mu    sync.RWMutex
	view  map[string]*call
	ended *tombstones
	// changed is closed, and replaced, by every Commit (see Changed).
	changed chan struct{}

	// agentPicks are the AgentSelected decisions of the event being
	// applied (a rule's agent action, the pre-call answer's agent).
	agentPicks []Decision

	// refusedState holds the reasons (StateTooManyKeys, StateTooLarge) of
	// the state writes refused since the last Commit or Rollback; see
	// RefusedStateWrites.
	refusedState []string

	// evicted holds the calls a CallEvicted removed since the last Commit:
	// they read as unknown afterwards, not as ended.
	evicted map[string]bool
	// limit bounds the calls held (WithMaxCalls); 0 is no bound.
	limit callLimit
	// held is the number of committed calls, for metrics on other
	// goroutines.
	held atomic.Int64

	// pending are the transitions of the batch, for sink at Commit.
	pending []Transition
	sink    Sink
	// history is how many transitions a call keeps (WithHistory).
	history int

	// health is the destinations' health folded from DestinationHealth,
	// per partition of the calls topic; healthUndo holds, for every
	// key changed since the last Commit, its entry before (nil: none).
	health     map[healthKey]healthEntry
	healthUndo map[healthKey]*healthEntry
}

// call is the state of one live call. A call value is never changed once
// a batch can roll back to it or a reader can see it: changes copy it
// first (see mutable).
type call struct {
	id           string
	startedID    string
	dialog       *batonv1.Dialog
	sipHeaders   []*batonv1.SipHeader
	headerIndex  map[string][]string // lower-cased name → values
	variables    map[string]string   // stripped X- headers (CallStarted)
	setVariables map[string]string   // written by rules
	state        map[string]string   // written by the agent and by rules
	callerNumber string
	calleeNumber string
	// precall is the call's pre-call data; nil until its PreCallData.
	precall *preCall
	// handled holds the ids of the events that already produced a
	// decision, so a duplicated record decides nothing twice.
	handled map[string]bool
	handoff *handoffState
	// handoffs counts the handoffs the call started (a first command
	// issued), for max_handoffs_per_call.
	handoffs uint32
	// marks are the names of the agent's marks played out (AgentMarkPlayed),
	// the last MaxMarks, oldest first. The slice is shared with committed
	// states: it is replaced, never appended to in place.
	marks []string
	// agentStream is set while the call's agent stream is connected
	// (AgentConnected, until AgentDisconnected).
	agentStream bool
	// lastEvent is the latest event time of the call's events folded: a
	// call idle for max_call_duration is evicted (see Idle, CallEvicted).
	lastEvent time.Time
	// seq counts the call's transitions; transitions are its last ones
	// (WithHistory), shared with committed states: replaced, never
	// appended to in place.
	seq         uint32
	transitions []Transition
	// localSDP is the SDP ingress last sent the caller (CallStarted, then
	// each CallUpdated): a warm transfer's re-INVITE continues its
	// session (RFC 3264 8) and offers only its codecs.
	localSDP string
	// agent is the agent the router chose for the call (AgentSelected),
	// empty when none did; agentByPrecall is set when the pre-call answer
	// chose it (rules then leave it).
	agent          string
	agentByPrecall bool
}

func (c *call) clone() *call {
	cp := *c
	cp.handled = maps.Clone(c.handled)
	cp.setVariables = maps.Clone(c.setVariables)
	cp.state = maps.Clone(c.state)
	if c.handoff != nil {
		h := *c.handoff
		h.tried = slices.Clone(c.handoff.tried)
		cp.handoff = &h
	}
	return &cp
}

// handoffState is the handoff a call is in, from its first command to its
// last outcome. It keeps the table the handoff started under, so a reload
// never changes a handoff in flight.
type handoffState struct {
	table *Table
	// rule is the routing rule that chose the first destination; empty
	// when none did.
	rule       string
	requestID  string
	reason     string
	utterance  string
	reqVars    map[string]string
	reqHeaders map[string]string
	// whisperURL is the request's own whisper (HandoffRequested.whisper_url).
	whisperURL string
	// origin is the first destination: its fallback list is followed.
	origin      Destination
	tried       []string
	attempt     uint32
	commandID   string
	destination string
	route       string
	method      batonv1.Method
	status      Status
	sipCode     int32
	sipReason   string
	detail      string
	refusedCode string
	// ending is set once the end policy sent its BYE.
	ending bool
}

// Status is where a call's handoff stands.
type Status string

// Handoff statuses.
const (
	StatusNone      Status = "none"
	StatusRequested Status = "requested"
	StatusExecuting Status = "executing"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusRefused   Status = "refused"
)

// New returns an empty fold deciding with the tables of src.
func New(src Source, logger *slog.Logger) *Fold {
	return &Fold{
		tables: src, logger: logger,
		calls: map[string]*call{}, undo: map[string]*call{},
		view: map[string]*call{}, ended: newTombstones(maxTombstones), changed: make(chan struct{}),
		evicted: map[string]bool{},
	}
}

// Calls is the number of live calls.
func (f *Fold) Calls() int { return len(f.calls) }

// Commit keeps every change since the last Commit or Rollback and
// publishes it to View.
func (f *Fold) Commit() {
	f.mu.Lock()
	for id := range f.undo {
		if c := f.calls[id]; c != nil {
			f.view[id] = c
			continue
		}
		// Only callStarted creates, and only callEnded and callEvicted
		// delete: a touched call that is gone ended in this batch, or was
		// evicted (then it reads as unknown).
		if !f.evicted[id] {
			f.ended.add(id)
		}
		delete(f.view, id)
	}
	f.held.Store(int64(len(f.view)))
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	clear(f.undo)
	clear(f.evicted)
	f.commitHealth()
	f.refusedState = f.refusedState[:0]
	if f.sink != nil && len(f.pending) > 0 {
		f.sink.Transitions(f.pending)
	}
	f.pending = nil
}

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
	clear(f.evicted)
	f.rollbackHealth()
	f.refusedState = f.refusedState[:0]
	f.pending = nil
}

// RefusedStateWrites returns the reasons of the state writes the fold
// refused (StateTooManyKeys, StateTooLarge) since the last Commit or
// Rollback: the batch's, for the caller to count once it commits. The
// slice is only valid until the next Apply, Commit or Rollback.
func (f *Fold) RefusedStateWrites() []string { return f.refusedState }

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

// Apply folds one event and returns the decisions it causes.
func (f *Fold) Apply(ctx context.Context, ev events.Event) []Decision {
	// One table for the whole event: a reload between two events never
	// splits a decision.
	table := f.tables.Current()
	var d *Decision
	switch msg := ev.Data.(type) {
	case *batonv1.CallStarted:
		d = f.callStarted(ctx, table, ev, msg)
	case *batonv1.CallEnded:
		f.callEnded(ctx, ev)
	case *batonv1.HandoffRequested:
		d = f.handoffRequested(ctx, table, ev, msg)
	case *batonv1.InboundReferReceived:
		d = f.inboundRefer(ctx, table, ev, msg)
	case *batonv1.CallStateChanged:
		f.stateChanged(ctx, table, ev, msg)
	case *batonv1.PreCallData:
		d = f.preCallData(ctx, table, ev, msg)
	case *batonv1.TransferOutcome:
		d = f.transferOutcome(ctx, ev, msg)
	case *batonv1.AgentConnected:
		f.agentStream(ctx, ev, true)
	case *batonv1.AgentDisconnected:
		f.agentStream(ctx, ev, false)
	case *batonv1.AgentMarkPlayed:
		f.markPlayed(ctx, ev, msg)
	case *batonv1.CallUpdated:
		if f.calls[ev.Subject] != nil && msg.GetLocalSdp() != "" {
			f.mutable(ev.Subject).localSDP = msg.GetLocalSdp()
		}
	case *batonv1.AgentMetric:
		f.logger.DebugContext(ctx, "agent metric", "call_id", ev.Subject, "name", msg.GetName(), "value", msg.GetValue())
	case *batonv1.CallEvicted:
		f.callEvicted(ctx, ev, msg)
		return nil
	case *batonv1.DestinationHealth:
		f.destinationHealth(ctx, ev, msg)
		return nil
	default:
		f.logger.DebugContext(ctx, "event ignored", "call_id", ev.Subject, "type", ev.Type)
	}
	f.seen(ev)
	picks := f.agentPicks
	f.agentPicks = nil
	if d == nil {
		return picks
	}
	f.emitDecision(ev.Subject, ev, *d)
	return append(picks, *d)
}

func (f *Fold) callStarted(ctx context.Context, table *Table, ev events.Event, msg *batonv1.CallStarted) *Decision {
	id := ev.Subject
	if c := f.calls[id]; c != nil {
		f.logger.InfoContext(ctx, "call already started; duplicate ignored", "call_id", id,
			"event_id", ev.ID, "first_event_id", c.startedID)
		return nil
	}
	if !f.limit.admit(ctx, f.logger, id, len(f.calls)) {
		return nil
	}
	f.touch(id)
	c := &call{
		id:           id,
		startedID:    ev.ID,
		dialog:       msg.GetDialog(),
		sipHeaders:   msg.GetSipHeaders(),
		headerIndex:  indexHeaders(msg.GetSipHeaders()),
		variables:    msg.GetVariables(),
		callerNumber: msg.GetCallerNumber(),
		calleeNumber: msg.GetCalleeNumber(),
		handled:      map[string]bool{ev.ID: true},
		localSDP:     msg.GetLocalSdp(),
	}
	f.calls[id] = c
	dest, rule := f.runRules(ctx, table, c, ev, "", phaseStart)
	if dest == "" {
		return nil
	}
	return f.startHandoff(ctx, table, c, ev, dest, rule, "rule:"+rule, nil)
}

func indexHeaders(hs []*batonv1.SipHeader) map[string][]string {
	idx := make(map[string][]string, len(hs))
	for _, h := range hs {
		k := strings.ToLower(h.GetName())
		idx[k] = append(idx[k], h.GetValue())
	}
	return idx
}

// phase says which rules a pass tries.
type phase int

const (
	// phaseStart is the pass when a call starts: the rules not marked
	// after: precall. Pre-call data is never folded yet.
	phaseStart phase = iota
	// phasePreCall is the pass when the call's PreCallData is folded: the
	// rules marked after: precall.
	phasePreCall
	// phaseRequest is the pass for a handoff request without destination:
	// every rule, with whatever pre-call data the log holds before it.
	phaseRequest
)

// tries reports whether a pass of phase p tries rule r.
func (p phase) tries(r Rule) bool {
	switch p {
	case phaseStart:
		return !r.AfterPreCall
	case phasePreCall:
		return r.AfterPreCall
	}
	return true
}

// runRules evaluates the table's rules of a phase for c, which must be
// mutable, and applies the set actions of the rules that match. It returns
// the destination of the first matching rule that hands off, with that
// rule's name, or "" when the rules leave the call to the agent.
func (f *Fold) runRules(ctx context.Context, table *Table, c *call, ev events.Event, reason string, p phase) (dest, rule string) {
	if len(table.Rules) == 0 {
		return "", ""
	}
	in := &rules.Input{
		CallerNumber: c.callerNumber,
		CalleeNumber: c.calleeNumber,
		SipHeaders:   c.headerIndex,
		Variables:    c.ruleVariables(),
		State:        c.state,
		Reason:       reason,
		Time:         ev.Time,
		Results:      c.results(),
	}
	for _, r := range table.Rules {
		if !p.tries(r) {
			continue
		}
		if r.When != nil {
			ok, err := r.When.Match(in)
			if err != nil {
				f.logger.WarnContext(ctx, "rule condition failed; no match", "call_id", c.id, "rule", r.Name, "err", err)
			}
			if !ok {
				continue
			}
		}
		if len(r.SetVariables) > 0 || len(r.SetState) > 0 {
			c.setVariables = setAll(c.setVariables, r.SetVariables)
			c.state = setAll(c.state, r.SetState)
			in.Variables, in.State = c.ruleVariables(), c.state
			in.Invalidate()
		}
		f.logger.DebugContext(ctx, "rule matched", "call_id", c.id, "rule", r.Name, "handoff", r.Destination)
		if r.Agent != "" {
			f.selectAgent(c, ev, r.Agent, "rule:"+r.Name)
		}
		if r.Destination != "" {
			return r.Destination, r.Name
		}
		if !r.Continue {
			return "", r.Name
		}
	}
	return "", ""
}

// setAll copies m (which may be shared with a committed call) and writes kv.
func setAll(m, kv map[string]string) map[string]string {
	if len(kv) == 0 {
		return m
	}
	out := maps.Clone(m)
	if out == nil {
		out = make(map[string]string, len(kv))
	}
	maps.Copy(out, kv)
	return out
}

// ruleVariables are the variables rules see: the stripped X- headers
// overlaid with the variables rules set, names normalised.
func (c *call) ruleVariables() map[string]string {
	out := make(map[string]string, len(c.variables)+len(c.setVariables))
	for _, k := range slices.Sorted(maps.Keys(c.variables)) {
		if _, dup := out[template.Normalize(k)]; !dup {
			out[template.Normalize(k)] = c.variables[k]
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.setVariables)) {
		out[template.Normalize(k)] = c.setVariables[k]
	}
	return out
}

func (f *Fold) callEnded(ctx context.Context, ev events.Event) {
	id := ev.Subject
	if f.calls[id] == nil {
		f.logger.DebugContext(ctx, "end of an unknown call", "call_id", id)
		return
	}
	f.touch(id)
	f.emitGone(f.calls[id], TransitionCallEnded, ev, "")
	delete(f.calls, id)
}

// stateChanged applies an agent's write to a call's state, unless it
// would grow the state past the table's per-call caps: the API refuses
// such a write, but writes it accepted against the same committed state
// may together break a cap, and a record may come from elsewhere. A
// refused write is not applied at all (never in part), logged, and kept
// for RefusedStateWrites.
//
// Every applied write copies the call's state map (setAll, and mutable's
// clone once per batch), so a change costs the size of the whole state;
// the caps bound that cost.
func (f *Fold) stateChanged(ctx context.Context, table *Table, ev events.Event, msg *batonv1.CallStateChanged) {
	id := ev.Subject
	if f.calls[id] == nil {
		f.logger.WarnContext(ctx, "state change for an unknown call; skipped", "call_id", id, "request_id", msg.GetRequestId())
		return
	}
	state := f.calls[id].state
	if ex := table.CheckState(SizeOf(state), PatchedSize(state, msg.GetSet(), msg.GetRemoved())); ex != nil {
		f.refusedState = append(f.refusedState, ex.Reason)
		f.logger.WarnContext(ctx, "state change refused: per-call cap", "call_id", id, "request_id", msg.GetRequestId(),
			"event_id", ev.ID, "set_by", msg.GetSetBy(), "reason", ex.Reason, "limit", ex.Limit, "max", ex.Max,
			"current", ex.Current, "after", ex.After)
		return
	}
	c := f.mutable(id)
	c.state = setAll(c.state, msg.GetSet())
	if len(msg.GetRemoved()) > 0 {
		c.state = maps.Clone(c.state)
		for _, k := range msg.GetRemoved() {
			delete(c.state, k)
		}
	}
}

func (f *Fold) handoffRequested(ctx context.Context, table *Table, ev events.Event, msg *batonv1.HandoffRequested) *Decision {
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
	f.emitRequested(c, ev, msg)

	if h := c.handoff; h != nil && (h.status == StatusRequested || h.status == StatusExecuting || h.status == StatusSucceeded) {
		return f.refuse(ctx, c, ev, msg, msg.GetDestination(), "", RefusedInProgress,
			fmt.Sprintf("handoff %s is %s (destination %s, attempt %d)", h.commandID, h.status, h.destination, h.attempt))
	}
	dest, reason := msg.GetDestination(), msg.GetReason()
	var rule string
	if dest == "" {
		dest, rule = f.runRules(ctx, table, c, ev, reason, phaseRequest)
		if dest == "" {
			dest = table.Default
		} else if reason == "" {
			reason = "rule:" + rule
		}
	}
	return f.startHandoff(ctx, table, c, ev, dest, rule, reason, msg)
}

// startHandoff begins a handoff of c to target (a destination name, or a
// route the allowlist admits) and returns its first command, or the
// refusal. rule names the routing rule that chose target ("" when none
// did); the command, its fallbacks and a refusal carry it.
func (f *Fold) startHandoff(ctx context.Context, table *Table, c *call, ev events.Event, target, rule, reason string, req *batonv1.HandoffRequested) *Decision {
	d := f.beginHandoff(ctx, table, c, ev, target, rule, reason, req)
	if r, ok := d.Msg.(*batonv1.HandoffRefused); ok {
		r.Rule = rule
	}
	return d
}

func (f *Fold) beginHandoff(ctx context.Context, table *Table, c *call, ev events.Event, target, rule, reason string, req *batonv1.HandoffRequested) *Decision {
	if table.MaxHandoffs > 0 && c.handoffs >= table.MaxHandoffs {
		return f.refuse(ctx, c, ev, req, target, "", RefusedTooManyHandoffs,
			fmt.Sprintf("the call already started %d handoffs (max_handoffs_per_call %d)", c.handoffs, table.MaxHandoffs))
	}
	d, code, detail := resolve(table, target)
	if code != "" {
		return f.refuse(ctx, c, ev, req, target, "", code, detail)
	}
	origin := d
	var skipped []string
	if d.SkipWhenDown {
		var ok bool
		if d, skipped, ok = f.skipDown(ctx, table, c, d, nil); !ok {
			return f.refuse(ctx, c, ev, req, target, origin.Route, RefusedDestinationDown, downDetail(skipped))
		}
	}
	h := &handoffState{
		table:      table,
		rule:       rule,
		requestID:  req.GetRequestId(),
		reason:     reason,
		utterance:  req.GetUtterance(),
		reqVars:    req.GetVariables(),
		reqHeaders: req.GetHeaders(),
		whisperURL: req.GetWhisperUrl(),
		origin:     origin,
	}
	for _, name := range skipped {
		h.tried = append(h.tried, strings.ToLower(name))
	}
	cmd, code, detail := f.render(ctx, c, h, d, ev.ID)
	if code != "" {
		return f.refuse(ctx, c, ev, req, target, d.Route, code, detail)
	}
	cmd.Attempt = 1
	cmd.Skipped = skipped
	h.record(cmd)
	c.handoff = h
	c.handoffs++
	return &Decision{ID: cmd.GetCommandId(), Msg: cmd}
}

// resolve finds the destination a handoff targets: a configured
// destination by name, or an ad-hoc route the allowlist admits (a bare
// route, route.AdHoc, matching a pattern) and that dials no denied number.
func resolve(table *Table, target string) (Destination, string, string) {
	if d, ok := table.destination(target); ok {
		return d, "", ""
	}
	if !looksLikeRoute(target) {
		return Destination{}, RefusedUnknownDestination, fmt.Sprintf("%q is not a configured destination", target)
	}
	if err := route.AdHoc(target); err != nil {
		return Destination{}, RefusedRouteNotAllowed, err.Error()
	}
	// A denied number is refused as such even when no pattern admits it:
	// the code tells fraud attempts from mistakes.
	if p, denied := route.Denied(target, table.DeniedNumbers); denied {
		return Destination{}, RefusedNumberDenied, fmt.Sprintf("route %q dials a denied number (prefix %s)", target, p)
	}
	if !table.routeAllowed(target) {
		return Destination{}, RefusedRouteNotAllowed, fmt.Sprintf("route %q matches no allowlist pattern", target)
	}
	method := batonv1.Method_METHOD_INVITE
	if l := strings.ToLower(target); strings.HasPrefix(l, "sip:") || strings.HasPrefix(l, "sips:") {
		method = batonv1.Method_METHOD_REFER
	}
	d := Destination{Name: target, Method: method, Route: target, AnswerTimeout: table.AdHocAnswerTimeout}
	if method == batonv1.Method_METHOD_INVITE {
		d.Encryption = EncryptionTLSSRTP
	}
	return d, "", ""
}

// looksLikeRoute tells a route (a URI or a number) from a destination name.
func looksLikeRoute(s string) bool {
	if strings.Contains(s, ":") {
		return true
	}
	s = strings.TrimPrefix(s, "+")
	return s != "" && strings.Trim(s, "0123456789*#") == ""
}

// render builds the command that hands c off to d, or a refusal code and
// detail when a header is invalid or a required variable is missing.
func (f *Fold) render(ctx context.Context, c *call, h *handoffState, d Destination, triggerID string) (*batonv1.HandoffCommand, string, string) {
	commandID := CommandID(c.id, triggerID)
	if h.reason == InboundReferReason {
		d = asTransferee(d)
	}
	scope := template.Call{
		System: map[string]string{
			"call_id":           c.id,
			"caller_number":     c.callerNumber,
			"callee_number":     c.calleeNumber,
			"from_phone_number": c.callerNumber,
			"to_phone_number":   c.calleeNumber,
		},
		Agent:   h.reqVars,
		Rules:   c.setVariables,
		State:   c.state,
		Results: c.results(),
		Headers: c.variables,
	}.Scope()
	headers := make([]*batonv1.SipHeader, 0, len(d.Headers))
	var missing []string
	for _, hd := range d.Headers {
		v, miss := hd.Value.Render(scope)
		if agent, ok := agentHeader(h.reqHeaders, hd.Name); ok {
			v, miss = agent, nil
		}
		missing = append(missing, miss...)
		if err := sipx.ValidateCustom(hd.Name, v); err != nil {
			f.logger.WarnContext(ctx, "handoff refused: rendered header is invalid", "call_id", c.id,
				"command_id", commandID, "destination", d.Name, "header", hd.Name, "reason", err.Error())
			return nil, RefusedInvalidHeader, fmt.Sprintf("header %s: %v", hd.Name, err)
		}
		headers = append(headers, &batonv1.SipHeader{Name: hd.Name, Value: v})
	}
	if dropped := droppedHeaders(h.reqHeaders, d); len(dropped) > 0 {
		f.logger.InfoContext(ctx, "agent headers not configured for the destination; not sent", "call_id", c.id,
			"command_id", commandID, "destination", d.Name, "headers", dropped)
	}
	if len(missing) > 0 {
		if d.OnMissing == MissingRefuse {
			f.logger.WarnContext(ctx, "handoff refused: template variables missing", "call_id", c.id,
				"command_id", commandID, "destination", d.Name, "missing", missing)
			return nil, RefusedMissingVariable, "missing variables: " + strings.Join(missing, ", ")
		}
		f.logger.InfoContext(ctx, "template variables missing; rendered empty", "call_id", c.id,
			"command_id", commandID, "destination", d.Name, "missing", missing)
	}
	cmd := &batonv1.HandoffCommand{
		CommandId:     commandID,
		CallId:        c.id,
		Method:        d.Method,
		Destination:   d.Name,
		Route:         d.Route,
		Headers:       headers,
		Reason:        h.reason,
		AnswerTimeout: durationpb.New(d.AnswerTimeout),
		Utterance:     h.utterance,
		RequestId:     h.requestID,
		// Set for INVITE only (tls_srtp or udp_rtp); empty otherwise.
		Encryption: string(d.Encryption),
		// INVITE only, like Encryption: the audio played to the destination.
		Whisper: d.Whisper,
		Rule:    h.rule,
	}
	if d.Method == batonv1.Method_METHOD_INVITE || d.Method == batonv1.Method_METHOD_REFER {
		// The session the re-INVITE to the caller continues: a warm
		// transfer's, or a REFER's fallback to one (transfer's
		// refer_fallback: invite, decision 0017).
		cmd.LocalSdp = c.localSDP
	}
	if d.Method == batonv1.Method_METHOD_REFER {
		cmd.ContextIn = d.ContextIn
	}
	if h.whisperURL != "" {
		// The agent's own whisper for this handoff, where the
		// destination allows its host.
		if d.Method != batonv1.Method_METHOD_INVITE || !WhisperHostAllowed(d.WhisperHosts, h.whisperURL) {
			return nil, RefusedWhisperNotAllowed, fmt.Sprintf("destination %s does not allow the whisper URL's host "+
				"(whisper_hosts; INVITE destinations only)", d.Name)
		}
		cmd.Whisper = h.whisperURL
	}
	if c.dialog != nil {
		cmd.Dialog = proto.CloneOf(c.dialog)
	}
	return cmd, "", ""
}

// agentHeader finds the agent-supplied value of a header, ignoring case;
// when several keys match, the smallest wins, so the choice is stable.
func agentHeader(hs map[string]string, name string) (string, bool) {
	for _, k := range slices.Sorted(maps.Keys(hs)) {
		if strings.EqualFold(k, name) {
			return hs[k], true
		}
	}
	return "", false
}

// droppedHeaders lists the agent-supplied headers d does not configure:
// they are never sent, so internal headers cannot leak to a carrier.
func droppedHeaders(hs map[string]string, d Destination) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(hs)) {
		if _, ok := d.header(k); !ok {
			out = append(out, k)
		}
	}
	return out
}

// record makes cmd the handoff's current command.
func (h *handoffState) record(cmd *batonv1.HandoffCommand) {
	h.attempt = cmd.GetAttempt()
	h.commandID = cmd.GetCommandId()
	h.destination = cmd.GetDestination()
	h.route = cmd.GetRoute()
	h.method = cmd.GetMethod()
	h.status = StatusRequested
	h.sipCode, h.sipReason, h.detail = 0, "", ""
	if cmd.GetDestination() != "" {
		h.tried = append(h.tried, strings.ToLower(cmd.GetDestination()))
	}
}

// refuse records a refused handoff on c and returns the HandoffRefused.
func (f *Fold) refuse(ctx context.Context, c *call, ev events.Event, req *batonv1.HandoffRequested, target, targetRoute, code, detail string) *Decision {
	id := CommandID(c.id, ev.ID)
	f.logger.WarnContext(ctx, "handoff refused", "call_id", c.id, "command_id", id, "request_id", req.GetRequestId(),
		"destination", target, "reason_code", code, "detail", detail)
	if c.handoff == nil || code != RefusedInProgress {
		c.handoff = &handoffState{requestID: req.GetRequestId(), reason: req.GetReason(), destination: target,
			route: targetRoute, status: StatusRefused, refusedCode: code, detail: detail}
	}
	return &Decision{ID: id, Msg: &batonv1.HandoffRefused{
		CallId: c.id, RequestId: req.GetRequestId(), Destination: printable(target), Route: targetRoute,
		ReasonCode: code, Detail: detail, TriggerId: ev.ID,
	}}
}

// printable replaces the control characters of s (a target as
// requested, which may be what was refused for holding them) with U+FFFD,
// so none reaches a published event.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '\uFFFD'
		}
		return r
	}, s)
}

func (f *Fold) transferOutcome(ctx context.Context, ev events.Event, msg *batonv1.TransferOutcome) *Decision {
	id := ev.Subject
	log := f.logger.With("call_id", id, "command_id", msg.GetCommandId(), "status", msg.GetStatus().String(),
		"destination", msg.GetDestination(), "sip_code", msg.GetSipCode())
	log.InfoContext(ctx, "transfer outcome", "detail", msg.GetDetail())
	c := f.calls[id]
	if c == nil || c.handoff == nil || c.handoff.commandID != msg.GetCommandId() {
		log.DebugContext(ctx, "outcome of no current command; ignored")
		return nil
	}
	if c.handled[ev.ID] {
		log.InfoContext(ctx, "outcome already handled; duplicate ignored", "event_id", ev.ID)
		return nil
	}
	c = f.mutable(id)
	c.handled[ev.ID] = true
	h := c.handoff
	if h.ending {
		return nil // the outcome of the end policy's BYE
	}
	f.emitOutcome(c, ev, msg)
	switch msg.GetStatus() {
	case batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS:
		if h.status == StatusRequested {
			h.status = StatusExecuting
		}
		return nil
	case batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED:
		h.status = StatusSucceeded
		h.sipCode, h.sipReason = msg.GetSipCode(), msg.GetSipReason()
		return nil
	case batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED:
		h.status = StatusFailed
		h.sipCode, h.sipReason, h.detail = msg.GetSipCode(), msg.GetSipReason(), msg.GetDetail()
		d := f.fallback(ctx, c, h, ev)
		if d == nil {
			f.emitReturned(c, ev)
		}
		return d
	default:
		return nil
	}
}

// fallback decides what follows a failed command: the next untried
// destination of the origin's fallback list, then the default, within
// max_attempts; then the end policy. Every command of a handoff carries
// the attempt number, one more than the last.
func (f *Fold) fallback(ctx context.Context, c *call, h *handoffState, ev events.Event) *Decision {
	table := h.table
	if h.attempt < table.MaxAttempts {
		var skipped []string
		for _, name := range append(slices.Clone(h.origin.Fallback), table.Default) {
			if slices.Contains(h.tried, strings.ToLower(name)) {
				continue
			}
			d, ok := table.destination(name)
			if !ok {
				continue // validation makes this unreachable
			}
			if d.SkipWhenDown {
				if down, healthID := f.down(c.id, d.Name); down {
					f.logger.InfoContext(ctx, "fallback destination down; skipped", "call_id", c.id,
						"destination", d.Name, "health_event_id", healthID)
					h.tried = append(h.tried, strings.ToLower(d.Name))
					skipped = append(skipped, d.Name)
					continue
				}
			}
			h.tried = append(h.tried, strings.ToLower(d.Name)) // tried even when refused below
			cmd, code, detail := f.render(ctx, c, h, d, ev.ID)
			if code != "" {
				f.logger.WarnContext(ctx, "fallback destination refused; trying the next", "call_id", c.id,
					"destination", d.Name, "reason_code", code, "detail", detail)
				continue
			}
			cmd.Attempt = h.attempt + 1
			cmd.Skipped = skipped
			h.tried = h.tried[:len(h.tried)-1] // record adds it back
			h.record(cmd)
			f.logger.InfoContext(ctx, "transfer failed; falling back", "call_id", c.id, "command_id", cmd.GetCommandId(),
				"destination", d.Name, "attempt", cmd.GetAttempt(), "failed_sip_code", h.sipCode)
			return &Decision{ID: cmd.GetCommandId(), Msg: cmd}
		}
	}
	if table.OnAllFailed == EndReturnToAgent {
		f.logger.InfoContext(ctx, "every destination failed; the call returns to the agent", "call_id", c.id,
			"attempt", h.attempt, "sip_code", h.sipCode)
		return nil
	}
	cmd := &batonv1.HandoffCommand{
		CommandId: CommandID(c.id, ev.ID),
		CallId:    c.id,
		Method:    batonv1.Method_METHOD_BYE,
		Reason:    ReasonAllFailed,
		Attempt:   h.attempt + 1,
		RequestId: h.requestID,
	}
	if c.dialog != nil {
		cmd.Dialog = proto.CloneOf(c.dialog)
	}
	h.ending = true
	h.commandID = cmd.GetCommandId()
	h.attempt = cmd.GetAttempt()
	f.logger.InfoContext(ctx, "every destination failed; hanging up", "call_id", c.id, "command_id", cmd.GetCommandId(),
		"attempt", cmd.GetAttempt())
	return &Decision{ID: cmd.GetCommandId(), Msg: cmd}
}
