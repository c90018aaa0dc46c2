package whatif

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/cmd/baton/internal/chreplay"
	"github.com/baton-voice/baton/cmd/baton/internal/clickhousetest"
	"github.com/baton-voice/baton/cmd/baton/internal/replay"
	"github.com/baton-voice/baton/cmd/baton/internal/synthcalls"
)

func streamFrom(conn driver.Conn, w chreplay.Window) Source {
	return func(ctx context.Context, batch int, fn func(context.Context, []chreplay.Call) error) error {
		return chreplay.Stream(ctx, conn, w, batch, fn)
	}
}

// rowKey is what a comparison row says, as text: its id, verdict,
// changes and the re-decided decision's exact bytes.
func rowKey(t *testing.T, r replay.Row) string {
	t.Helper()
	red := "nothing"
	if r.Redecided != nil {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r.Redecided.Data)
		require.NoError(t, err)
		red = fmt.Sprintf("%s %x", r.Redecided.Type, b)
	}
	return fmt.Sprintf("%s %s %q %s", r.ID, r.Verdict, r.Changes, red)
}

// TestWhatIfMatchesTheRouterCallByCall records a month of synthetic
// traffic with bench/replay/old.yaml (the router's own decisions, by
// `router replay`), loads it into clickhouse-server 18.16 as analytics
// writes it (the first batch twice, as a Kafka replay would), re-decides
// the whole month with new.yaml in streamed batches, and checks:
//   - call by call, the what-if's comparison equals that of the router
//     deciding that call alone with new.yaml (`router replay`, the fold the
//     service runs) over the call as read back from ClickHouse;
//   - the aggregate counts what the generator knows it changed: billing
//     calls and support fallbacks change destination and method, support
//     calls gain a header, PBX ad-hoc routes are now refused, premium
//     ones no longer are, and the toll-fraud rule never matches;
//   - --trunk and --destination select the calls they name.
func TestWhatIfMatchesTheRouterCallByCall(t *testing.T) {
	const calls = 240
	ch := clickhousetest.Start(t)
	conn := ch.Database(t, "baton")
	clickhousetest.Migrate(t, conn)
	router := clickhousetest.Binary(t, "router")
	bench := filepath.Join(clickhousetest.RepoRoot(t), "bench", "replay")
	oldRules, newRules := filepath.Join(bench, "old.yaml"), filepath.Join(bench, "new.yaml")

	from := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	to := from.AddDate(0, 0, 30)
	rec := &synthcalls.Recorder{RouterBin: router, Rules: oldRules}
	kinds := map[string]synthcalls.Call{}
	first := true
	require.NoError(t, synthcalls.Generate(t.Context(), synthcalls.Config{Calls: calls, From: from, To: to, Seed: 21, Partitions: 3}, 60,
		func(ctx context.Context, batch []synthcalls.Call) error {
			if err := rec.Record(ctx, batch); err != nil {
				return err
			}
			for _, c := range batch {
				kinds[c.ID] = synthcalls.Call{ID: c.ID, Kind: c.Kind, Trunk: c.Trunk, Failed: c.Failed}
			}
			if first { // a replayed batch: the same rows again
				first = false
				if err := synthcalls.Load(ctx, conn, batch); err != nil {
					return err
				}
			}
			return synthcalls.Load(ctx, conn, batch)
		}))

	w := chreplay.Window{From: from, To: to}
	decide, err := RouterDecider(router, newRules, t.TempDir())
	require.NoError(t, err)
	res, err := Run(t.Context(), streamFrom(conn, w), decide,
		Options{Rules: newRules, Window: w, Batch: 50, KeepCalls: true})
	require.NoError(t, err)
	require.Equal(t, calls, res.Calls)
	require.Len(t, res.PerCall, calls)

	t.Run("call by call", func(t *testing.T) {
		for id := range kinds {
			recs, info, err := chreplay.Fetch(t.Context(), conn, id, nil)
			require.NoError(t, err)
			require.Zero(t, info.Inexact)
			decided, err := replay.Redecide(t.Context(), router, newRules, recs)
			require.NoError(t, err)
			want := replay.Diff(id, recs, decided)
			got := res.PerCall[id]
			require.Equal(t, want.Recorded, got.Recorded, id)
			require.Equal(t, want.Redecided, got.Redecided, id)
			var wantRows, gotRows []string
			for _, r := range want.Rows {
				wantRows = append(wantRows, rowKey(t, r))
			}
			for _, r := range got.Rows {
				gotRows = append(gotRows, rowKey(t, r))
			}
			require.Equal(t, wantRows, gotRows, id)
		}
	})

	t.Run("aggregate", func(t *testing.T) {
		count := func(f func(synthcalls.Call) bool) int {
			n := 0
			for _, c := range kinds {
				if f(c) {
					n++
				}
			}
			return n
		}
		billingOrFallback := count(func(c synthcalls.Call) bool {
			return c.Kind == synthcalls.Billing || c.Kind == synthcalls.Support && c.Failed
		})
		support := count(func(c synthcalls.Call) bool { return c.Kind == synthcalls.Support })
		pbx := count(func(c synthcalls.Call) bool { return c.Kind == synthcalls.AdHocPBX })
		prem := count(func(c synthcalls.Call) bool { return c.Kind == synthcalls.AdHocPrem })
		require.Positive(t, billingOrFallback)
		require.Positive(t, pbx)
		require.Positive(t, prem)
		require.Equal(t, billingOrFallback, res.ByKind[Destination], "billing -> billing-queue")
		require.Equal(t, billingOrFallback, res.ByKind[Method], "INVITE -> REFER")
		// Support calls gain X-Queue; so do sales calls whose sales
		// attempt failed, on their fallback to the default (support).
		salesFailed := count(func(c synthcalls.Call) bool { return c.Kind == synthcalls.Sales && c.Failed })
		require.Equal(t, support+salesFailed, res.ByKind[Headers], "X-Queue added")
		require.Equal(t, pbx, res.ByKind[RefusalGained])
		require.Equal(t, prem, res.ByKind[RefusalLost])
		require.Equal(t, []string{"toll-fraud"}, res.NeverMatched())
		require.Equal(t, count(func(c synthcalls.Call) bool { return c.Kind == synthcalls.Billing }), res.RuleHits["billing"],
			"the fold's own log of matches, once per call")
		require.Equal(t, count(func(c synthcalls.Call) bool { return c.Kind == synthcalls.Sales }), res.RuleHits["sales"])
		require.Positive(t, res.Matrix[[2]string{"billing", "billing-queue"}])
		require.Equal(t, support+salesFailed, res.Matrix[[2]string{"support", "support"}], "support attempts keep their destination")
		for _, k := range Kinds {
			require.LessOrEqual(t, len(res.SampleIDs[k]), Samples)
			require.Len(t, res.SampleIDs[k], min(res.ByKind[k], Samples), k)
		}

		var md strings.Builder
		require.NoError(t, res.WriteMarkdown(&md, "baton replay --rules new.yaml --since 30d"))
		require.Contains(t, md.String(), fmt.Sprintf("| destination changed | %d |", billingOrFallback))
		require.Contains(t, md.String(), "| billing | **billing-queue** |")
		require.Contains(t, md.String(), "Rules that never matched in the period: toll-fraud.")
		var text strings.Builder
		require.NoError(t, res.WriteText(&text))
		require.Contains(t, text.String(), fmt.Sprintf("%d calls re-decided", calls))
	})

	t.Run("filters", func(t *testing.T) {
		n, err := chreplay.Count(t.Context(), conn, chreplay.Window{From: from, To: to, Trunk: "sbc-east"})
		require.NoError(t, err)
		require.Equal(t, uint64(calls/2), n)
		sales := count(kinds, func(c synthcalls.Call) bool { return c.Kind == synthcalls.Sales })
		n, err = chreplay.Count(t.Context(), conn, chreplay.Window{From: from, To: to, Destination: "sales"})
		require.NoError(t, err)
		require.Equal(t, uint64(sales), n)
		half := chreplay.Window{From: from, To: from.AddDate(0, 0, 15), Trunk: "sbc-west"}
		var ids []string
		require.NoError(t, chreplay.Stream(t.Context(), conn, half, 7, func(_ context.Context, cs []chreplay.Call) error {
			require.LessOrEqual(t, len(cs), 7)
			for _, c := range cs {
				require.NotEmpty(t, c.Records)
				ids = append(ids, c.ID)
			}
			return nil
		}))
		require.True(t, slices.IsSorted(ids))
		var want []string
		for id, c := range kinds {
			if c.Trunk == "sbc-west" && id < "synth-00000120" { // the first half of the month
				want = append(want, id)
			}
		}
		slices.Sort(want)
		require.Equal(t, want, ids)
	})
}

func count(kinds map[string]synthcalls.Call, f func(synthcalls.Call) bool) int {
	n := 0
	for _, c := range kinds {
		if f(c) {
			n++
		}
	}
	return n
}
