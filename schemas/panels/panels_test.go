package panels

import (
	"testing"
	"time"
)

func TestAll(t *testing.T) {
	ps, err := Parse(SQL)
	if err != nil {
		t.Fatalf("panels.sql: %v", err)
	}
	want := []string{HandoffsByReason, SuccessByDestination, TimeToTransfer, CallsByDialedNumber, RecentHandoffs}
	if len(ps) != len(want) {
		t.Fatalf("panels.sql has %d panels, want %d", len(ps), len(want))
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
}
