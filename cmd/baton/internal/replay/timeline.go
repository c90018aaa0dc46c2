package replay

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/baton-voice/baton/cmd/baton/internal/termsafe"
	"github.com/baton-voice/baton/pkg/callview"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// Record is one Kafka record of the call, as read (callview.Record).
type Record = callview.Record

// Step is one decoded record of the call (callview.Step).
type Step = callview.Step

// Steps decodes records and orders them by event time (callview.Steps).
func Steps(recs []Record) []Step { return callview.Steps(recs) }

// WriteTimeline prints the steps with the time since the first and since
// the previous step. Text from the records is printed through termsafe:
// a value that holds terminal control sequences shows them escaped.
func WriteTimeline(w io.Writer, callID string, steps []Step) error {
	if len(steps) == 0 {
		_, err := termsafe.Fprintf(w, "no records for call %s\n", callID)
		return err
	}
	start := steps[0].Time()
	prev := start
	fmt.Fprint(w, termsafe.Sprintf("call %s: %d records, first at %s\n\n", callID, len(steps), start.UTC().Format(time.RFC3339Nano)))
	fmt.Fprintf(w, "%10s %9s  %-16s %-26s %s\n", "T+", "delta", "topic", "type", "what")
	for _, s := range steps {
		t := s.Time()
		typ := s.Event.Type
		if s.Err != nil {
			typ = "?"
		}
		fmt.Fprint(w, termsafe.Sprintf("%9.3fs %8.3fs  %-16s %-26s %s\n", t.Sub(start).Seconds(), t.Sub(prev).Seconds(),
			s.Record.Topic, typ, s.Summary()))
		prev = t
	}
	return nil
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func methodName(m batonv1.Method) string {
	return strings.TrimPrefix(m.String(), "METHOD_")
}

func statusName(s batonv1.OutcomeStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "OUTCOME_STATUS_"))
}
