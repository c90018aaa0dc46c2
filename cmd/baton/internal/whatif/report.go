package whatif

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/baton-voice/baton/cmd/baton/internal/termsafe"
)

func (r *Result) period() string {
	p := fmt.Sprintf("%s to %s", r.From.UTC().Format(time.RFC3339), r.To.UTC().Format(time.RFC3339))
	if r.Trunk != "" {
		p += ", trunk " + r.Trunk
	}
	if r.Dest != "" {
		p += ", calls handed to " + r.Dest
	}
	return p
}

// WriteText prints the aggregate for a terminal. Names from records and
// the configuration go through termsafe.
func (r *Result) WriteText(w io.Writer) error {
	p := func(format string, args ...any) { fmt.Fprint(w, termsafe.Sprintf(format, args...)) }
	p("what-if %s over %s\n", r.Rules, r.period())
	p("%d calls re-decided in %s (%.0f calls/s): %d recorded decisions, %d re-decided\n",
		r.Calls, r.Elapsed.Round(time.Millisecond), r.Throughput(), r.Decisions, r.Redecided)
	p("%d calls would change, %d would not\n\n", r.Changed, r.Calls-r.Changed)
	p("%-36s %8s  %s\n", "change", "calls", "sample call ids")
	for _, k := range Kinds {
		p("%-36s %8d  %s\n", k, r.ByKind[k], strings.Join(r.SampleIDs[k], " "))
	}
	p("\nfrom -> to (decisions)\n")
	for _, k := range r.matrixRows() {
		mark := ""
		if k[0] != k[1] {
			mark = "  *"
		}
		p("%8d  %s -> %s%s\n", r.Matrix[k], k[0], k[1], mark)
	}
	p("\nrules by calls matched\n")
	for _, n := range r.RulesNames {
		p("%8d  %s\n", r.RuleHits[n], n)
	}
	if nm := r.NeverMatched(); len(nm) > 0 {
		p("rules that never matched: %s\n", strings.Join(nm, ", "))
	}
	return nil
}

// WriteMarkdown writes the report an operator attaches to a change
// request. Values are escaped for Markdown tables.
func (r *Result) WriteMarkdown(w io.Writer, command string) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# What-if: %s\n\n", md(r.Rules))
	p("- Period: %s\n", md(r.period()))
	p("- Calls re-decided: %d in %s (%.0f calls/s)\n", r.Calls, r.Elapsed.Round(time.Millisecond), r.Throughput())
	p("- Decisions: %d recorded, %d re-decided\n", r.Decisions, r.Redecided)
	p("- Calls that would change: **%d** of %d\n", r.Changed, r.Calls)
	if command != "" {
		p("- Command: `%s`\n", strings.ReplaceAll(command, "`", "'"))
	}
	p("\n## Changes by kind\n\n| change | calls | sample call ids |\n| --- | ---: | --- |\n")
	for _, k := range Kinds {
		ids := make([]string, len(r.SampleIDs[k]))
		for i, id := range r.SampleIDs[k] {
			ids[i] = "`" + strings.ReplaceAll(md(id), "`", "'") + "`"
		}
		p("| %s | %d | %s |\n", k, r.ByKind[k], strings.Join(ids, " "))
	}
	p("\nA call counts once per kind, and may have several kinds. \"Not answerable from the recording\": an earlier " +
		"attempt now goes elsewhere, so the recorded outcome it follows was another target's answer.\n")
	p("\n## From → to, per decision\n\n| recorded | re-decided | decisions |\n| --- | --- | ---: |\n")
	for _, k := range r.matrixRows() {
		to := md(k[1])
		if k[0] != k[1] {
			to = "**" + to + "**"
		}
		p("| %s | %s | %d |\n", md(k[0]), to, r.Matrix[k])
	}
	p("\n## Rules\n\n| rule | calls matched |\n| --- | ---: |\n")
	for _, n := range r.RulesNames {
		p("| %s | %d |\n", md(n), r.RuleHits[n])
	}
	if nm := r.NeverMatched(); len(nm) > 0 {
		for i := range nm {
			nm[i] = md(nm[i])
		}
		p("\nRules that never matched in the period: %s.\n", strings.Join(nm, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// md escapes text for a Markdown table cell and drops control characters.
func md(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch {
		case c < 0x20 || c == 0x7f:
			b.WriteString(" ")
		case strings.ContainsRune(`|\*_[]<>#`, c):
			b.WriteRune('\\')
			b.WriteRune(c)
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}
