package callview

import (
	"fmt"
	"html"
	"io"
	"strings"
	"time"
)

// WriteHTML writes a standalone HTML page: the ladder as SVG
// (LadderSVG) and the timeline as a table (TimelineTable).
func WriteHTML(w io.Writer, callID string, steps []Step, arrows []Arrow) error {
	var b strings.Builder
	fmt.Fprintf(&b, "<!doctype html><html><head><meta charset=\"utf-8\"><title>Baton call %s</title>", html.EscapeString(callID))
	b.WriteString(`<style>body{font-family:sans-serif;margin:24px}svg text{font-size:13px}` +
		`table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}</style></head><body>`)
	fmt.Fprintf(&b, "<h1>Call %s</h1>", html.EscapeString(callID))
	b.WriteString(LadderSVG(arrows))
	b.WriteString("<h2>Timeline</h2>")
	b.WriteString(TimelineTable(steps))
	b.WriteString("</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// LadderSVG is the ladder as an SVG element: a lane per stage, a line
// with an arrowhead (class "msg") per message, a dot per note, the time
// since the first arrow on the left. Labels are HTML-escaped.
func LadderSVG(arrows []Arrow) string {
	const (
		laneGap = 220
		rowGap  = 34
		top     = 60
		left    = 110
	)
	lanes := Lanes()
	height := top + rowGap*(len(arrows)+1)
	widthPx := left + laneGap*(len(lanes)-1) + 200
	var b strings.Builder
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
	b.WriteString("</svg>")
	return b.String()
}

// TimelineTable is the steps as an HTML table: time (UTC), topic, event
// type and what the step means (Step.Summary), all HTML-escaped.
func TimelineTable(steps []Step) string {
	var b strings.Builder
	b.WriteString("<table><tr><th>time</th><th>topic</th><th>type</th><th>what</th></tr>")
	for _, s := range steps {
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>",
			s.Time().UTC().Format("15:04:05.000"), html.EscapeString(s.Record.Topic), html.EscapeString(s.Event.Type),
			html.EscapeString(s.Summary()))
	}
	b.WriteString("</table>")
	return b.String()
}
