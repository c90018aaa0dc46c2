package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipprobe"
)

// TestCall is the call a test call pretends to hand off: its numbers and
// X- variables, which the destination's header templates read.
type TestCall struct {
	CallerNumber, CalleeNumber string
	Variables                  map[string]string
}

// Rendered is what the router decides for a test call to one destination.
type Rendered struct {
	Headers []sipprobe.Header
	// Refused is the router's refusal (reason code and detail), when it
	// refuses the handoff (a required variable missing, say).
	Refused string
}

// callID is the id of the test call to destination name.
func callID(name string) string { return "baton-probe-" + name }

// Render asks the router (router replay, the service's own decision code)
// what it decides for a test call handed to each destination: the headers
// it renders, or its refusal. Nothing is published.
func Render(ctx context.Context, routerBin, routerConfig string, call TestCall, destinations []string) (map[string]Rendered, error) {
	var in bytes.Buffer
	w := events.NewNDJSONWriter(&in)
	at := time.Now().UTC().Truncate(time.Millisecond)
	for _, d := range destinations {
		id := callID(d)
		for i, msg := range []events.Event{
			mustEvent(id, &batonv1.CallStarted{CallerNumber: call.CallerNumber, CalleeNumber: call.CalleeNumber,
				Variables: call.Variables}, at),
			mustEvent(id, &batonv1.HandoffRequested{CallId: id, RequestId: "baton-probe", Destination: d, Reason: "probe",
				RequestedBy: "baton probe"}, at.Add(time.Millisecond)),
		} {
			if msg.ID == "" {
				return nil, fmt.Errorf("test call %s: event %d could not be built", id, i)
			}
			rec, err := events.Encode("baton.calls", msg)
			if err != nil {
				return nil, fmt.Errorf("test call %s: %w", id, err)
			}
			if err := w.Write(rec); err != nil {
				return nil, fmt.Errorf("test call %s: %w", id, err)
			}
		}
	}
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, routerBin, "replay", "--config", routerConfig)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = &in, &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s replay --config %s: %w: %s", routerBin, routerConfig, err, strings.TrimSpace(stderr.String()))
	}
	byCall := map[string]string{}
	for _, d := range destinations {
		byCall[callID(d)] = d
	}
	got := map[string]Rendered{}
	r := events.NewNDJSONReader(&out)
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read router replay output: %w", err)
		}
		ev, err := events.Decode(rec)
		if err != nil {
			return nil, fmt.Errorf("read router replay output: %w", err)
		}
		d, ok := byCall[ev.Subject]
		if !ok {
			continue
		}
		if prev, decided := got[d]; decided && prev.Refused == "" {
			continue // the command to d is what a test call sends
		}
		switch m := ev.Data.(type) {
		case *batonv1.HandoffCommand:
			if m.GetDestination() != d {
				// A rule handed the call elsewhere when it started; the
				// request to d is then refused (handoff_in_progress).
				got[d] = Rendered{Refused: fmt.Sprintf("a rule hands the test call to %s when it starts", m.GetDestination())}
				continue
			}
			var hs []sipprobe.Header
			for _, h := range m.GetHeaders() {
				hs = append(hs, sipprobe.Header{Name: h.GetName(), Value: h.GetValue()})
			}
			got[d] = Rendered{Headers: hs}
		case *batonv1.HandoffRefused:
			if _, decided := got[d]; !decided {
				got[d] = Rendered{Refused: m.GetReasonCode() + ": " + m.GetDetail()}
			}
		}
	}
	return got, nil
}

// mustEvent builds an event; a zero Event when it cannot (the messages
// here always can).
func mustEvent(callID string, data proto.Message, at time.Time) events.Event {
	ev, err := events.New("baton/probe", callID, data, at)
	if err != nil {
		return events.Event{}
	}
	return ev
}
