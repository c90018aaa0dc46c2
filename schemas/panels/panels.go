// Package panels holds the dashboard's queries, panels.sql and agent.sql,
// and reads them: the analytics service's page and the Grafana dashboard
// run all of them (All), `baton report` the handoff panels of panels.sql.
package panels

import (
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SQL is panels.sql: every panel's query with its placeholders.
//
//go:embed panels.sql
var SQL string

// AgentSQL is agent.sql: the panels of the agent's media stream and of
// its metrics, in the same format as panels.sql.
//
//go:embed agent.sql
var AgentSQL string

// RulesSQL is rules.sql: the panel of the routing rules' hits, in the same
// format as panels.sql.
//
//go:embed rules.sql
var RulesSQL string

// SummarySQL is summary.sql: the `baton dev` summary of calls and their
// handoffs, with the {since_ms} placeholder.
//
//go:embed summary.sql
var SummarySQL string

// Summary returns the summary query for calls that started at or after
// since. summary.sql is read by Parse, like panels.sql.
func Summary(since time.Time) string {
	ps, err := Parse(SummarySQL)
	if err != nil || len(ps) != 1 {
		// summary.sql is embedded and tested (TestSummary).
		return ""
	}
	return strings.ReplaceAll(ps[0].SQL, "{since_ms}", strconv.FormatInt(max(since.UnixMilli(), 0), 10))
}

// Panel names, as in panels.sql.
const (
	HandoffsByReason     = "handoffs_by_reason"
	SuccessByDestination = "success_by_destination"
	TimeToTransfer       = "time_to_transfer"
	CallsByDialedNumber  = "calls_by_dialed_number"
	RecentHandoffs       = "recent_handoffs"
	// FailuresBySIPCode, HandoffsByTrunk and TimeToTransferByDestination
	// follow them in panels.sql.
	FailuresBySIPCode           = "failures_by_sip_code"
	HandoffsByTrunk             = "handoffs_by_trunk"
	TimeToTransferByDestination = "time_to_transfer_by_destination"
)

// Panel names, as in agent.sql.
const (
	AgentStreamsByReason = "agent_streams_by_reason"
	AgentFailures        = "agent_failures"
	AgentPlayout         = "agent_playout"
	AgentMetricsByName   = "agent_metrics_by_name"
)

// Panel names, as in rules.sql.
const (
	RulesByHits = "rules_by_hits"
)

// Panel is one query of panels.sql.
type Panel struct {
	Name  string
	Title string
	// SQL has the {from}, {to} and {limit} placeholders, and the filter
	// placeholders (FilterNames) where the panel filters.
	SQL string
}

// Filter narrows the handoff panels; an empty field means any value.
type Filter struct {
	Trunk, Destination, Method, Outcome string
}

// FilterNames are the filter placeholders ({trunk}, ...) and the Grafana
// variables that fill them, in this order.
var FilterNames = []string{"trunk", "destination", "method", "outcome"}

// values returns f's fields in FilterNames order.
func (f Filter) values() []string { return []string{f.Trunk, f.Destination, f.Method, f.Outcome} }

// Render returns the panel's SQL for a window and a row limit, with no
// filter.
func (p Panel) Render(from, to time.Time, limit int) string {
	return p.RenderFilter(from, to, limit, Filter{})
}

// RenderFilter returns the panel's SQL for a window, a row limit and a
// filter; the filter's values become quoted string literals.
func (p Panel) RenderFilter(from, to time.Time, limit int, f Filter) string {
	pairs := []string{
		"{from}", dateTime(from),
		"{to}", dateTime(to),
		"{limit}", strconv.Itoa(limit),
	}
	for i, v := range f.values() {
		pairs = append(pairs, "{"+FilterNames[i]+"}", Quote(v))
	}
	return strings.NewReplacer(pairs...).Replace(p.SQL)
}

// Grafana returns the panel's SQL with the grafana-clickhouse-datasource
// time macros, and the dashboard's text-box variables, quoted by Grafana
// (${trunk:sqlstring}), for the filters.
func (p Panel) Grafana(limit int) string {
	pairs := []string{
		"{from}", "$__fromTime",
		"{to}", "$__toTime",
		"{limit}", strconv.Itoa(limit),
	}
	for _, name := range FilterNames {
		pairs = append(pairs, "{"+name+"}", "${"+name+":sqlstring}")
	}
	return strings.NewReplacer(pairs...).Replace(p.SQL)
}

// Quote returns s as a ClickHouse string literal: backslash, quote and
// NUL escaped with a backslash, as 18.16 and current releases read them.
func Quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\x00", `\0`).Replace(s) + "'"
}

// dateTime is t as a ClickHouse DateTime expression; 18.16 and 24+ both
// read unix seconds.
func dateTime(t time.Time) string {
	return "toDateTime(" + strconv.FormatInt(max(t.Unix(), 0), 10) + ")"
}

// Parse reads panels.sql-formatted text: statements ended by a ';'
// at the end of a line, each preceded by "-- name:" and "-- title:" lines.
func Parse(text string) ([]Panel, error) {
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

// All returns the panels of panels.sql, then those of agent.sql, then
// those of rules.sql, each in file order.
func All() []Panel {
	var out []Panel
	for _, text := range []string{SQL, AgentSQL, RulesSQL} {
		ps, err := Parse(text)
		if err != nil {
			// The files are embedded and tested (TestAll); they cannot
			// be malformed in a build that passed its tests.
			return nil
		}
		out = append(out, ps...)
	}
	return out
}

// Lookup returns the named panel of panels.sql.
func Lookup(name string) (Panel, error) {
	for _, p := range All() {
		if p.Name == name {
			return p, nil
		}
	}
	return Panel{}, fmt.Errorf("no panel %q in panels.sql", name)
}
