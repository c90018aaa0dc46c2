package replay

import (
	"fmt"
	"html"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/baton-voice/baton/cmd/baton/internal/termsafe"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// Lanes of the ladder, left to right.
var lanes = []string{"SBC", "ingress", "router", "transfer"}

const (
	laneSBC = iota
	laneIngress
	laneRouter
	laneTransfer
)

// Arrow is one message of the ladder. From == To is a note on a lane.
type Arrow struct {
	At       time.Time
	From, To int
	Label    string
}

// Ladder turns the call's facts, commands and outcomes into the SIP (and
// Kafka) messages they stand for. SIP that left no event (provisional
// responses, the ACK) is not invented.
func Ladder(steps []Step) []Arrow {
	var out []Arrow
	add := func(at time.Time, from, to int, label string) {
		out = append(out, Arrow{At: at, From: from, To: to, Label: label})
	}
	for _, s := range steps {
		if s.Err != nil {
			continue
		}
		at := s.Event.Time
		switch m := s.Event.Data.(type) {
		case *batonv1.CallStarted:
			label := "INVITE"
			if n := len(m.GetVariables()); n > 0 {
				label += fmt.Sprintf(" (%d X- headers)", n)
			}
			if m.GetDirection() == batonv1.CallDirection_CALL_DIRECTION_OUTBOUND {
				// Ingress placed it (decision 0018): the INVITE went out.
				add(at, laneIngress, laneSBC, label)
				add(at, laneSBC, laneIngress, "200 OK")
				add(at, laneIngress, laneRouter, "CallStarted (outbound)")
				break
			}
			add(at, laneSBC, laneIngress, label)
			add(at, laneIngress, laneRouter, "CallStarted")
			add(at, laneIngress, laneSBC, "200 OK")
		case *batonv1.HandoffRequested:
			add(at, laneRouter, laneRouter, "handoff requested: "+m.GetReason())
		case *batonv1.HandoffCommand:
			add(at, laneRouter, laneTransfer, methodName(m.GetMethod())+" -> "+m.GetDestination())
		case *batonv1.TransferOutcome:
			method := methodName(m.GetMethod())
			switch m.GetStatus() {
			case batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED:
				add(at, laneTransfer, laneSBC, method)
				add(at, laneSBC, laneTransfer, sipStatus(m.GetSipCode(), m.GetSipReason()))
			case batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED:
				if m.GetSipCode() >= 300 && !strings.Contains(m.GetDetail(), "NOTIFY") && !strings.Contains(m.GetDetail(), "sipfrag") {
					add(at, laneTransfer, laneSBC, method)
					add(at, laneSBC, laneTransfer, sipStatus(m.GetSipCode(), m.GetSipReason()))
				}
				add(at, laneTransfer, laneTransfer, "failed: "+m.GetDetail())
			case batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED:
				if m.GetMethod() == batonv1.Method_METHOD_BYE {
					add(at, laneTransfer, laneSBC, "BYE")
					add(at, laneSBC, laneTransfer, sipStatus(m.GetSipCode(), m.GetSipReason()))
				}
				add(at, laneTransfer, laneTransfer, fmt.Sprintf("succeeded (%d)", m.GetSipCode()))
			default:
				add(at, laneTransfer, laneTransfer, statusName(m.GetStatus()))
			}
		case *batonv1.AgentConnected:
			add(at, laneIngress, laneIngress, "agent stream open")
		case *batonv1.AgentMarkPlayed:
			add(at, laneIngress, laneIngress, "agent mark played: "+m.GetName())
		case *batonv1.AgentDisconnected:
			add(at, laneIngress, laneIngress, "agent stream ended: "+m.GetReason())
		case *batonv1.NotifyReceived:
			add(at, laneSBC, laneIngress, fmt.Sprintf("NOTIFY sipfrag %d", m.GetSipfragStatus()))
			add(at, laneIngress, laneSBC, "200 OK")
		case *batonv1.CallEnded:
			if m.GetEndedBy() == batonv1.Party_PARTY_BATON {
				continue // transfer's own BYE shows as its outcome
			}
			add(at, laneSBC, laneIngress, orDefault(m.GetMethod(), "BYE"))
			add(at, laneIngress, laneSBC, "200 OK")
		}
	}
	return out
}

func sipStatus(code int32, reason string) string {
	if code == 0 {
		return "(no response)"
	}
	return strings.TrimSpace(fmt.Sprintf("%d %s", code, reason))
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// laneWidth is the distance between two lanes in the text ladder.
const laneWidth = 28

// WriteLadder draws the arrows as text, one line per message, time on the left.
func WriteLadder(w io.Writer, arrows []Arrow) error {
	width := laneWidth*(len(lanes)-1) + 1
	header := make([]byte, width+laneWidth)
	for i := range header {
		header[i] = ' '
	}
	for i, name := range lanes {
		copy(header[i*laneWidth:], name)
	}
	if _, err := fmt.Fprintf(w, "%10s  %s\n", "", strings.TrimRight(string(header), " ")); err != nil {
		return err
	}
	var start time.Time
	if len(arrows) > 0 {
		start = arrows[0].At
	}
	for _, a := range arrows {
		label := termsafe.String(a.Label)
		line := []byte(strings.Repeat(" ", width))
		for i := range lanes {
			line[i*laneWidth] = '|'
		}
		from, to := a.From*laneWidth, a.To*laneWidth
		var text string
		if from == to {
			line[from] = '*'
			text = string(line) + "  " + lanes[a.From] + ": " + label
		} else {
			lo, hi := min(from, to), max(from, to)
			for i := lo + 1; i < hi; i++ {
				line[i] = '-'
			}
			if to > from {
				line[hi-1] = '>'
			} else {
				line[lo+1] = '<'
			}
			if room := hi - lo - 5; len(label) > room {
				label = cut(label, max(room, 0))
			}
			mid := lo + (hi-lo-len(label))/2
			copy(line[mid:], label)
			text = string(line)
		}
		if _, err := fmt.Fprintf(w, "%9.3fs  %s\n", a.At.Sub(start).Seconds(), strings.TrimRight(text, " ")); err != nil {
			return err
		}
	}
	return nil
}

// cut shortens s to at most n bytes without splitting a rune.
func cut(s string, n int) string {
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// WriteHTML writes a standalone HTML page: the ladder as SVG and the
// timeline as a table.
func WriteHTML(w io.Writer, callID string, steps []Step, arrows []Arrow) error {
	const (
		laneGap = 220
		rowGap  = 34
		top     = 60
		left    = 110
	)
	height := top + rowGap*(len(arrows)+1)
	widthPx := left + laneGap*(len(lanes)-1) + 200
	var b strings.Builder
	fmt.Fprintf(&b, "<!doctype html><html><head><meta charset=\"utf-8\"><title>Baton call %s</title>", html.EscapeString(callID))
	b.WriteString(`<style>body{font-family:sans-serif;margin:24px}svg text{font-size:13px}` +
		`table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}</style></head><body>`)
	fmt.Fprintf(&b, "<h1>Call %s</h1>", html.EscapeString(callID))
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d">`, widthPx, height)
	b.WriteString(`<defs><marker id="arrow" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto">` +
		`<path d="M0,0 L10,4 L0,8 z" fill="#333"/></marker></defs>`)
	for i, name := range lanes {
		x := left + i*laneGap
		fmt.Fprintf(&b, `<text x="%d" y="30" text-anchor="middle" font-weight="bold">%s</text>`, x, name)
		fmt.Fprintf(&b, `<line x1="%d" y1="40" x2="%d" y2="%d" stroke="#999"/>`, x, x, height-10)
	}
	var start time.Time
	if len(arrows) > 0 {
		start = arrows[0].At
	}
	for i, a := range arrows {
		y := top + rowGap*i
		fmt.Fprintf(&b, `<text x="8" y="%d">+%.3fs</text>`, y+4, a.At.Sub(start).Seconds())
		x1, x2 := left+a.From*laneGap, left+a.To*laneGap
		if x1 == x2 {
			fmt.Fprintf(&b, `<circle cx="%d" cy="%d" r="4" fill="#c60"/><text x="%d" y="%d">%s</text>`,
				x1, y, x1+10, y+4, html.EscapeString(a.Label))
			continue
		}
		fmt.Fprintf(&b, `<line class="msg" x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333" marker-end="url(#arrow)"/>`, x1, y, x2, y)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`, (x1+x2)/2, y-5, html.EscapeString(a.Label))
	}
	b.WriteString("</svg><h2>Timeline</h2><table><tr><th>time</th><th>topic</th><th>type</th><th>what</th></tr>")
	for _, s := range steps {
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>",
			s.Time().UTC().Format("15:04:05.000"), html.EscapeString(s.Record.Topic), html.EscapeString(s.Event.Type),
			html.EscapeString(s.Summary()))
	}
	b.WriteString("</table></body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
