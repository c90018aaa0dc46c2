package whatif

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/cmd/baton/internal/chreplay"
	"github.com/baton-voice/baton/cmd/baton/internal/replay"
	"github.com/baton-voice/baton/cmd/baton/internal/synthcalls"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// fakeSource yields n synthetic calls (facts only) in batches.
func fakeSource(t *testing.T, n int) Source {
	t.Helper()
	from := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	return func(ctx context.Context, batch int, fn func(context.Context, []chreplay.Call) error) error {
		return synthcalls.Generate(ctx, synthcalls.Config{Calls: n, From: from, To: from.Add(time.Hour), Seed: 5}, batch,
			func(ctx context.Context, cs []synthcalls.Call) error {
				out := make([]chreplay.Call, len(cs))
				for i, c := range cs {
					out[i] = chreplay.Call{ID: c.ID, Records: c.Records}
				}
				return fn(ctx, out)
			})
	}
}

// refuseEvery is a Decider (a unit-test double of the router) that
// refuses each call's handoff request, and fails on batch failAt (from
// 1; 0 never).
func refuseEvery(failAt int32) Decider {
	var batches atomic.Int32
	return func(ctx context.Context, recs []replay.Record) (Decided, error) {
		if batches.Add(1) == failAt {
			return Decided{}, errors.New("router replay: exit status 1")
		}
		var out []replay.Record
		for _, s := range replay.Steps(recs) {
			if s.Event.Type != events.TypeHandoffRequested {
				continue
			}
			ev, err := events.New("baton/router/test", s.Event.Subject, &batonv1.HandoffRefused{ReasonCode: "route_not_allowed"}, s.Event.Time)
			if err != nil {
				return Decided{}, err
			}
			rec, err := events.Encode("baton.handoffs", ev)
			if err != nil {
				return Decided{}, err
			}
			out = append(out, replay.Record{Topic: rec.Topic, Key: rec.Key, Value: rec.Value, Headers: rec.Headers})
		}
		return Decided{Records: out, Matches: map[string]int{"billing": 1}}, nil
	}
}

func rulesFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rules.yaml")
	require.NoError(t, os.WriteFile(path, []byte("rules:\n  - name: billing\n  - name: never\n"), 0o600))
	return path
}

// Every call's new refusal is counted as gained, once per call; rule
// matches add up over batches; progress is reported per batch; the
// result is the same with one worker and with several.
func TestRunAggregates(t *testing.T) {
	rules := rulesFile(t)
	var results []string
	for _, workers := range []int{1, 3} {
		var progress []int
		res, err := Run(t.Context(), fakeSource(t, 25), refuseEvery(0), Options{Rules: rules, Batch: 4, Workers: workers,
			Total: 25, Progress: func(done int, total uint64, _ time.Duration) {
				require.Equal(t, uint64(25), total)
				progress = append(progress, done)
			}})
		require.NoError(t, err)
		require.Equal(t, 25, res.Calls)
		require.Equal(t, 25, res.ByKind[RefusalGained])
		require.Equal(t, 25, res.Changed)
		require.Equal(t, 7, res.RuleHits["billing"], "one per batch of 4 calls")
		require.Equal(t, []string{"never"}, res.NeverMatched())
		require.Equal(t, []int{4, 8, 12, 16, 20, 24, 25}, progress)
		results = append(results, fmt.Sprint(res.ByKind, res.SampleIDs, res.Matrix))
	}
	require.Equal(t, results[0], results[1])
}

// A batch that fails stops the run with its error.
func TestRunStopsOnError(t *testing.T) {
	for _, workers := range []int{1, 3} {
		_, err := Run(t.Context(), fakeSource(t, 40), refuseEvery(3), Options{Rules: rulesFile(t), Batch: 4, Workers: workers})
		require.ErrorContains(t, err, "router replay: exit status 1", "workers %d", workers)
	}
}
