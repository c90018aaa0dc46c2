// Package whatif re-decides every call of a period with a new router
// configuration and sums up what would change: calls whose destination,
// method or headers differ, a from → to matrix of targets, refusals gained
// and lost, sample call ids per kind of change, and the rules that never
// matched. Each call goes through the router's own decision code (`router
// replay`, the fold the service runs) and replay.Diff, the same comparison
// as `baton replay --call ID --rules FILE`.
package whatif

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/baton-voice/baton/cmd/baton/internal/chreplay"
	"github.com/baton-voice/baton/cmd/baton/internal/replay"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// Kind is a kind of change a call can have; a call may have several.
type Kind string

// Kinds, in the order reports list them.
const (
	Destination    Kind = "destination changed"
	Method         Kind = "method changed"
	Headers        Kind = "headers changed"
	Route          Kind = "route changed"
	OtherFields    Kind = "other fields changed"
	RefusalGained  Kind = "refusal gained"
	RefusalLost    Kind = "refusal lost"
	OnlyRecorded   Kind = "no longer decided"
	OnlyRedecided  Kind = "newly decided"
	NotRecordedCnt Kind = "not answerable from the recording"
)

// Kinds lists every kind in report order.
var Kinds = []Kind{Destination, Method, Headers, Route, OtherFields, RefusalGained, RefusalLost, OnlyRecorded, OnlyRedecided, NotRecordedCnt}

// Samples is how many call ids a report keeps per kind.
const Samples = 5

// Result is the aggregate over the period.
type Result struct {
	Rules      string
	From, To   time.Time
	Trunk      string
	Dest       string
	Calls      int
	Changed    int
	Decisions  int // recorded
	Redecided  int
	ByKind     map[Kind]int
	SampleIDs  map[Kind][]string
	Matrix     map[[2]string]int // recorded target → re-decided target, per decision
	RulesNames []string          // rules of the new configuration, in file order
	RuleHits   map[string]int    // rule name → calls it matched
	Elapsed    time.Duration
	// PerCall holds each call's comparison when Options.KeepCalls is set
	// (tests compare them call by call); nil otherwise.
	PerCall map[string]replay.Comparison
}

// NeverMatched lists the rules of the new configuration that matched no
// call of the period.
func (r *Result) NeverMatched() []string {
	var out []string
	for _, n := range r.RulesNames {
		if r.RuleHits[n] == 0 {
			out = append(out, n)
		}
	}
	return out
}

// Throughput is calls re-decided per second.
func (r *Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Calls) / r.Elapsed.Seconds()
}

// Options for Run.
type Options struct {
	Rules  string
	Window chreplay.Window
	// Batch is how many calls go to one router process.
	Batch int
	// Total is the number of calls expected, for progress; 0 if unknown.
	Total uint64
	// Progress is called after every batch; may be nil.
	Progress func(done int, total uint64, elapsed time.Duration)
	// KeepCalls keeps every call's comparison in Result.PerCall.
	KeepCalls bool
	// Workers is how many batches are re-decided at once (router
	// processes); at least 1.
	Workers int
}

// Source streams the period's calls in batches: chreplay.Stream bound to
// a connection and window.
type Source func(ctx context.Context, batch int, fn func(context.Context, []chreplay.Call) error) error

// Run re-decides every call src yields and aggregates the differences.
func Run(ctx context.Context, src Source, decide Decider, o Options) (*Result, error) {
	names, err := RuleNames(o.Rules)
	if err != nil {
		return nil, err
	}
	res := &Result{
		Rules: o.Rules, From: o.Window.From, To: o.Window.To, Trunk: o.Window.Trunk, Dest: o.Window.Destination,
		ByKind: map[Kind]int{}, SampleIDs: map[Kind][]string{}, Matrix: map[[2]string]int{},
		RulesNames: names, RuleHits: map[string]int{},
	}
	if o.KeepCalls {
		res.PerCall = map[string]replay.Comparison{}
	}
	batch := o.Batch
	if batch < 1 {
		batch = 500
	}
	workers := max(o.Workers, 1)
	began := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// Batches are decided by up to workers router processes at once and
	// added to the aggregate in the order they were read, so the result
	// (sample ids included) does not depend on which finished first. At
	// most 2*workers batches are held.
	type job struct {
		calls []chreplay.Call
		done  chan decidedBatch
	}
	jobs := make(chan job)
	order := make(chan job, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				j.done <- decideBatch(ctx, decide, j.calls)
			}
		})
	}
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for j := range order {
			b := <-j.done
			if b.err != nil {
				cancel(b.err)
				continue
			}
			for rule, n := range b.matches {
				res.RuleHits[rule] += n
			}
			for _, cmp := range b.cmps {
				res.add(cmp)
			}
			if o.Progress != nil {
				o.Progress(res.Calls, o.Total, time.Since(began))
			}
		}
	}()
	err = src(ctx, batch, func(ctx context.Context, calls []chreplay.Call) error {
		j := job{calls: calls, done: make(chan decidedBatch, 1)}
		select {
		case order <- j:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		select {
		case jobs <- j:
			return nil
		case <-ctx.Done():
			j.done <- decidedBatch{err: context.Cause(ctx)}
			return context.Cause(ctx)
		}
	})
	close(jobs)
	wg.Wait()
	close(order)
	<-collected
	res.Elapsed = time.Since(began)
	// A batch that failed cancelled ctx: its error says why, not the
	// cancellation the source saw.
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	return res, err
}

// decidedBatch is one batch's comparisons, or why it failed.
type decidedBatch struct {
	cmps    []replay.Comparison
	matches map[string]int
	err     error
}

// decideBatch re-decides a batch of calls and compares each call.
func decideBatch(ctx context.Context, decide Decider, calls []chreplay.Call) decidedBatch {
	if err := ctx.Err(); err != nil {
		return decidedBatch{err: context.Cause(ctx)}
	}
	var all []replay.Record
	for _, c := range calls {
		all = append(all, c.Records...)
	}
	decided, err := decide(ctx, all)
	if err != nil {
		return decidedBatch{err: err}
	}
	byCall := map[string][]replay.Record{}
	for _, d := range decided.Records {
		byCall[string(d.Key)] = append(byCall[string(d.Key)], d)
	}
	b := decidedBatch{cmps: make([]replay.Comparison, len(calls)), matches: decided.Matches}
	for i, c := range calls {
		b.cmps[i] = replay.Diff(c.ID, c.Records, byCall[c.ID])
	}
	return b
}

// add adds one call's comparison to the aggregate.
func (r *Result) add(cmp replay.Comparison) {
	callID := cmp.CallID
	r.Calls++
	r.Decisions += cmp.Recorded
	r.Redecided += cmp.Redecided
	if r.PerCall != nil {
		r.PerCall[callID] = cmp
	}
	kinds := map[Kind]bool{}
	for _, row := range cmp.Rows {
		from, to := Target(row.Recorded), Target(row.Redecided)
		if row.Verdict != replay.NotRecorded {
			r.Matrix[[2]string{from, to}]++
		}
		for _, k := range rowKinds(row) {
			kinds[k] = true
		}
	}
	if len(kinds) > 0 {
		r.Changed++
	}
	for k := range kinds {
		r.ByKind[k]++
		if len(r.SampleIDs[k]) < Samples {
			r.SampleIDs[k] = append(r.SampleIDs[k], callID)
		}
	}
}

// rowKinds says what kinds of change one decision row is.
func rowKinds(row replay.Row) []Kind {
	switch row.Verdict {
	case replay.Same:
		return nil
	case replay.NotRecorded:
		return []Kind{NotRecordedCnt}
	case replay.OnlyRecorded:
		if isRefusal(row.Recorded) {
			return []Kind{RefusalLost}
		}
		return []Kind{OnlyRecorded}
	case replay.OnlyRedecided:
		if isRefusal(row.Redecided) {
			return []Kind{RefusalGained}
		}
		return []Kind{OnlyRedecided}
	}
	recRef, redRef := isRefusal(row.Recorded), isRefusal(row.Redecided)
	switch {
	case !recRef && redRef:
		return []Kind{RefusalGained}
	case recRef && !redRef:
		return []Kind{RefusalLost}
	}
	var out []Kind
	seen := map[Kind]bool{}
	for _, c := range row.Changes {
		k := OtherFields
		switch {
		case strings.HasPrefix(c, "destination:"):
			k = Destination
		case strings.HasPrefix(c, "method:"):
			k = Method
		case strings.HasPrefix(c, "header "):
			k = Headers
		case strings.HasPrefix(c, "route:"):
			k = Route
		}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

func isRefusal(ev *events.Event) bool {
	return ev != nil && ev.Type == events.TypeHandoffRefused
}

// Target names where a decision sends the call, for the matrix: the
// destination (or route when it has none), "BYE (end the call)",
// "refused" or "nothing".
func Target(ev *events.Event) string {
	if ev == nil {
		return "nothing"
	}
	switch m := ev.Data.(type) {
	case *batonv1.HandoffCommand:
		switch {
		case m.GetDestination() != "":
			return m.GetDestination()
		case m.GetRoute() != "":
			return m.GetRoute()
		}
		return strings.TrimPrefix(m.GetMethod().String(), "METHOD_") + " (end the call)"
	case *batonv1.HandoffRefused:
		return "refused"
	}
	return ev.Type
}

// RuleNames reads the names of the rules in a router configuration file,
// in file order. The router validates the file when it re-decides; this
// only needs the names.
func RuleNames(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	var doc struct {
		Rules []struct {
			Name string `yaml:"name"`
		} `yaml:"rules"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("rules %s: %w", path, err)
	}
	var out []string
	for _, r := range doc.Rules {
		out = append(out, r.Name)
	}
	return out, nil
}

// matrixRows are the matrix cells, largest first, then by name.
func (r *Result) matrixRows() [][2]string {
	keys := slices.Collect(maps.Keys(r.Matrix))
	slices.SortFunc(keys, func(a, b [2]string) int {
		if d := r.Matrix[b] - r.Matrix[a]; d != 0 {
			return d
		}
		if c := strings.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	})
	return keys
}
