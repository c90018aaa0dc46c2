package handoff

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/events/eventscan"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/router/internal/template"
)

func TestHandoffsPerCallAreCapped(t *testing.T) {
	table := fallbackTable(t, 1, EndReturnToAgent)
	table.MaxHandoffs = 2
	f := New(table, discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	for i := range 2 {
		cmd := one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Destination: "d", RequestId: "r"})))
		require.Equal(t, uint32(1), cmd.GetAttempt())
		require.Empty(t, f.Apply(t.Context(), event(t, "c1", outcome(cmd, failed, 603))), "handoff %d failed: back to the agent", i)
	}
	f.Commit()
	v, _, _ := f.View("c1")
	require.Equal(t, uint32(2), v.Handoffs)
	r := refusal(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Destination: "d", RequestId: "r3"})))
	require.Equal(t, RefusedTooManyHandoffs, r.GetReasonCode())
	require.Contains(t, r.GetDetail(), "max_handoffs_per_call 2")
	// Another call has its own count.
	f.Apply(t.Context(), event(t, "c2", started("c2", nil)))
	one(t, f.Apply(t.Context(), event(t, "c2", &batonv1.HandoffRequested{Destination: "d"})))

	// An aborted batch gives the handoff back.
	f = New(table, discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	f.Commit()
	one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Destination: "d"})))
	f.Rollback()
	v, _, _ = f.View("c1")
	require.Zero(t, v.Handoffs)
	require.Zero(t, f.calls["c1"].handoffs)

	// A refused request does not use up the allowance.
	f = New(table, discard())
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	refusal(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Destination: "nowhere"})))
	one(t, f.Apply(t.Context(), event(t, "c1", &batonv1.HandoffRequested{Destination: "d"})))
}

// FuzzRenderHeaders drives the fold's header rendering — a destination's
// template over call variables (X- headers), pre-call data, rule and
// agent variables, and an agent-supplied header value — and holds the
// invariant: the decision is a refusal (invalid_header) or a command
// whose every header passes sipx.ValidateCustom; no string of either
// carries CR, LF or NUL.
func FuzzRenderHeaders(f *testing.F) {
	f.Add("{intent}", "billing", "gold", "", "r")
	f.Add("$call_id-{Customer-Id}", "a\r\nRefer-To: sip:evil@x", "x", "", "")
	f.Add("{results.data.name}", "v", "a\nb", "", "")
	f.Add("{intent}", "v", "v", "agent\x00says", "")
	f.Add("{agentvar}", "v", "v", "", "bare\rCR")
	f.Fuzz(func(t *testing.T, src, headerVar, precallVal, agentHeader, agentVar string) {
		tp, err := template.Parse(src)
		if err != nil {
			return
		}
		table := testTable(t)
		support := table.Destinations["support"]
		support.Headers = []Header{{Name: "X-Intent", Value: tp}, {Name: "X-Override", Value: tp}}
		table.Destinations["support"] = support
		fold := New(table, discard())
		fold.Apply(t.Context(), event(t, "c1", started("c1", map[string]string{"Intent": headerVar, "Customer-Id": headerVar})))
		data, err := json.Marshal(map[string]any{"data": map[string]any{"name": precallVal, "intent": precallVal}})
		if err != nil {
			t.Fatal(err)
		}
		fold.Apply(t.Context(), event(t, "c1", &batonv1.PreCallData{CallId: "c1", DataJson: string(data)}))
		req := &batonv1.HandoffRequested{Destination: "support", Variables: map[string]string{"agentvar": agentVar}}
		if agentHeader != "" {
			req.Headers = map[string]string{"x-override": agentHeader}
		}
		ds := fold.Apply(t.Context(), event(t, "c1", req))
		if len(ds) != 1 {
			t.Fatalf("%d decisions", len(ds))
		}
		if field, ok := eventscan.Find(ds[0].Msg); !ok {
			t.Fatalf("decision carries a control character: %s", field)
		}
		switch d := ds[0].Msg.(type) {
		case *batonv1.HandoffRefused:
			if c := d.GetReasonCode(); c != RefusedInvalidHeader {
				t.Fatalf("refused %s: %s", c, d.GetDetail())
			}
		case *batonv1.HandoffCommand:
			for _, h := range d.GetHeaders() {
				if err := sipx.ValidateCustom(h.GetName(), h.GetValue()); err != nil {
					t.Fatalf("command header %s: %v", h.GetName(), err)
				}
			}
		default:
			t.Fatalf("decision %T", d)
		}
	})
}
