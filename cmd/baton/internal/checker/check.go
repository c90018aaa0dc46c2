// Package checker reads every record of Baton's topics after a run and
// judges them the way Jepsen's Kafka checker judges a history: what the
// producers acknowledged must be there (lost), once (duplicates), in an
// order the call's lifecycle allows (out of order), with no record of an
// aborted transaction given to a read_committed consumer (aborted read)
// and every record decodable as a Baton event.
//
// Read gathers the records (see its doc for the two passes); Check applies
// the rules below and returns a Report. The rules, by kind:
//
// Lost:
//   - every acknowledged call (Options.Calls: the Call-IDs the SBC got a
//     200 OK for) has a CallStarted; every acknowledged event id
//     (Options.EventIDs) is on a topic;
//   - with Options.RequireEnded, every CallStarted has a CallEnded;
//   - with Options.RequireHandoff, every CallStarted has a first handoff
//     decision (a HandoffCommand with attempt 1, or a HandoffRefused);
//   - a committed record that the read_committed consumer was not given;
//   - unless Options.Partial: a HandoffCommand of a call with no
//     CallStarted, and a TransferOutcome or TransferAttempt of a command
//     that is not on the handoffs topic (something acted on a fact that is
//     not there).
//
// Duplicates:
//   - an event id (ce_id) on two records: the same event written twice.
//     The copy takes part in no other rule (consumers deduplicate by id);
//     the rules below count distinct events;
//   - a second CallStarted, or a second CallEnded, of one call;
//   - a command id on two HandoffCommands;
//   - one handoff step decided twice: two command ids for the same
//     (call, request id, attempt);
//   - a command executed twice: two ACCEPTED TransferOutcomes, or two
//     TransferAttempts, for one command id.
//
// Out of order (records of one key in one partition, by offset):
//   - a call's records of one topic in more than one partition (their
//     order is then undefined);
//   - on the calls topic, a CallEnded, NotifyReceived, CallUpdated,
//     DtmfReceived or InboundReferReceived (or an agent stream's event) before the call's
//     CallStarted, and any of them or CallStarted after its CallEnded;
//   - on the handoffs topic, a handoff's attempts not 1, 2, 3, ... in
//     order (an attempt not one more than the previous of the same call
//     and request id);
//   - on the transfers topic, an ACCEPTED outcome after another outcome of
//     the command, and any outcome after the command's FAILED or ENDED;
//   - offsets of a partition not increasing in the input.
//
// Per-producer sequence numbers are not judged directly: franz-go does not
// expose a batch's base sequence on its records. Idempotent producers keep
// a partition's order, so a producer going backwards shows up as a
// lifecycle violation above.
//
// Aborted read: a record of an aborted transaction that a read_committed
// consumer was given. Undecodable: a record that is not a valid Baton
// CloudEvent. Dead letter: any record on a dead-letter topic (analytics
// could not store it).
//
// Records the read_committed consumer did not get (Withheld) take part in
// no rule but the two about isolation: the other rules judge what
// consumers see.
package checker

import (
	"fmt"
	"maps"
	"slices"
	"sort"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// Kind groups findings.
type Kind string

// RuleDuplicateEventID names the finding of one event written twice.
const RuleDuplicateEventID = "duplicate event id"

// Kinds of finding, in report order.
const (
	Lost        Kind = "lost"
	Duplicate   Kind = "duplicate"
	OutOfOrder  Kind = "out of order"
	AbortedRead Kind = "aborted read"
	Undecodable Kind = "undecodable"
	DeadLetter  Kind = "dead letter"
)

// kinds lists every Kind in report order.
var kinds = []Kind{Lost, Duplicate, OutOfOrder, AbortedRead, Undecodable, DeadLetter}

// Finding is one violated rule.
type Finding struct {
	Kind Kind
	// Rule names the rule, for example "duplicate event id".
	Rule string
	// Detail says where: keys, ids and record positions.
	Detail string
}

func (f Finding) String() string { return fmt.Sprintf("%s: %s: %s", f.Kind, f.Rule, f.Detail) }

// Options are what Check knows beyond the records.
type Options struct {
	// Calls are Call-IDs the producer side acknowledged (the SBC got a
	// 200 OK): each must have a CallStarted.
	Calls []string
	// EventIDs are event ids a producer acknowledged: each must be read.
	EventIDs []string
	// RequireEnded asks for a CallEnded for every CallStarted.
	RequireEnded bool
	// RequireHandoff asks for a first handoff decision for every
	// CallStarted (every call is handed off in the run).
	RequireHandoff bool
	// Partial says the records are not the whole history (retention, or
	// only some topics read): the cross-topic lost rules are skipped.
	Partial bool
	// Topics name the topics; zero values take Baton's defaults.
	Topics Topics
}

// Topics names the topics the rules look at.
type Topics struct {
	Calls, Handoffs, Transfers, Attempts string
	// DeadLetters are dead-letter topics.
	DeadLetters []string
}

// DefaultTopics are the names the services use by default.
func DefaultTopics() Topics {
	return Topics{
		Calls: "baton.calls", Handoffs: "baton.handoffs", Transfers: "baton.transfers",
		Attempts: "baton.transfer-attempts", DeadLetters: []string{"baton.dlq"},
	}
}

func (t Topics) withDefaults() Topics {
	d := DefaultTopics()
	if t.Calls == "" {
		t.Calls = d.Calls
	}
	if t.Handoffs == "" {
		t.Handoffs = d.Handoffs
	}
	if t.Transfers == "" {
		t.Transfers = d.Transfers
	}
	if t.Attempts == "" {
		t.Attempts = d.Attempts
	}
	if t.DeadLetters == nil {
		t.DeadLetters = d.DeadLetters
	}
	return t
}

// TopicStats counts one topic's records.
type TopicStats struct {
	Topic      string
	Partitions int
	// Records are the records consumers were given.
	Records int
	// ByType counts them by CloudEvents type ("" for undecodable ones).
	ByType map[string]int
	// AbortedWithheld counts records of aborted transactions, correctly
	// not given to consumers.
	AbortedWithheld int
	// Copies counts records that repeat an earlier record's event id:
	// Records-Copies distinct events.
	Copies int
	// Tombstones counts the attempt log's compaction deletes.
	Tombstones int
}

// Report is Check's verdict.
type Report struct {
	// Records is how many records consumers were given, all topics.
	Records int
	Topics  []TopicStats
	// Started and Ended count calls with a CallStarted, with a CallEnded.
	Started, Ended int
	// FirstCommands counts calls with a HandoffCommand of attempt 1.
	FirstCommands int
	// Commands counts distinct handoff command ids; Executed those with an
	// ACCEPTED outcome.
	Commands, Executed int
	// Acknowledged counts Options.Calls and Options.EventIDs.
	AcknowledgedCalls, AcknowledgedEvents int
	Findings                              []Finding
}

// OK reports a run without findings.
func (r Report) OK() bool { return len(r.Findings) == 0 }

// Count returns the number of findings of kind k.
func (r Report) Count(k Kind) int {
	n := 0
	for _, f := range r.Findings {
		if f.Kind == k {
			n++
		}
	}
	return n
}

// CountRule returns the number of findings of a rule.
func (r Report) CountRule(rule string) int {
	n := 0
	for _, f := range r.Findings {
		if f.Rule == rule {
			n++
		}
	}
	return n
}

// Problems lists every finding as one line.
func (r Report) Problems() []string {
	out := make([]string, len(r.Findings))
	for i, f := range r.Findings {
		out[i] = f.String()
	}
	return out
}

// Check applies the rules of the package doc to recs.
func Check(recs []Record, opts Options) Report {
	c := &checker{
		opts:    opts,
		topics:  opts.Topics.withDefaults(),
		stats:   map[string]*TopicStats{},
		parts:   map[string]map[int32]bool{},
		ids:     map[string]string{},
		calls:   map[string]*callState{},
		cmds:    map[string]*commandState{},
		steps:   map[stepKey]string{},
		lastOff: map[tp]int64{},
	}
	for _, r := range recs {
		c.record(r)
	}
	c.finish()
	rep := Report{
		Records:            c.records,
		AcknowledgedCalls:  len(opts.Calls),
		AcknowledgedEvents: len(opts.EventIDs),
		Findings:           c.findings,
	}
	for _, name := range slices.Sorted(maps.Keys(c.stats)) {
		st := c.stats[name]
		st.Partitions = len(c.parts[name])
		rep.Topics = append(rep.Topics, *st)
	}
	for _, cs := range c.calls {
		if cs.started > 0 {
			rep.Started++
		}
		if cs.ended > 0 {
			rep.Ended++
		}
		if cs.firstCommand {
			rep.FirstCommands++
		}
	}
	for _, cmd := range c.cmds {
		if cmd.commands > 0 {
			rep.Commands++
		}
		if cmd.accepted > 0 {
			rep.Executed++
		}
	}
	sort.SliceStable(rep.Findings, func(i, j int) bool {
		return slices.Index(kinds, rep.Findings[i].Kind) < slices.Index(kinds, rep.Findings[j].Kind)
	})
	return rep
}

type checker struct {
	opts     Options
	topics   Topics
	records  int
	stats    map[string]*TopicStats
	parts    map[string]map[int32]bool
	ids      map[string]string // event id -> where first seen
	calls    map[string]*callState
	cmds     map[string]*commandState
	steps    map[stepKey]string // handoff step -> command id
	lastOff  map[tp]int64
	findings []Finding
}

// callState is what the calls and handoffs topics said of one call.
type callState struct {
	// partition per topic, for the split rule.
	partition map[string]int32
	split     map[string]bool
	started   int
	ended     int
	// decided is set by a first handoff decision, firstCommand by a
	// HandoffCommand of attempt 1.
	decided, firstCommand bool
	// attempts is the last attempt per request id.
	attempts map[string]uint32
	// command names the call's first HandoffCommand.
	command string
}

// commandState is what the handoffs, transfers and attempts topics said of
// one command.
type commandState struct {
	commands int
	call     string
	accepted int
	attempts int
	// outcomes seen, in order.
	outcomes []batonv1.OutcomeStatus
	terminal bool
	// where the first outcome or attempt was, for orphan findings.
	firstOutcome, firstAttempt string
}

type stepKey struct {
	call, request string
	attempt       uint32
}

func (c *checker) add(k Kind, rule, format string, args ...any) {
	c.findings = append(c.findings, Finding{Kind: k, Rule: rule, Detail: fmt.Sprintf(format, args...)})
}

func (c *checker) call(id string) *callState {
	cs := c.calls[id]
	if cs == nil {
		cs = &callState{partition: map[string]int32{}, split: map[string]bool{}, attempts: map[string]uint32{}}
		c.calls[id] = cs
	}
	return cs
}

func (c *checker) command(id string) *commandState {
	cmd := c.cmds[id]
	if cmd == nil {
		cmd = &commandState{}
		c.cmds[id] = cmd
	}
	return cmd
}

func (c *checker) record(r Record) {
	k := tp{r.Topic, r.Partition}
	if last, ok := c.lastOff[k]; ok && r.Offset <= last {
		c.add(OutOfOrder, "offsets not increasing", "%s follows offset %d", r.where(), last)
	}
	c.lastOff[k] = r.Offset
	st := c.stats[r.Topic]
	if st == nil {
		st = &TopicStats{Topic: r.Topic, ByType: map[string]int{}}
		c.stats[r.Topic] = st
	}
	if c.parts[r.Topic] == nil {
		c.parts[r.Topic] = map[int32]bool{}
	}
	c.parts[r.Topic][r.Partition] = true
	switch {
	case r.Withheld && r.Aborted:
		st.AbortedWithheld++
		return
	case r.Withheld:
		c.add(Lost, "committed record withheld from read_committed", "%s (key %q)", r.where(), r.Key)
		return
	case r.Aborted:
		c.add(AbortedRead, "record of an aborted transaction read", "%s (key %q, producer %d)", r.where(), r.Key, r.ProducerID)
	case r.Tombstone && r.Topic == c.topics.Attempts:
		// A compaction delete on the attempt log (a bridge's lease
		// ended): no event, and nothing a call's rules apply to.
		st.Tombstones++
		return
	}
	c.records++
	st.Records++
	if slices.Contains(c.topics.DeadLetters, r.Topic) {
		st.ByType[r.Event.Type]++
		c.add(DeadLetter, "record dead-lettered", "%s (key %q)", r.where(), r.Key)
		return
	}
	if r.Err != nil {
		st.ByType[""]++
		c.add(Undecodable, "record is not a Baton event", "%s: %v", r.where(), r.Err)
		return
	}
	ev := r.Event
	st.ByType[ev.Type]++
	if first, dup := c.ids[ev.ID]; dup {
		// The same event again (a producer's retry written twice):
		// consumers deduplicate by id, so it is no second fact and the
		// rules below do not count it again.
		c.add(Duplicate, RuleDuplicateEventID, "%s at %s and %s", ev.ID, first, r.where())
		st.Copies++
		return
	}
	c.ids[ev.ID] = r.where()
	if ev.Type == events.TypeDestinationHealth {
		// Transfer's health of a destination, copied to every partition
		// of the calls topic (decision 0016): no call's fact.
		return
	}
	switch r.Topic {
	case c.topics.Attempts:
		c.attempt(r)
		return
	case c.topics.Calls, c.topics.Handoffs, c.topics.Transfers:
		cs := c.call(ev.Subject)
		if p, ok := cs.partition[r.Topic]; !ok {
			cs.partition[r.Topic] = r.Partition
		} else if p != r.Partition && !cs.split[r.Topic] {
			cs.split[r.Topic] = true
			c.add(OutOfOrder, "call split across partitions", "call %s on %s partitions %d and %d", ev.Subject, r.Topic, p, r.Partition)
		}
	}
	switch r.Topic {
	case c.topics.Calls:
		c.callFact(r)
	case c.topics.Handoffs:
		c.decision(r)
	case c.topics.Transfers:
		c.outcome(r)
	}
}

// callFact applies the lifecycle rules of the calls topic.
func (c *checker) callFact(r Record) {
	ev := r.Event
	cs := c.call(ev.Subject)
	switch ev.Data.(type) {
	case *batonv1.CallStarted:
		if cs.ended > 0 {
			c.add(OutOfOrder, "CallStarted after CallEnded", "call %s at %s", ev.Subject, r.where())
		}
		if cs.started > 0 {
			c.add(Duplicate, "duplicate CallStarted", "call %s again at %s", ev.Subject, r.where())
		}
		cs.started++
	case *batonv1.CallEnded:
		if cs.started == 0 {
			c.add(OutOfOrder, "CallEnded before CallStarted", "call %s at %s", ev.Subject, r.where())
		}
		if cs.ended > 0 {
			c.add(Duplicate, "duplicate CallEnded", "call %s again at %s", ev.Subject, r.where())
		}
		cs.ended++
	case *batonv1.NotifyReceived, *batonv1.CallUpdated, *batonv1.DtmfReceived,
		*batonv1.AgentConnected, *batonv1.AgentMarkPlayed, *batonv1.AgentDisconnected, *batonv1.InboundReferReceived:
		name := typeName(ev.Type)
		if cs.started == 0 {
			c.add(OutOfOrder, name+" before CallStarted", "call %s at %s", ev.Subject, r.where())
		}
		if cs.ended > 0 {
			c.add(OutOfOrder, name+" after CallEnded", "call %s at %s", ev.Subject, r.where())
		}
	}
}

// decision applies the rules of the handoffs topic.
func (c *checker) decision(r Record) {
	ev := r.Event
	cs := c.call(ev.Subject)
	switch m := ev.Data.(type) {
	case *batonv1.HandoffRefused:
		cs.decided = true
	case *batonv1.HandoffCommand:
		id := m.GetCommandId()
		cmd := c.command(id)
		cmd.call = ev.Subject
		if cmd.commands > 0 {
			c.add(Duplicate, "duplicate command id", "command %s of call %s again at %s", id, ev.Subject, r.where())
		}
		cmd.commands++
		if m.GetAttempt() == 1 {
			cs.decided, cs.firstCommand = true, true
		}
		step := stepKey{ev.Subject, m.GetRequestId(), m.GetAttempt()}
		if other, ok := c.steps[step]; ok && other != id {
			c.add(Duplicate, "handoff step decided twice", "call %s request %q attempt %d: commands %s and %s (%s)",
				step.call, step.request, step.attempt, other, id, r.where())
		} else if !ok {
			c.steps[step] = id
		}
		last := cs.attempts[m.GetRequestId()]
		if m.GetAttempt() != last+1 && m.GetAttempt() != last {
			c.add(OutOfOrder, "handoff attempts out of order", "call %s request %q: attempt %d after attempt %d at %s",
				ev.Subject, m.GetRequestId(), m.GetAttempt(), last, r.where())
		}
		cs.attempts[m.GetRequestId()] = max(last, m.GetAttempt())
		if cs.command == "" {
			cs.command = fmt.Sprintf("command %s at %s", id, r.where())
		}
	}
}

// outcome applies the rules of the transfers topic.
func (c *checker) outcome(r Record) {
	m, ok := r.Event.Data.(*batonv1.TransferOutcome)
	if !ok {
		return
	}
	id := m.GetCommandId()
	cmd := c.command(id)
	if cmd.firstOutcome == "" {
		cmd.firstOutcome = r.where()
	}
	st := m.GetStatus()
	if cmd.terminal {
		c.add(OutOfOrder, "outcome after the command's last", "command %s: %s after %s at %s",
			id, st, cmd.outcomes[len(cmd.outcomes)-1], r.where())
	}
	if st == batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED {
		if cmd.accepted > 0 {
			c.add(Duplicate, "command executed twice", "command %s accepted again at %s", id, r.where())
		} else if len(cmd.outcomes) > 0 {
			c.add(OutOfOrder, "ACCEPTED after another outcome", "command %s: ACCEPTED after %s at %s",
				id, cmd.outcomes[len(cmd.outcomes)-1], r.where())
		}
		cmd.accepted++
	}
	if st == batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED || st == batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED {
		cmd.terminal = true
	}
	cmd.outcomes = append(cmd.outcomes, st)
}

// attempt applies the rules of the attempt log (keyed by command id).
func (c *checker) attempt(r Record) {
	m, ok := r.Event.Data.(*batonv1.TransferAttempt)
	if !ok {
		return
	}
	cmd := c.command(m.GetCommandId())
	if cmd.attempts > 0 {
		c.add(Duplicate, "command attempted twice", "command %s has another attempt record at %s", m.GetCommandId(), r.where())
	}
	if cmd.firstAttempt == "" {
		cmd.firstAttempt = r.where()
	}
	cmd.attempts++
}

// finish applies the rules that need every record.
func (c *checker) finish() {
	for _, id := range c.opts.Calls {
		if cs := c.calls[id]; cs == nil || cs.started == 0 {
			c.add(Lost, "acknowledged call has no CallStarted", "call %s", id)
		}
	}
	for _, id := range c.opts.EventIDs {
		if _, ok := c.ids[id]; !ok {
			c.add(Lost, "acknowledged event missing", "event %s", id)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(c.calls)) {
		cs := c.calls[id]
		if cs.started == 0 {
			continue
		}
		if c.opts.RequireEnded && cs.ended == 0 {
			c.add(Lost, "call never ended", "call %s has a CallStarted and no CallEnded", id)
		}
		if c.opts.RequireHandoff && !cs.decided {
			c.add(Lost, "call never handed off", "call %s has no first handoff decision", id)
		}
	}
	if c.opts.Partial {
		return
	}
	for _, id := range slices.Sorted(maps.Keys(c.calls)) {
		if cs := c.calls[id]; cs.started == 0 && cs.command != "" {
			c.add(Lost, "command of a call with no CallStarted", "call %s: %s", id, cs.command)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(c.cmds)) {
		cmd := c.cmds[id]
		if cmd.commands > 0 {
			continue
		}
		if cmd.firstOutcome != "" {
			c.add(Lost, "outcome of a command not on the handoffs topic", "command %s at %s", id, cmd.firstOutcome)
		}
		if cmd.firstAttempt != "" {
			c.add(Lost, "attempt of a command not on the handoffs topic", "command %s at %s", id, cmd.firstAttempt)
		}
	}
}

// typeName turns baton.call.notify.v1 into NotifyReceived for messages.
func typeName(typ string) string {
	switch typ {
	case events.TypeNotifyReceived:
		return "NotifyReceived"
	case events.TypeCallUpdated:
		return "CallUpdated"
	case events.TypeDtmfReceived:
		return "DtmfReceived"
	case events.TypeInboundRefer:
		return "InboundReferReceived"
	case events.TypeAgentConnected:
		return "AgentConnected"
	case events.TypeAgentMarkPlayed:
		return "AgentMarkPlayed"
	case events.TypeAgentDisconnected:
		return "AgentDisconnected"
	}
	return typ
}
