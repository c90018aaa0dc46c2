package replay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/cmd/baton/internal/termsafe"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// RouterBinary finds the router to re-decide with: explicit when set, else
// the router next to the running baton binary, else router on PATH.
func RouterBinary(explicit string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("router binary: %w", err)
		}
		return explicit, nil
	}
	if self, err := os.Executable(); err == nil {
		next := filepath.Join(filepath.Dir(self), "router")
		if fi, err := os.Stat(next); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return next, nil
		}
	}
	path, err := exec.LookPath("router")
	if err != nil {
		return "", errors.New("no router binary next to baton or on PATH; name it with --router-bin (make build puts it in bin/)")
	}
	return path, nil
}

// Redecide runs `router replay --config rules` over the call's records and
// returns the decisions (commands and refusals) the router makes with that
// configuration. Only the router's inputs count; it recomputes its own
// recorded decisions. Records go in timeline order (see Steps).
func Redecide(ctx context.Context, routerBin, rules string, recs []Record) ([]Record, error) {
	steps := Steps(recs)
	ordered := make([]Record, len(steps))
	for i, s := range steps {
		ordered[i] = s.Record
	}
	var in, out, stderr bytes.Buffer
	if err := WriteNDJSON(&in, ordered); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, routerBin, "replay", "--config", rules)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = &in, &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s replay --config %s: %w: %s", routerBin, rules, err, strings.TrimSpace(stderr.String()))
	}
	decided, err := ReadNDJSON(&out, "")
	if err != nil {
		return nil, fmt.Errorf("read %s replay output: %w", routerBin, err)
	}
	return decided, nil
}

// Verdict says how a re-decided decision compares to the recorded one.
type Verdict string

// Verdicts.
const (
	// Same: the re-decided decision is identical to the recorded one.
	Same Verdict = "same"
	// Changed: both decided, differently.
	Changed Verdict = "changed"
	// OnlyRecorded: the new configuration decides nothing for this trigger.
	OnlyRecorded Verdict = "only recorded"
	// OnlyRedecided: the new configuration decides where the recording did not.
	OnlyRedecided Verdict = "only re-decided"
	// NotRecorded: an earlier attempt of the handoff went to another
	// target than recorded, so the recorded outcome this decision follows
	// was not that target's answer; the recording cannot tell.
	NotRecorded Verdict = "not recorded"
)

// Row is one decision of the call, recorded and re-decided, paired by
// their id (derived from the trigger, so one trigger gives one id).
type Row struct {
	ID string
	// Recorded and Redecided are the decisions; either may be missing.
	Recorded, Redecided *events.Event
	// Trigger is the recorded event that caused the decision, when found.
	Trigger *events.Event
	// Handoff numbers the handoffs of the call from 1; a decision
	// triggered by a transfer outcome continues the handoff before it.
	Handoff int
	Verdict Verdict
	// Changes lists the fields that differ ("destination: a -> b").
	Changes []string
	// Outcome is the recorded final outcome of the recorded command.
	Outcome *batonv1.TransferOutcome
	// DivergedAt says, for NotRecorded rows, where the chain left the
	// recording ("attempt 1: sales -> desk").
	DivergedAt string
}

// Comparison is the difference between a call's recorded decisions and
// the re-decided ones.
type Comparison struct {
	CallID    string
	Rows      []Row
	Recorded  int
	Redecided int
}

// Diff pairs the decisions recorded in recs with the re-decided ones and
// compares them. Recorded outcomes were replayed as they happened, so once
// a handoff's attempt goes to another target than recorded, its later
// attempts are marked NotRecorded.
func Diff(callID string, recs, redecided []Record) Comparison {
	cmp := Comparison{CallID: callID}
	steps := Steps(recs)
	triggers := map[string]int{} // decision id → index of the step that caused it
	outcomes := map[string]*batonv1.TransferOutcome{}
	rows := map[string]*Row{}
	var order []string
	add := func(ev events.Event, recorded bool) {
		r := rows[ev.ID]
		if r == nil {
			r = &Row{ID: ev.ID}
			rows[ev.ID] = r
			order = append(order, ev.ID)
		}
		if recorded {
			r.Recorded = &ev
		} else {
			r.Redecided = &ev
		}
	}
	for i, s := range steps {
		if s.Err != nil {
			continue
		}
		if isDecision(s.Event) {
			add(s.Event, true)
			cmp.Recorded++
			continue
		}
		if m, ok := s.Event.Data.(*batonv1.TransferOutcome); ok && final(m.GetStatus()) {
			outcomes[m.GetCommandId()] = m
		}
		triggers[commandID(callID, s.Event.ID)] = i
	}
	for _, s := range Steps(redecided) {
		if s.Err == nil && isDecision(s.Event) {
			add(s.Event, false)
			cmp.Redecided++
		}
	}

	// Order by the trigger's place in the timeline.
	place := func(id string) (int, time.Time) {
		r := rows[id]
		ev := r.Recorded
		if ev == nil {
			ev = r.Redecided
		}
		if i, ok := triggers[id]; ok {
			return i, ev.Time
		}
		return len(steps), ev.Time
	}
	sort.SliceStable(order, func(a, b int) bool {
		ia, ta := place(order[a])
		ib, tb := place(order[b])
		if ia != ib {
			return ia < ib
		}
		return ta.Before(tb)
	})

	handoff := 0
	diverged := ""
	for _, id := range order {
		r := rows[id]
		if i, ok := triggers[id]; ok {
			ev := steps[i].Event
			r.Trigger = &ev
		}
		if r.Trigger == nil || r.Trigger.Type != events.TypeTransferOutcome || handoff == 0 {
			handoff++
			diverged = ""
		}
		r.Handoff = handoff
		if r.Recorded != nil {
			if c, ok := r.Recorded.Data.(*batonv1.HandoffCommand); ok {
				r.Outcome = outcomes[c.GetCommandId()]
			}
		}
		r.Verdict, r.Changes = compare(r.Recorded, r.Redecided)
		if diverged != "" && r.Verdict != Same {
			r.Verdict, r.DivergedAt = NotRecorded, diverged
		}
		if diverged == "" && r.Verdict != Same && targetChanged(r.Recorded, r.Redecided) {
			diverged = fmt.Sprintf("%s: %s -> %s", attemptName(r), targetName(r.Recorded), targetName(r.Redecided))
		}
		cmp.Rows = append(cmp.Rows, *r)
	}
	return cmp
}

// commandID mirrors the router's handoff.CommandID: the id of the
// decision a trigger (an event id) caused for a call.
func commandID(callID, triggerID string) string {
	sum := sha256.Sum256([]byte(callID + "/" + triggerID))
	return hex.EncodeToString(sum[:])[:32]
}

func isDecision(ev events.Event) bool {
	return ev.Type == events.TypeHandoffCommand || ev.Type == events.TypeHandoffRefused
}

func final(s batonv1.OutcomeStatus) bool {
	return s == batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED || s == batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED
}

// compare lists the differences between two decisions of one trigger.
func compare(rec, red *events.Event) (Verdict, []string) {
	switch {
	case rec == nil:
		return OnlyRedecided, nil
	case red == nil:
		return OnlyRecorded, nil
	case proto.Equal(rec.Data, red.Data):
		return Same, nil
	}
	var ch []string
	field := func(name, a, b string) {
		if a != b {
			ch = append(ch, fmt.Sprintf("%s: %s -> %s", name, orNone(a), orNone(b)))
		}
	}
	rc, recCmd := rec.Data.(*batonv1.HandoffCommand)
	dc, redCmd := red.Data.(*batonv1.HandoffCommand)
	rr, _ := rec.Data.(*batonv1.HandoffRefused)
	dr, _ := red.Data.(*batonv1.HandoffRefused)
	switch {
	case recCmd && redCmd:
		field("destination", rc.GetDestination(), dc.GetDestination())
		field("method", methodName(rc.GetMethod()), methodName(dc.GetMethod()))
		field("route", rc.GetRoute(), dc.GetRoute())
		ch = append(ch, headerChanges(rc.GetHeaders(), dc.GetHeaders())...)
		field("attempt", fmt.Sprint(rc.GetAttempt()), fmt.Sprint(dc.GetAttempt()))
		field("reason", rc.GetReason(), dc.GetReason())
		field("encryption", rc.GetEncryption(), dc.GetEncryption())
		field("answer timeout", rc.GetAnswerTimeout().AsDuration().String(), dc.GetAnswerTimeout().AsDuration().String())
		field("whisper", rc.GetWhisper(), dc.GetWhisper())
	case !recCmd && !redCmd:
		field("destination", rr.GetDestination(), dr.GetDestination())
		field("route", rr.GetRoute(), dr.GetRoute())
		field("refusal", rr.GetReasonCode(), dr.GetReasonCode())
		field("detail", rr.GetDetail(), dr.GetDetail())
	case recCmd:
		ch = append(ch, fmt.Sprintf("decision: %s -> refused (%s: %s)", commandLine(rc), dr.GetReasonCode(), dr.GetDetail()))
	default:
		ch = append(ch, fmt.Sprintf("decision: refused (%s: %s) -> %s", rr.GetReasonCode(), rr.GetDetail(), commandLine(dc)))
	}
	if len(ch) == 0 {
		ch = append(ch, "other fields differ")
	}
	return Changed, ch
}

// headerChanges lists added (+), removed (-) and changed (~) headers.
func headerChanges(rec, red []*batonv1.SipHeader) []string {
	index := func(hs []*batonv1.SipHeader) (map[string]string, []string) {
		m := map[string]string{}
		var names []string
		for _, h := range hs {
			k := h.GetName()
			if _, dup := m[k]; dup {
				m[k] += ", " + h.GetValue()
				continue
			}
			m[k] = h.GetValue()
			names = append(names, k)
		}
		return m, names
	}
	a, an := index(rec)
	b, bn := index(red)
	names := slices.Concat(an, bn)
	sort.Strings(names)
	var out []string
	for i, n := range names {
		if i > 0 && names[i-1] == n {
			continue
		}
		av, inA := a[n]
		bv, inB := b[n]
		switch {
		case !inA:
			out = append(out, fmt.Sprintf("header + %s: %s", n, bv))
		case !inB:
			out = append(out, fmt.Sprintf("header - %s: %s", n, av))
		case av != bv:
			out = append(out, fmt.Sprintf("header ~ %s: %s -> %s", n, av, bv))
		}
	}
	return out
}

// targetChanged reports whether a decision now goes somewhere else (or
// nowhere), so the outcome recorded for it says nothing of the new one.
func targetChanged(rec, red *events.Event) bool {
	return targetName(rec) != targetName(red)
}

// targetName is where a decision sends the call: method, destination and
// route; "refused" or "nothing" otherwise.
func targetName(ev *events.Event) string {
	if ev == nil {
		return "nothing"
	}
	switch m := ev.Data.(type) {
	case *batonv1.HandoffCommand:
		if m.GetDestination() == "" && m.GetRoute() == "" {
			return methodName(m.GetMethod()) + " (end the call)"
		}
		return fmt.Sprintf("%s %s (%s)", methodName(m.GetMethod()), orNone(m.GetDestination()), orNone(m.GetRoute()))
	case *batonv1.HandoffRefused:
		return "refused"
	}
	return ev.Type
}

func attemptName(r *Row) string {
	for _, ev := range []*events.Event{r.Recorded, r.Redecided} {
		if ev == nil {
			continue
		}
		if c, ok := ev.Data.(*batonv1.HandoffCommand); ok {
			return fmt.Sprintf("attempt %d", c.GetAttempt())
		}
	}
	return "refusal"
}

func commandLine(c *batonv1.HandoffCommand) string {
	var hs []string
	for _, h := range c.GetHeaders() {
		hs = append(hs, h.GetName()+"="+h.GetValue())
	}
	if c.GetDestination() == "" && c.GetRoute() == "" {
		return fmt.Sprintf("%s (end the call, reason %s) attempt %d", methodName(c.GetMethod()), orNone(c.GetReason()), c.GetAttempt())
	}
	return fmt.Sprintf("%s to %s (%s) attempt %d, headers [%s]", methodName(c.GetMethod()), orNone(c.GetDestination()),
		orNone(c.GetRoute()), c.GetAttempt(), strings.Join(hs, " "))
}

func decisionLine(ev *events.Event) string {
	switch m := ev.Data.(type) {
	case *batonv1.HandoffCommand:
		return commandLine(m)
	case *batonv1.HandoffRefused:
		return fmt.Sprintf("refused %s (%s): %s", orNone(m.GetDestination()), m.GetReasonCode(), m.GetDetail())
	}
	return ev.Type
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// WriteDiff prints the comparison: per handoff and attempt, "same" or the
// fields that changed, the recorded outcome, and which attempts the
// recording cannot answer for.
func WriteDiff(w io.Writer, cmp Comparison, rules string) error {
	fmt.Fprint(w, termsafe.Sprintf("call %s: %d recorded decisions, %d re-decided with %s\n", cmp.CallID, cmp.Recorded, cmp.Redecided, rules))
	counts := map[Verdict]int{}
	for _, r := range cmp.Rows {
		counts[r.Verdict]++
		fmt.Fprint(w, termsafe.Sprintf("\nhandoff %d, %s  %s  [%s]\n", r.Handoff, attemptName(&r), short(r.ID), r.Verdict))
		if r.Trigger != nil {
			fmt.Fprint(w, termsafe.Sprintf("  trigger      %s %s\n", r.Trigger.Time.UTC().Format("15:04:05.000"), Step{Event: *r.Trigger}.Summary()))
		}
		switch r.Verdict {
		case Same:
			fmt.Fprint(w, termsafe.Sprintf("  same         %s\n", decisionLine(r.Recorded)))
		case OnlyRecorded:
			fmt.Fprint(w, termsafe.Sprintf("  recorded     %s\n  re-decided   nothing\n", decisionLine(r.Recorded)))
		case OnlyRedecided:
			fmt.Fprint(w, termsafe.Sprintf("  recorded     nothing\n  re-decided   %s\n", decisionLine(r.Redecided)))
		case Changed:
			for _, c := range r.Changes {
				fmt.Fprint(w, termsafe.Sprintf("  %s\n", c))
			}
		case NotRecorded:
			if r.Recorded != nil {
				fmt.Fprint(w, termsafe.Sprintf("  recorded     %s\n", decisionLine(r.Recorded)))
			} else {
				fmt.Fprint(w, "  recorded     nothing\n")
			}
			if r.Redecided != nil {
				fmt.Fprint(w, termsafe.Sprintf("  re-decided   %s\n", decisionLine(r.Redecided)))
			} else {
				fmt.Fprint(w, "  re-decided   nothing\n")
			}
			fmt.Fprint(w, termsafe.Sprintf("  why          the chain left the recording at %s; this attempt follows outcomes recorded for the old "+
				"target, and what the new one would have answered is not recorded\n", r.DivergedAt))
		}
		if r.Outcome != nil {
			line := fmt.Sprintf("  outcome      recorded: %s", statusName(r.Outcome.GetStatus()))
			if r.Outcome.GetSipCode() != 0 {
				line += fmt.Sprintf(" SIP %d %s", r.Outcome.GetSipCode(), r.Outcome.GetSipReason())
			}
			if r.Verdict != Same && targetChanged(r.Recorded, r.Redecided) {
				line += fmt.Sprintf(" from %s; not recorded for %s", targetName(r.Recorded), targetName(r.Redecided))
			}
			fmt.Fprint(w, termsafe.Sprintf("%s\n", strings.TrimRight(line, " ")))
		}
	}
	_, err := termsafe.Fprintf(w, "\n%d same, %d changed, %d only recorded, %d only re-decided, %d not recorded\n",
		counts[Same], counts[Changed], counts[OnlyRecorded], counts[OnlyRedecided], counts[NotRecorded])
	return err
}
