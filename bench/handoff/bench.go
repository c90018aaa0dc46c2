package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/pkg/hops"
)

func bench(ctx context.Context, o options, w io.Writer) (err error) {
	dir := o.workDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "handoffbench-"); err != nil {
			return fmt.Errorf("work dir: %w", err)
		}
		defer func() {
			if err == nil {
				err = os.RemoveAll(dir)
			} else {
				fmt.Fprintf(os.Stderr, "handoff: logs kept in %s\n", dir)
			}
		}()
	}
	sbc, err := newSBC(ctx)
	if err != nil {
		return err
	}
	defer sbc.close()
	st := newStamps()
	var notifyErrs atomic.Int64
	sbc.onRefer = func(id string, at time.Time) { st.mark(id, pRefer, at) }
	sbc.onNotify = func(id string, at time.Time, err error) {
		st.mark(id, pNotifySent, at)
		if err != nil {
			notifyErrs.Add(1)
		}
	}

	s, err := startStack(ctx, o, dir, sbc.port)
	if err != nil {
		return err
	}
	defer s.stop()
	sbc.ingress = sip.Uri{Host: "127.0.0.1", Port: s.ingressPt}
	stopEvents, err := readEvents(ctx, s.broker, st)
	if err != nil {
		return err
	}
	defer stopEvents()
	base, err := startBaseline(ctx, s.broker)
	if err != nil {
		return err
	}
	defer base.stop()
	ag := &agent{api: s.routerAPI, hc: &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512}}}

	fmt.Fprintf(w, "handoff bench: baton broker (kfake) %s, ingress, router (agent API), transfer, analytics, clickhouse-server on loopback\n", s.broker)
	load, _ := os.ReadFile("/proc/loadavg") // shown only: a shared machine's load moves every figure
	fmt.Fprintf(w, "%d CPUs, load %s, %s; hop times from %s and the events' ce_time\n", runtime.NumCPU(),
		strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " "), runtime.Version(), hops.Env)

	// Warm up: a few calls end to end, so groups are joined and caches warm.
	if _, err := level(ctx, o, w, s, sbc, ag, base, st, "warm", 10, 10, false); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	var failed []string
	for _, rate := range o.rates {
		n := max(1, int(o.duration.Seconds()*float64(rate)))
		missing, err := level(ctx, o, w, s, sbc, ag, base, st, fmt.Sprintf("r%d", rate), rate, n, true)
		if err != nil {
			return err
		}
		if missing != "" {
			failed = append(failed, missing)
		}
	}
	if n := notifyErrs.Load(); n > 0 {
		failed = append(failed, fmt.Sprintf("%d NOTIFYs not answered 200", n))
	}
	if len(failed) > 0 {
		return fmt.Errorf("incomplete (logs in %s): %v", dir, failed)
	}
	return s.alive()
}

// level places n calls, then asks for their handoffs at rate, waits for
// the outcome rows and prints the budget.
func level(ctx context.Context, o options, w io.Writer, s *stack, sbc *sbc, ag *agent, base *baseline, st *stamps,
	prefix string, rate, n int, print bool) (string, error) {
	ids := make([]string, n)
	var callErrs atomic.Int64
	var firstErr atomic.Value
	pace(ctx, n, min(o.setupRate, max(rate, 50)), func(i int) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		id, err := sbc.call(cctx, i)
		if err != nil {
			callErrs.Add(1)
			firstErr.CompareAndSwap(nil, err)
			return
		}
		ids[i] = id
	})
	if c := callErrs.Load(); c > 0 {
		return "", fmt.Errorf("%s: %d of %d calls failed, first: %v", prefix, c, n, firstErr.Load())
	}
	// The router's view and transfer see the calls: give them a moment.
	time.Sleep(time.Second)

	var postErrs atomic.Int64
	pace(ctx, n, rate, func(i int) {
		sent, acked, err := ag.handoff(ctx, ids[i])
		st.mark(ids[i], pAgentPost, sent)
		if err != nil {
			postErrs.Add(1)
			firstErr.CompareAndSwap(nil, err)
			return
		}
		st.mark(ids[i], pAgentAcked, acked)
	})
	if c := postErrs.Load(); c > 0 {
		return "", fmt.Errorf("%s: %d of %d handoff requests failed, first: %v", prefix, c, n, firstErr.Load())
	}
	deadline := time.Now().Add(o.drain)
	done := 0
	for {
		if err := readHops(s.hopFiles, st); err != nil {
			return "", err
		}
		done = 0
		for _, id := range ids {
			final, ok1 := st.get(id, pOutcome)
			written, ok2 := st.get(id, hops.AnalyticsWritten)
			if ok1 && ok2 && !written.Before(final) {
				done++
			}
		}
		if done == n || time.Now().After(deadline) {
			break
		}
		if err := s.alive(); err != nil {
			return "", err
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !print {
		return "", nil
	}
	bs := base.measure(ctx, prefix, n, rate)
	fmt.Fprintf(w, "\n== %d handoffs/s: %d calls placed, then %d handoffs asked for; %d outcome rows written\n", rate, n, n, done)
	fmt.Fprintf(w, "%-42s %7s %9s %9s\n", "hop", "calls", "p50_ms", "p99_ms")
	var e2e, row summary
	for _, group := range [][]hop{referHops, notifyHops} {
		for _, h := range group {
			sm := summarize(st, ids, h)
			fmt.Fprintf(w, "%-42s %7d %9.2f %9.2f\n", h.name, sm.n, ms(sm.p50), ms(sm.p99))
			switch h.to {
			case pRefer:
				if h.from == pAgentPost {
					e2e = sm
				}
			case hops.AnalyticsWritten:
				if h.from == pNotifySent {
					row = sm
				}
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "%-42s %7d %9.2f %9.2f\n", "baseline: franz-go produce -> consume", bs.n, ms(bs.p50), ms(bs.p99))
	fmt.Fprintf(w, "ratios at %d/s: agent POST -> REFER / baseline: p50 %s, p99 %s; NOTIFY -> row / baseline: p50 %s, p99 %s\n",
		rate, ratio(e2e.p50, bs.p50), ratio(e2e.p99, bs.p99), ratio(row.p50, bs.p50), ratio(row.p99, bs.p99))
	if rate == 200 {
		verdict := "met"
		if e2e.p99 > 20*time.Millisecond || e2e.n == 0 {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "target agent POST -> REFER p99 <= 20 ms at 200/s: %s (%.2f ms)\n", verdict, ms(e2e.p99))
	}
	if done < n {
		return fmt.Sprintf("%s: %d of %d outcome rows", prefix, done, n), nil
	}
	return "", nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func ratio(a, b time.Duration) string {
	if b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", float64(a)/float64(b))
}
