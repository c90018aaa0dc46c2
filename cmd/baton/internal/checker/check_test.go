package checker

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// history builds records by hand: each append takes the next offset of
// its partition.
type history struct {
	t    *testing.T
	recs []Record
	next map[tp]int64
}

func newHistory(t *testing.T) *history { return &history{t: t, next: map[tp]int64{}} }

func (h *history) put(topic string, partition int32, key string, msg proto.Message) *Record {
	h.t.Helper()
	ev, err := events.New("baton/test", key, msg, time.Unix(1700000000, 0))
	require.NoError(h.t, err)
	k := tp{topic, partition}
	h.recs = append(h.recs, Record{Topic: topic, Partition: partition, Offset: h.next[k], Key: key, Event: ev})
	h.next[k]++
	return &h.recs[len(h.recs)-1]
}

func (h *history) started(call string) *Record {
	return h.put("baton.calls", 0, call, &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: call}})
}

func (h *history) ended(call string) *Record {
	return h.put("baton.calls", 0, call, &batonv1.CallEnded{CallId: call})
}

func (h *history) notify(call string) *Record {
	return h.put("baton.calls", 0, call, &batonv1.NotifyReceived{CallId: call})
}

func (h *history) command(call, id string, attempt uint32) *Record {
	return h.put("baton.handoffs", 0, call, &batonv1.HandoffCommand{CommandId: id, CallId: call, Attempt: attempt})
}

func (h *history) outcome(call, id string, st batonv1.OutcomeStatus) *Record {
	return h.put("baton.transfers", 0, call, &batonv1.TransferOutcome{CommandId: id, CallId: call, Status: st})
}

func (h *history) attempt(call, id string) *Record {
	return h.put("baton.transfer-attempts", 0, id, &batonv1.TransferAttempt{CommandId: id, CallId: call})
}

const (
	accepted  = batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED
	succeeded = batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED
	failed    = batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED
	ended     = batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED
	ringing   = batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING
)

// goodCall is one complete REFER call as the stack writes it.
func (h *history) goodCall(call string) {
	h.started(call)
	h.attempt(call, "cmd-"+call)
	h.command(call, "cmd-"+call, 1)
	h.outcome(call, "cmd-"+call, accepted)
	h.notify(call)
	h.outcome(call, "cmd-"+call, succeeded)
	h.ended(call)
}

var strict = Options{RequireEnded: true, RequireHandoff: true}

func rules(r Report) []string {
	var out []string
	for _, f := range r.Findings {
		out = append(out, string(f.Kind)+": "+f.Rule)
	}
	return out
}

func TestCleanHistoryIsOK(t *testing.T) {
	h := newHistory(t)
	h.goodCall("a")
	h.goodCall("b")
	opts := strict
	opts.Calls = []string{"a", "b"}
	opts.EventIDs = []string{h.recs[0].Event.ID}
	rep := Check(h.recs, opts)
	require.True(t, rep.OK(), rep.Problems())
	require.Equal(t, 2, rep.Started)
	require.Equal(t, 2, rep.Ended)
	require.Equal(t, 2, rep.Commands)
	require.Equal(t, 2, rep.FirstCommands)
	require.Equal(t, 2, rep.Executed)
	require.Equal(t, 14, rep.Records)
	var out strings.Builder
	require.NoError(t, rep.Write(&out))
	require.Contains(t, out.String(), "baton.calls")
	require.Contains(t, out.String(), "lost:         0")
	require.True(t, strings.HasSuffix(out.String(), "OK\n"), out.String())
}

// TestDestinationHealthIsNoCallFact: transfer's DestinationHealth, one
// copy per partition of the calls topic under one key, is neither a call
// split across partitions nor a fact before CallStarted.
func TestDestinationHealthIsNoCallFact(t *testing.T) {
	h := newHistory(t)
	h.goodCall("a")
	for p := range int32(3) {
		h.put("baton.calls", p, "destination-health/support", &batonv1.DestinationHealth{Destination: "support", Partition: p, Partitions: 3})
	}
	rep := Check(h.recs, strict)
	require.True(t, rep.OK(), rep.Problems())
	require.Equal(t, 1, rep.Started)
}

// TestAttemptLogTombstonesAreNoFinding: transfer ends a bridge's lease
// on the attempt log with a compaction delete (no value, so no event);
// the same record on a call topic is still undecodable.
func TestAttemptLogTombstonesAreNoFinding(t *testing.T) {
	h := newHistory(t)
	h.goodCall("a")
	tombstone := func(topic string) {
		k := tp{topic, 0}
		h.recs = append(h.recs, Record{Topic: topic, Offset: h.next[k], Key: "bridge/cmd-a", Tombstone: true,
			Err: errors.New("decode: missing ce_id")})
		h.next[k]++
	}
	tombstone("baton.transfer-attempts")
	rep := Check(h.recs, strict)
	require.True(t, rep.OK(), rep.Problems())
	tombstone("baton.transfers")
	rep = Check(h.recs, strict)
	require.Equal(t, 1, rep.Count(Undecodable), rep.Problems())
}

func TestRules(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		build func(h *history)
		want  []string
	}{
		{
			name:  "acknowledged call without CallStarted",
			opts:  Options{Calls: []string{"a", "missing"}},
			build: func(h *history) { h.goodCall("a") },
			want:  []string{"lost: acknowledged call has no CallStarted"},
		},
		{
			name:  "acknowledged event missing",
			opts:  Options{EventIDs: []string{"0190-nope"}},
			build: func(h *history) { h.goodCall("a") },
			want:  []string{"lost: acknowledged event missing"},
		},
		{
			name: "call never ended",
			opts: strict,
			build: func(h *history) {
				h.goodCall("a")
				h.started("b")
				h.command("b", "cmd-b", 1)
			},
			want: []string{"lost: call never ended"},
		},
		{
			name: "call never ended is not judged without RequireEnded",
			build: func(h *history) {
				h.started("b")
			},
		},
		{
			name: "call never handed off",
			opts: strict,
			build: func(h *history) {
				h.started("b")
				h.ended("b")
			},
			want: []string{"lost: call never handed off"},
		},
		{
			name: "a refusal is a handoff decision",
			opts: strict,
			build: func(h *history) {
				h.started("b")
				h.put("baton.handoffs", 0, "b", &batonv1.HandoffRefused{CallId: "b", ReasonCode: "x"})
				h.ended("b")
			},
		},
		{
			name: "committed record withheld",
			build: func(h *history) {
				h.goodCall("a")
				h.recs[len(h.recs)-1].Withheld = true
			},
			want: []string{"lost: committed record withheld from read_committed"},
		},
		{
			name: "command of a call with no CallStarted",
			build: func(h *history) {
				h.command("ghost", "cmd-ghost", 1)
			},
			want: []string{"lost: command of a call with no CallStarted"},
		},
		{
			name: "outcome and attempt of an unknown command",
			build: func(h *history) {
				h.goodCall("a")
				h.attempt("a", "cmd-other")
				h.outcome("a", "cmd-other", accepted)
			},
			want: []string{
				"lost: outcome of a command not on the handoffs topic",
				"lost: attempt of a command not on the handoffs topic",
			},
		},
		{
			name: "partial histories skip the cross-topic rules",
			opts: Options{Partial: true},
			build: func(h *history) {
				h.command("ghost", "cmd-ghost", 1)
				h.outcome("ghost", "cmd-other", accepted)
			},
		},
		{
			name: "duplicate event id",
			build: func(h *history) {
				h.goodCall("a")
				dup := h.recs[0]
				dup.Offset = h.next[tp{"baton.calls", 0}]
				h.recs = append(h.recs, dup)
			},
			want: []string{"duplicate: duplicate event id"},
		},
		{
			name: "duplicate CallStarted",
			build: func(h *history) {
				h.started("a")
				h.started("a")
				h.ended("a")
			},
			want: []string{"duplicate: duplicate CallStarted"},
		},
		{
			name: "duplicate CallEnded",
			build: func(h *history) {
				h.started("a")
				h.ended("a")
				h.ended("a")
			},
			want: []string{"duplicate: duplicate CallEnded"},
		},
		{
			name: "duplicate command id",
			build: func(h *history) {
				h.started("a")
				h.command("a", "cmd-a", 1)
				h.command("a", "cmd-a", 1)
				h.ended("a")
			},
			want: []string{"duplicate: duplicate command id"},
		},
		{
			name: "handoff step decided twice",
			build: func(h *history) {
				h.started("a")
				h.command("a", "cmd-1", 1)
				h.command("a", "cmd-2", 1)
				h.ended("a")
			},
			want: []string{"duplicate: handoff step decided twice"},
		},
		{
			name: "a new request starts its own attempts",
			build: func(h *history) {
				h.started("a")
				h.command("a", "cmd-1", 1)
				h.put("baton.handoffs", 0, "a", &batonv1.HandoffCommand{CommandId: "cmd-2", CallId: "a", Attempt: 1, RequestId: "r2"})
				h.put("baton.handoffs", 0, "a", &batonv1.HandoffCommand{CommandId: "cmd-3", CallId: "a", Attempt: 2, RequestId: "r2"})
				h.ended("a")
			},
		},
		{
			name: "command executed twice",
			build: func(h *history) {
				h.goodCall("a")
				h.outcome("a", "cmd-a", accepted)
			},
			want: []string{"duplicate: command executed twice"},
		},
		{
			name: "an outcome written twice is one execution",
			build: func(h *history) {
				h.goodCall("a")
				dup := h.recs[3] // the ACCEPTED outcome
				dup.Offset = h.next[tp{"baton.transfers", 0}]
				h.recs = append(h.recs, dup)
			},
			want: []string{"duplicate: duplicate event id"},
		},
		{
			name: "command attempted twice",
			build: func(h *history) {
				h.goodCall("a")
				h.attempt("a", "cmd-a")
			},
			want: []string{"duplicate: command attempted twice"},
		},
		{
			name: "CallEnded before CallStarted",
			build: func(h *history) {
				h.ended("a")
				h.started("a")
			},
			want: []string{"out of order: CallEnded before CallStarted", "out of order: CallStarted after CallEnded"},
		},
		{
			name: "NOTIFY outside the call",
			build: func(h *history) {
				h.notify("a")
				h.started("a")
				h.ended("a")
				h.put("baton.calls", 0, "a", &batonv1.DtmfReceived{CallId: "a", Digit: "1"})
			},
			want: []string{"out of order: NotifyReceived before CallStarted", "out of order: DtmfReceived after CallEnded"},
		},
		{
			name: "inbound REFER outside the call",
			build: func(h *history) {
				h.put("baton.calls", 0, "a", &batonv1.InboundReferReceived{CallId: "a", ReferId: "r1"})
				h.started("a")
				h.ended("a")
				h.put("baton.calls", 0, "a", &batonv1.InboundReferReceived{CallId: "a", ReferId: "r2"})
			},
			want: []string{"out of order: InboundReferReceived before CallStarted", "out of order: InboundReferReceived after CallEnded"},
		},
		{
			name: "agent facts after the end are fine",
			build: func(h *history) {
				h.started("a")
				h.ended("a")
				h.put("baton.calls", 0, "a", &batonv1.AgentMetric{CallId: "a", Name: "latency"})
			},
		},
		{
			name: "attempts going backwards",
			build: func(h *history) {
				h.started("a")
				h.command("a", "cmd-2", 2)
				h.command("a", "cmd-1", 1)
			},
			want: []string{"out of order: handoff attempts out of order", "out of order: handoff attempts out of order"},
		},
		{
			name: "attempt skipped",
			build: func(h *history) {
				h.started("a")
				h.command("a", "cmd-1", 1)
				h.command("a", "cmd-3", 3)
			},
			want: []string{"out of order: handoff attempts out of order"},
		},
		{
			name: "ACCEPTED after another outcome",
			build: func(h *history) {
				h.started("a")
				h.command("a", "cmd-a", 1)
				h.outcome("a", "cmd-a", ringing)
				h.outcome("a", "cmd-a", accepted)
			},
			want: []string{"out of order: ACCEPTED after another outcome"},
		},
		{
			name: "outcome after FAILED",
			build: func(h *history) {
				h.started("a")
				h.command("a", "cmd-a", 1)
				h.outcome("a", "cmd-a", accepted)
				h.outcome("a", "cmd-a", failed)
				h.outcome("a", "cmd-a", succeeded)
			},
			want: []string{"out of order: outcome after the command's last"},
		},
		{
			name: "ENDED is last",
			build: func(h *history) {
				h.started("a")
				h.command("a", "cmd-a", 1)
				h.outcome("a", "cmd-a", ended)
				h.outcome("a", "cmd-a", ringing)
			},
			want: []string{"out of order: outcome after the command's last"},
		},
		{
			name: "call split across partitions",
			build: func(h *history) {
				h.started("a")
				h.put("baton.calls", 1, "a", &batonv1.CallEnded{CallId: "a"})
			},
			want: []string{"out of order: call split across partitions"},
		},
		{
			name: "offsets not increasing",
			build: func(h *history) {
				h.started("a")
				h.ended("a")
				h.recs[1].Offset = 0
			},
			want: []string{"out of order: offsets not increasing"},
		},
		{
			name: "aborted record read",
			build: func(h *history) {
				h.goodCall("a")
				h.recs[2].Aborted = true
			},
			want: []string{"aborted read: record of an aborted transaction read"},
		},
		{
			name: "aborted record withheld is fine",
			build: func(h *history) {
				h.goodCall("a")
				r := h.command("a", "cmd-zombie", 1)
				r.Aborted, r.Withheld = true, true
			},
		},
		{
			name: "undecodable record",
			build: func(h *history) {
				h.goodCall("a")
				r := h.put("baton.calls", 0, "a", &batonv1.AgentMetric{})
				r.Event, r.Err = events.Event{}, errors.New("missing ce_id")
			},
			want: []string{"undecodable: record is not a Baton event"},
		},
		{
			name: "dead letter",
			build: func(h *history) {
				h.goodCall("a")
				h.put("baton.dlq", 0, "a", &batonv1.CallStarted{})
			},
			want: []string{"dead letter: record dead-lettered"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHistory(t)
			tt.build(h)
			rep := Check(h.recs, tt.opts)
			require.ElementsMatch(t, tt.want, rules(rep), "%s", strings.Join(rep.Problems(), "\n"))
			require.Equal(t, len(tt.want) == 0, rep.OK())
			var out strings.Builder
			require.NoError(t, rep.Write(&out))
			if len(tt.want) > 0 {
				require.Contains(t, out.String(), "FAILED")
			}
		})
	}
}

func TestWriteListsAtMostMaxListed(t *testing.T) {
	h := newHistory(t)
	var calls []string
	for i := range maxListed + 5 {
		calls = append(calls, "missing-"+string(rune('a'+i)))
	}
	rep := Check(h.recs, Options{Calls: calls})
	require.Equal(t, maxListed+5, rep.Count(Lost))
	var out strings.Builder
	require.NoError(t, rep.Write(&out))
	require.Contains(t, out.String(), "... 5 more lost findings")
	require.Equal(t, maxListed, strings.Count(out.String(), "acknowledged call has no CallStarted"))
}

// TestWriteEscapesControlCharacters: call ids and record types in the
// report are caller-chosen text; it prints them escaped (issue 14,
// finding 9).
func TestWriteEscapesControlCharacters(t *testing.T) {
	h := newHistory(t)
	h.started("call-\x1b[2J\x1b]0;owned\a")
	rep := Check(h.recs, Options{Calls: []string{"gone-\x1b[2J"}, RequireEnded: true})
	rep.Topics = append(rep.Topics, TopicStats{Topic: "baton.calls\a", ByType: map[string]int{"type\x1b[2J": 1}})
	var out strings.Builder
	require.NoError(t, rep.Write(&out))
	require.NotContains(t, out.String(), "\x1b")
	require.NotContains(t, out.String(), "\a")
	require.Contains(t, out.String(), `call never ended: call call-\x1b[2J\x1b]0;owned\a`)
	require.Contains(t, out.String(), `acknowledged call has no CallStarted: call gone-\x1b[2J`)
	require.Contains(t, out.String(), `baton.calls\a`)
	require.Contains(t, out.String(), `type\x1b[2J 1`)
}

func TestReadCallIDs(t *testing.T) {
	ids, err := ReadCallIDs(strings.NewReader("# placed by sipp\n 1-123@127.0.0.1 \n\n2-123@127.0.0.1\n"))
	require.NoError(t, err)
	require.Equal(t, []string{"1-123@127.0.0.1", "2-123@127.0.0.1"}, ids)
}
