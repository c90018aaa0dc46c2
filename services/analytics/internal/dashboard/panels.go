package dashboard

import (
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// PanelsSQL is panels.sql: every panel's query with its placeholders.
//
//go:embed panels.sql
var PanelsSQL string

// Panel names, as in panels.sql.
const (
	PanelHandoffsByReason     = "handoffs_by_reason"
	PanelSuccessByDestination = "success_by_destination"
	PanelTimeToTransfer       = "time_to_transfer"
	PanelCallsByDialedNumber  = "calls_by_dialed_number"
	PanelRecentHandoffs       = "recent_handoffs"
)

// Panel is one query of panels.sql.
type Panel struct {
	Name  string
	Title string
	// SQL has the {from}, {to} and {limit} placeholders.
	SQL string
}

// Render returns the panel's SQL for a window and a row limit.
func (p Panel) Render(from, to time.Time, limit int) string {
	return strings.NewReplacer(
		"{from}", dateTime(from),
		"{to}", dateTime(to),
		"{limit}", strconv.Itoa(limit),
	).Replace(p.SQL)
}

// Grafana returns the panel's SQL with the grafana-clickhouse-datasource
// time macros.
func (p Panel) Grafana(limit int) string {
	return strings.NewReplacer(
		"{from}", "$__fromTime",
		"{to}", "$__toTime",
		"{limit}", strconv.Itoa(limit),
	).Replace(p.SQL)
}

// dateTime is t as a ClickHouse DateTime expression; 18.16 and 24+ both
// read unix seconds.
func dateTime(t time.Time) string {
	return "toDateTime(" + strconv.FormatInt(max(t.Unix(), 0), 10) + ")"
}

// ParsePanels reads panels.sql-formatted text: statements ended by a ';'
// at the end of a line, each preceded by "-- name:" and "-- title:" lines.
func ParsePanels(text string) ([]Panel, error) {
	var out []Panel
	for chunk := range strings.SplitSeq(strings.ReplaceAll(text, "\r\n", "\n")+"\n", ";\n") {
		var p Panel
		var sql []string
		for line := range strings.Lines(chunk) {
			trimmed := strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(trimmed, "-- name:"):
				p.Name = strings.TrimSpace(strings.TrimPrefix(trimmed, "-- name:"))
			case strings.HasPrefix(trimmed, "-- title:"):
				p.Title = strings.TrimSpace(strings.TrimPrefix(trimmed, "-- title:"))
			case strings.HasPrefix(trimmed, "--"), trimmed == "":
			default:
				sql = append(sql, strings.TrimRight(line, "\n"))
			}
		}
		if len(sql) == 0 {
			continue
		}
		if p.Name == "" || p.Title == "" {
			return nil, fmt.Errorf("panel %q: want -- name: and -- title: lines before the query", strings.Join(sql, " "))
		}
		p.SQL = strings.Join(sql, "\n")
		out = append(out, p)
	}
	return out, nil
}

// Panels returns the panels of panels.sql, in file order.
func Panels() []Panel {
	ps, err := ParsePanels(PanelsSQL)
	if err != nil {
		// panels.sql is embedded and tested; it cannot be malformed in a
		// build that passed its tests.
		return nil
	}
	return ps
}

// panel returns the named panel of panels.sql.
func panel(name string) (Panel, error) {
	for _, p := range Panels() {
		if p.Name == name {
			return p, nil
		}
	}
	return Panel{}, fmt.Errorf("dashboard: no panel %q in panels.sql", name)
}
