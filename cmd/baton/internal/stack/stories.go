package stack

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/cmd/baton/internal/termsafe"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/schemas/panels"
)

// Attempt is one handoff command of a call and what became of it
// (handoff_facts).
type Attempt struct {
	Destination, Method, Outcome string
	SIPCode                      int32
	SIPReason                    string
}

// Refusal is a handoff the router refused (a HandoffRefused event).
type Refusal struct {
	Target, Code string
}

// CallStory is one demo call: what it sent and every handoff it had.
type CallStory struct {
	HandoffRow
	Attempts []Attempt
	Refusals []Refusal
	// Bridge is a warm transfer's media summary, from its ENDED outcome;
	// nil until the bridged call ended.
	Bridge *batonv1.BridgeStats
}

// Story kinds, in the order the summary prints them.
const (
	StoryReferred = "blind transfer (REFER)"
	StoryFallback = "busy destination, then its fallback"
	StoryBridged  = "warm transfer (INVITE), bridged with audio"
	StoryHandback = "handed back to the SBC (BYE with X- headers)"
	StoryRefused  = "refused target, then Baton's rules"
	StoryFailed   = "failed"
	StoryPending  = "no final outcome yet"
)

var storyOrder = []string{StoryReferred, StoryFallback, StoryBridged, StoryHandback, StoryRefused, StoryFailed, StoryPending}

// Kind says what happened to the call, from its events alone.
func (c CallStory) Kind() string {
	if len(c.Attempts) == 0 {
		if len(c.Refusals) > 0 {
			return StoryRefused
		}
		return StoryPending
	}
	last := c.Attempts[len(c.Attempts)-1]
	switch {
	case last.Outcome == "pending":
		return StoryPending
	case last.Outcome != "succeeded":
		return StoryFailed
	case len(c.Refusals) > 0:
		return StoryRefused
	case len(c.Attempts) > 1:
		return StoryFallback
	case last.Method == "INVITE":
		return StoryBridged
	case last.Method == "BYE":
		return StoryHandback
	}
	return StoryReferred
}

// What is one line on how the call went.
func (c CallStory) What() string {
	var parts []string
	for _, r := range c.Refusals {
		parts = append(parts, fmt.Sprintf("%s refused (%s)", r.Target, r.Code))
	}
	for _, a := range c.Attempts {
		s := fmt.Sprintf("%s %s %s", a.Method, a.Destination, a.Outcome)
		if a.SIPCode != 0 {
			s += fmt.Sprintf(" (%d %s)", a.SIPCode, a.SIPReason)
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "no handoff"
	}
	out := strings.Join(parts, ", then ")
	if b := c.Bridge; b != nil {
		out += fmt.Sprintf("; audio bridged %s: %d packets caller to destination, %d back, %.1f s",
			b.GetCodec(), b.GetCallerToDestination().GetPackets(), b.GetDestinationToCaller().GetPackets(), b.GetDuration().AsDuration().Seconds())
	}
	return out
}

// Stories reads the calls of rows with every handoff and refusal they
// had and a warm transfer's media summary: handoff_facts, and the events
// table's HandoffRefused and TransferOutcome payloads. Plain SELECTs that
// 18.16 and current servers read alike.
func Stories(ctx context.Context, conn clickhouse.Conn, rows []HandoffRow) ([]CallStory, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	ids := make([]string, len(rows))
	byID := map[string]*CallStory{}
	stories := make([]CallStory, len(rows))
	for i, r := range rows {
		ids[i] = panels.Quote(r.CallID)
		stories[i] = CallStory{HandoffRow: r}
		byID[r.CallID] = &stories[i]
	}
	in := strings.Join(ids, ", ")
	q := "SELECT call_id, destination, method, outcome, sip_code, sip_reason FROM handoff_facts WHERE call_id IN (" + in +
		") ORDER BY call_id, requested_ms, command_id"
	res, err := conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("query handoff facts: %w", err)
	}
	for res.Next() {
		var id string
		var a Attempt
		if err := res.Scan(&id, &a.Destination, &a.Method, &a.Outcome, &a.SIPCode, &a.SIPReason); err != nil {
			_ = res.Close()
			return nil, fmt.Errorf("scan handoff facts: %w", err)
		}
		if c := byID[id]; c != nil {
			c.Attempts = append(c.Attempts, a)
		}
	}
	if err := res.Err(); err != nil {
		return nil, err
	}
	_ = res.Close()
	q = "SELECT call_id, type, payload_proto FROM events FINAL WHERE type IN (" + panels.Quote(events.TypeHandoffRefused) + ", " +
		panels.Quote(events.TypeTransferOutcome) + ") AND call_id IN (" + in + ") ORDER BY call_id, time_ms, event_id"
	if res, err = conn.Query(ctx, q); err != nil {
		return nil, fmt.Errorf("query refusals: %w", err)
	}
	defer func() { _ = res.Close() }()
	for res.Next() {
		var id, typ, payload string
		if err := res.Scan(&id, &typ, &payload); err != nil {
			return nil, fmt.Errorf("scan refusals: %w", err)
		}
		if typ == events.TypeTransferOutcome {
			var m batonv1.TransferOutcome
			if err := proto.Unmarshal([]byte(payload), &m); err != nil {
				return nil, fmt.Errorf("transfer outcome of %s: %w", id, err)
			}
			if c := byID[id]; c != nil && m.GetBridge() != nil {
				c.Bridge = m.GetBridge()
			}
			continue
		}
		var m batonv1.HandoffRefused
		if err := proto.Unmarshal([]byte(payload), &m); err != nil {
			return nil, fmt.Errorf("refusal of %s: %w", id, err)
		}
		target := m.GetDestination()
		if target == "" {
			target = m.GetRoute()
		}
		if c := byID[id]; c != nil {
			c.Refusals = append(c.Refusals, Refusal{Target: target, Code: m.GetReasonCode()})
		}
	}
	return stories, res.Err()
}

// PrintStories writes the calls grouped by what happened, with one replay
// command and one dashboard link (dashboard is host:port) per kind.
func PrintStories(w io.Writer, stories []CallStory, broker, dashboard string) {
	groups := map[string][]CallStory{}
	for _, c := range stories {
		groups[c.Kind()] = append(groups[c.Kind()], c)
	}
	n := 0
	for _, kind := range storyOrder {
		if len(groups[kind]) > 0 {
			n++
		}
	}
	fmt.Fprintf(w, "%d calls, %d kinds of handoff:\n", len(stories), n)
	for _, kind := range storyOrder {
		calls := groups[kind]
		if len(calls) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n  %s: %d call%s\n", kind, len(calls), plural(len(calls)))
		for _, c := range calls {
			fmt.Fprint(w, termsafe.Sprintf("    %-16s X-Intent %-20s %s\n", c.CallerNumber, c.Intent, c.What()))
		}
		fmt.Fprint(w, termsafe.Sprintf("    replay one: bin/baton replay --call %s --brokers %s\n", shellQuote(calls[0].CallID), broker))
		fmt.Fprint(w, termsafe.Sprintf("    or open it: http://%s/calls/%s\n", dashboard, url.PathEscape(calls[0].CallID)))
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && !strings.ContainsRune("@%+=:,./_-", r)
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Kinds returns the story kinds present, in print order.
func Kinds(stories []CallStory) []string {
	var out []string
	for _, kind := range storyOrder {
		if slices.ContainsFunc(stories, func(c CallStory) bool { return c.Kind() == kind }) {
			out = append(out, kind)
		}
	}
	return out
}

// WaitStories is Stories, read again until every bridged call has its
// media summary (its ENDED outcome reached ClickHouse) or limit passes.
func WaitStories(ctx context.Context, conn clickhouse.Conn, rows []HandoffRow, limit time.Duration) ([]CallStory, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		stories, err := Stories(ctx, conn, rows)
		if err != nil {
			if ctx.Err() != nil && stories == nil {
				return Stories(context.WithoutCancel(ctx), conn, rows)
			}
			return nil, err
		}
		waiting := slices.ContainsFunc(stories, func(c CallStory) bool { return c.Kind() == StoryBridged && c.Bridge == nil })
		if !waiting {
			return stories, nil
		}
		select {
		case <-ctx.Done():
			return stories, nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}
