package handoff

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/services/router/internal/rules"
)

// callerEquals is the baseline condition: a plain string comparison.
type callerEquals string

func (c callerEquals) Match(in *rules.Input) (bool, error) { return in.CallerNumber == string(c), nil }

// ruleTable has 100 rules; only the last matches, so every decision
// evaluates all of them.
func ruleTable(b *testing.B, cel bool) *Table {
	b.Helper()
	env, err := rules.NewEnv()
	if err != nil {
		b.Fatal(err)
	}
	t := testTable(b)
	for i := range 100 {
		number := fmt.Sprintf("+1555000%04d", i)
		if i == 99 {
			number = "+15551230001" // the caller of started()
		}
		r := Rule{Name: fmt.Sprintf("r%d", i), Destination: "support"}
		if cel {
			cond, err := env.Compile(fmt.Sprintf(`caller_number == %q`, number))
			if err != nil {
				b.Fatal(err)
			}
			r.When = cond
		} else {
			r.When = callerEquals(number)
		}
		t.Rules = append(t.Rules, r)
	}
	return t
}

// decide measures CallStarted → HandoffCommand decisions over a table; it
// returns decisions per second.
func decide(b *testing.B, table *Table) float64 {
	b.Helper()
	f := New(table, slog.New(slog.DiscardHandler))
	evs := make([]events.Event, 1024)
	for i := range evs {
		id := fmt.Sprintf("c%d", i)
		ev, err := events.New("baton/bench", id, started(id, map[string]string{"Customer-Id": "C-1", "Intent": "x"}), time.Unix(0, 0))
		if err != nil {
			b.Fatal(err)
		}
		evs[i] = ev
	}
	ctx := b.Context()
	start := time.Now()
	n := 0
	for b.Loop() {
		ev := evs[n%len(evs)]
		if len(f.Apply(ctx, ev)) != 1 {
			b.Fatal("no decision")
		}
		f.Rollback() // forget the call, so the next round decides again
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkRules100 compares 100 CEL rules with 100 plain string-equality
// rules in the same run and reports the ratio.
func BenchmarkRules100(b *testing.B) {
	var celRate, plainRate float64
	b.Run("cel", func(b *testing.B) {
		b.ReportAllocs()
		celRate = decide(b, ruleTable(b, true))
		b.ReportMetric(celRate, "decisions/s")
	})
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		plainRate = decide(b, ruleTable(b, false))
		b.ReportMetric(plainRate, "decisions/s")
	})
	if celRate > 0 {
		b.Logf("100 rules: CEL %.0f decisions/s, plain equality %.0f decisions/s, plain/CEL = %.2fx", celRate, plainRate, plainRate/celRate)
	}
}
