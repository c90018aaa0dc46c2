package panels

import (
	"strings"
	"testing"
	"time"
)

func TestAll(t *testing.T) {
	handoff, err := Parse(SQL)
	if err != nil {
		t.Fatalf("panels.sql: %v", err)
	}
	if len(handoff) != 5 {
		t.Fatalf("panels.sql has %d panels, want 5 (baton report prints them)", len(handoff))
	}
	if _, err := Parse(AgentSQL); err != nil {
		t.Fatalf("agent.sql: %v", err)
	}
	if _, err := Parse(RulesSQL); err != nil {
		t.Fatalf("rules.sql: %v", err)
	}
	ps := All()
	want := []string{HandoffsByReason, SuccessByDestination, TimeToTransfer, CallsByDialedNumber, RecentHandoffs,
		AgentStreamsByReason, AgentFailures, AgentPlayout, AgentMetricsByName, RulesByHits}
	if len(ps) != len(want) {
		t.Fatalf("All has %d panels, want %d", len(ps), len(want))
	}
	for i, p := range ps {
		if p.Name != want[i] || p.Title == "" {
			t.Errorf("panel %d: name %q title %q, want name %q and a title", i, p.Name, p.Title, want[i])
		}
		if _, err := Lookup(p.Name); err != nil {
			t.Error(err)
		}
	}
	if _, err := Lookup("nope"); err == nil {
		t.Error("Lookup found a panel that does not exist")
	}
	if _, err := Parse("SELECT 1;\n"); err == nil {
		t.Error("a query without name and title lines was accepted")
	}
	r := ps[0].Render(time.Unix(100, 0), time.Unix(200, 0), 5)
	if got := r; got == ps[0].SQL {
		t.Error("Render left the placeholders")
	}
	for _, p := range ps {
		r := p.Render(time.Unix(100, 0), time.Unix(200, 0), 5)
		if strings.ContainsAny(r, "{}") || strings.Contains(r, "--") || strings.HasSuffix(r, ";") {
			t.Errorf("panel %s: rendered with a placeholder, comment or final ';':\n%s", p.Name, r)
		}
		if !strings.Contains(r, "toDateTime(100)") || !strings.Contains(r, "toDateTime(200)") {
			t.Errorf("panel %s does not read the window:\n%s", p.Name, r)
		}
	}
}

func TestSummary(t *testing.T) {
	since := time.Date(2026, 12, 6, 3, 0, 0, 250_000_000, time.UTC)
	sql := Summary(since)
	if !strings.Contains(sql, "WHERE started_ms >= 1796526000250") {
		t.Errorf("since is not rendered as epoch milliseconds:\n%s", sql)
	}
	if strings.Contains(sql, "{since_ms}") || strings.Contains(sql, "--") || strings.HasSuffix(sql, ";") {
		t.Errorf("want no placeholder, comment or final ';':\n%s", sql)
	}
	if got := Summary(time.Unix(-5, 0)); !strings.Contains(got, "started_ms >= 0\n") {
		t.Errorf("a time before 1970 must read as 0:\n%s", got)
	}
}
