package handoff

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
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

// stateChange is an agent's CallStateChanged as read from the log.
func stateChange(set map[string]string, removed ...string) *batonv1.CallStateChanged {
	return &batonv1.CallStateChanged{SetBy: "agent-api", Set: set, Removed: removed}
}

// TestStateIsCappedInTheFold (issue 14, finding 8): whatever the log
// holds (writes the API accepted against the same committed state, or
// records from elsewhere), the fold never lets a call's state grow past
// MaxStateKeys or MaxStateBytes. A write that would is not applied at all,
// logged and kept for the router to count; one that does not grow what is
// over a cap still applies.
func TestStateIsCappedInTheFold(t *testing.T) {
	table := testTable(t)
	table.MaxStateKeys, table.MaxStateBytes = 3, 64
	var logs bytes.Buffer
	f := New(table, slog.New(slog.NewJSONHandler(&logs, nil)))
	f.Apply(t.Context(), event(t, "c1", started("c1", nil)))
	f.Commit()

	// One key per event, ten events: the first three fit.
	for i := range 10 {
		require.Empty(t, f.Apply(t.Context(), event(t, "c1", stateChange(map[string]string{fmt.Sprintf("k%d", i): "v"}))))
	}
	require.Equal(t, map[string]string{"k0": "v", "k1": "v", "k2": "v"}, f.calls["c1"].state)
	require.Equal(t, slices.Repeat([]string{StateTooManyKeys}, 7), f.RefusedStateWrites())
	require.Contains(t, logs.String(), `"msg":"state change refused: per-call cap"`)
	require.Contains(t, logs.String(), `"limit":"max_state_keys_per_call","max":3,"current":3,"after":4`)
	f.Commit()
	require.Empty(t, f.RefusedStateWrites(), "counted once per batch")
	v, _, _ := f.View("c1")
	require.Len(t, v.State, 3)

	// A write over the cap is refused whole, never applied in part.
	f.Apply(t.Context(), event(t, "c2", started("c2", nil)))
	f.Apply(t.Context(), event(t, "c2", stateChange(map[string]string{"a": "1", "b": "2", "c": "3", "d": "4"})))
	require.Empty(t, f.calls["c2"].state)

	// At the cap: changing a value, and deleting to make room, apply.
	f.Apply(t.Context(), event(t, "c1", stateChange(map[string]string{"k0": "w", "k9": "v"}, "k1")))
	require.Equal(t, map[string]string{"k0": "w", "k2": "v", "k9": "v"}, f.calls["c1"].state)
	require.Equal(t, []string{StateTooManyKeys}, f.RefusedStateWrites(), "c2's write")
	f.Commit()

	// Bytes: keys and values together, at most 64.
	f.Apply(t.Context(), event(t, "c3", started("c3", nil)))
	f.Apply(t.Context(), event(t, "c3", stateChange(map[string]string{"a": strings.Repeat("x", 63)})))
	require.Equal(t, StateSize{Keys: 1, Bytes: 64}, SizeOf(f.calls["c3"].state))
	f.Apply(t.Context(), event(t, "c3", stateChange(map[string]string{"a": strings.Repeat("x", 64)})))
	f.Apply(t.Context(), event(t, "c3", stateChange(map[string]string{"b": ""})))
	require.Equal(t, StateSize{Keys: 1, Bytes: 64}, SizeOf(f.calls["c3"].state))
	require.Equal(t, []string{StateTooLarge, StateTooLarge}, f.RefusedStateWrites())

	// A rolled-back batch counts nothing.
	f.Rollback()
	require.Empty(t, f.RefusedStateWrites())
	require.Nil(t, f.calls["c3"])

	// A call over a cap (lowered by a reload) may shrink, not grow.
	table.MaxStateKeys = 2
	f.Apply(t.Context(), event(t, "c1", stateChange(map[string]string{"k3": "v"})))
	require.Len(t, f.calls["c1"].state, 3)
	f.Apply(t.Context(), event(t, "c1", stateChange(map[string]string{"k2": "changed"})))
	require.Equal(t, "changed", f.calls["c1"].state["k2"])
	f.Apply(t.Context(), event(t, "c1", stateChange(nil, "k0", "k2")))
	require.Equal(t, map[string]string{"k9": "v"}, f.calls["c1"].state)
	// An empty change, or one of nothing but unknown removals, is no growth.
	f.Apply(t.Context(), event(t, "c1", stateChange(nil, "nope")))
	f.Apply(t.Context(), event(t, "c1", &batonv1.CallStateChanged{}))
	require.Equal(t, map[string]string{"k9": "v"}, f.calls["c1"].state)
}

func TestPatchedSize(t *testing.T) {
	state := map[string]string{"a": "12", "bb": "3"}
	require.Equal(t, StateSize{Keys: 2, Bytes: 6}, SizeOf(state))
	for _, tc := range []struct {
		name    string
		set     map[string]string
		removed []string
		want    StateSize
	}{
		{"nothing", nil, nil, StateSize{Keys: 2, Bytes: 6}},
		{"new key", map[string]string{"ccc": "4567"}, nil, StateSize{Keys: 3, Bytes: 13}},
		{"replaced value", map[string]string{"a": ""}, nil, StateSize{Keys: 2, Bytes: 4}},
		{"removed", nil, []string{"bb", "missing"}, StateSize{Keys: 1, Bytes: 3}},
		{"set then removed", map[string]string{"a": "long value", "new": "x"}, []string{"a", "new"}, StateSize{Keys: 1, Bytes: 3}},
		{"removed twice", nil, []string{"a", "a"}, StateSize{Keys: 1, Bytes: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, PatchedSize(state, tc.set, tc.removed))
			// As the fold applies it.
			out := setAll(state, tc.set)
			out = maps.Clone(out)
			for _, k := range tc.removed {
				delete(out, k)
			}
			require.Equal(t, SizeOf(out), tc.want)
		})
	}
	require.Equal(t, map[string]string{"a": "12", "bb": "3"}, state, "not changed")
}
