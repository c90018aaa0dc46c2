// Command bridgecap measures how many concurrent bridged calls the media
// bridge carries on this machine: every call is two G.711 streams of 50
// packets/s (one each way); the number of calls is ramped until loss
// exceeds 0.1% or the p99 one-way delay exceeds 5 ms. Contenders measured
// in the same run: the generator alone with no relay (direct: its own
// ceiling and its own share of the delay), a minimal Go UDP relay loop
// (floor: a goroutine per socket in Go's network poller), the bridge
// with plain RTP on both legs (rtp: its sockets read by the media pump,
// internal/pump, as in the service; -linger tunes it), and the bridge
// with an SRTP destination leg (srtp: AES_CM_128_HMAC_SHA1_80; srtp-gcm:
// AEAD_AES_128_GCM).
//
// Each relay runs in a child process of its own (this binary with
// -serve); the load generator (gen.go) is this process: two sockets,
// batched I/O, one paced sender. With -pin the generator is bound to one
// core and the relay process to another, so the relay is judged on one
// core of its own. With -rt both run SCHED_FIFO, so that a shared
// machine's other load cannot delay them. For every step the relay's and
// the generator's CPU use
// (/proc/<pid>/stat), the rest of the machine's, and the UDP drops per
// side are printed, so a reader sees which saturated first.
//
// Delay: send stamp (in the payload, taken as the packet is built) to the
// kernel's receive stamp on the generator's socket. The pass criterion is
// applied to this through-relay p99 as it is (nothing subtracted); the
// direct contender shows what of it is the generator's own path.
//
// With -cpu-rounds N it does not ramp: it measures the relays at
// -cpu-calls, N times, interleaved, and prints each SRTP suite's median
// ratio of CPU per packet to the rtp bridge of the same round (rounds.go).
// Run it through bench/transfer/run.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/baton-voice/baton/services/transfer/internal/pump"
)

const (
	pps     = 50 // packets per second per stream
	maxLoss = 0.001
	maxP99  = 5 * time.Millisecond
	// saturated is the CPU share (of what a process may use) above which
	// it is called saturated.
	saturated = 90.0
	// Targets of issue 5.
	targetCalls      = 1000
	targetFloorRatio = 0.70
	targetSRTPCost   = 0.10
)

type config struct {
	levels          []int
	contenders      []contender
	step, warmup    time.Duration
	pin             bool
	genCPU, relCPU  int
	retries, batch  int
	poll            time.Duration
	rt              int
	ncpu            int
	linger          time.Duration
	relayProfile    string
	relayInfoPrints int
	// cpuRounds > 0: compare cpu per packet at cpuCalls (cpuRounds)
	// instead of ramping.
	cpuRounds, cpuCalls int
}

func main() {
	levelsFlag := flag.String("calls", "100,250,500,750,1000,1250,1500,2000", "call counts to ramp through")
	step := flag.Duration("step", 3*time.Second, "measuring time per step")
	warmup := flag.Duration("warmup", 500*time.Millisecond, "traffic before each step's measurement (latching, first packets)")
	modesFlag := flag.String("modes", "direct,floor,rtp,srtp,srtp-gcm", "contenders: direct (generator alone), floor, rtp, srtp, srtp-gcm")
	pin := flag.Bool("pin", false, "bind the generator to -gen-cpu and each relay process to -relay-cpu (one core each, GOMAXPROCS 1)")
	genCPU := flag.Int("gen-cpu", 0, "the generator's core with -pin")
	relCPU := flag.Int("relay-cpu", 1, "the relay process's core with -pin")
	retries := flag.Int("retries", 1, "measure a failing step again up to this many times (shared machine); it passes if any attempt does")
	batch := flag.Int("batch", 64, "packets per sendmmsg/recvmmsg")
	poll := flag.Duration("poll", time.Millisecond, "how long the generator's receivers sleep when their sockets are empty")
	rt := flag.Int("rt", 0, "run the relay processes in SCHED_FIFO at this priority and the generator one above (1-98, needs root; 0: no): on a shared machine it keeps others' load from delaying them")
	cpuProfile := flag.String("cpuprofile", "", "write the generator's CPU profile to this file")
	relayProfile := flag.String("relay-cpuprofile", "", "write each relay process's CPU profile to this path plus .<contender>.<calls>")
	linger := flag.Duration("linger", pump.DefaultLinger, "the bridge's media pump: pause between passes over ready sockets while packets keep coming")
	cpuRoundsFlag := flag.Int("cpu-rounds", 0, "instead of ramping, measure the relays' cpu per packet at -cpu-calls this many times, interleaved, and compare each with the rtp bridge of the same round")
	cpuCalls := flag.Int("cpu-calls", 600, "call count of the -cpu-rounds comparison")
	serveMode := flag.String("serve", "", "internal: run relays of this contender for the parent (child role)")
	serveCalls := flag.Int("n", 0, "internal: calls to serve")
	serveCPU := flag.Int("cpu", -1, "internal: core to pin the relay process to (-1: none)")
	flag.Parse()
	if *serveMode != "" {
		if err := serve(*serveMode, *serveCalls, relayOptions{cpu: *serveCPU, rt: *rt, linger: *linger, profile: *relayProfile}); err != nil {
			fmt.Fprintf(os.Stderr, "bridgecap relay: %v\n", err)
			os.Exit(1)
		}
		return
	}
	cfg := config{step: *step, warmup: *warmup, pin: *pin, genCPU: *genCPU, relCPU: *relCPU,
		retries: *retries, batch: max(1, *batch), poll: *poll, rt: *rt, ncpu: runtime.NumCPU(),
		linger: *linger, relayProfile: *relayProfile}
	for f := range strings.SplitSeq(*levelsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bridgecap: bad -calls entry %q\n", f)
			os.Exit(2)
		}
		cfg.levels = append(cfg.levels, n)
	}
	for f := range strings.SplitSeq(*modesFlag, ",") {
		c, err := contenderOf(strings.TrimSpace(f))
		if err != nil {
			fmt.Fprintf(os.Stderr, "bridgecap: %v\n", err)
			os.Exit(2)
		}
		cfg.contenders = append(cfg.contenders, c)
	}
	if *cpuRoundsFlag < 0 || *cpuCalls < 1 {
		fmt.Fprintln(os.Stderr, "bridgecap: -cpu-rounds must be >= 0 and -cpu-calls >= 1")
		os.Exit(2)
	}
	cfg.cpuRounds, cfg.cpuCalls = *cpuRoundsFlag, *cpuCalls
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	err := measure(ctx, os.Stdout, &cfg, *cpuProfile)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bridgecap: %v\n", err)
		os.Exit(1)
	}
}

func measure(ctx context.Context, w io.Writer, cfg *config, cpuProfile string) error {
	if cfg.rt != 0 {
		// One above the relays: the offered load keeps its pace and a
		// saturated machine shows in the relay's delay.
		if err := realtime(cfg.rt + 1); err != nil {
			return err
		}
	}
	if cfg.pin {
		if cfg.ncpu < 2 || cfg.genCPU == cfg.relCPU {
			return fmt.Errorf("-pin needs two distinct cores (have %d CPUs, gen %d, relay %d)", cfg.ncpu, cfg.genCPU, cfg.relCPU)
		}
		if err := pinTo(cfg.genCPU); err != nil {
			return err
		}
	}
	// The generator is one sender and two receivers that sleep between
	// passes: one P is enough, and a second only spins.
	runtime.GOMAXPROCS(1)
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer func() { _ = f.Close() }()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Fprintf(w, "machine: %d CPUs; load average at start: %s\n", cfg.ncpu, loadAverage())
	if cfg.pin {
		fmt.Fprintf(w, "pinned: generator (pid %d) %s; each relay process to cpu %d (its own report follows)\n", os.Getpid(), affinity(), cfg.relCPU)
	} else {
		fmt.Fprintf(w, "not pinned: generator (pid %d) %s; relay processes share all CPUs with it\n", os.Getpid(), affinity())
	}
	if cfg.rt == 0 {
		fmt.Fprintln(w, "scheduling: normal (the machine's other load competes with the measured processes)")
	} else {
		fmt.Fprintf(w, "scheduling: SCHED_FIFO, generator %d, relay processes %d (others run when they are idle)\n", cfg.rt+1, cfg.rt)
	}
	if cfg.cpuRounds > 0 {
		return cpuRounds(ctx, w, cfg, cfg.cpuCalls, cfg.cpuRounds)
	}
	fmt.Fprintf(w, "pass: loss <= %.1f%% and p99 <= %v; a failing step is measured again up to %d time(s) and passes if any attempt does\n",
		100*maxLoss, maxP99, cfg.retries)
	fmt.Fprint(w, `columns: pps = packets/s sent into the relay (both directions; target 100 per call);
  p50ms/p99ms = one-way delay: kernel receive stamp on the generator's socket - send stamp in the payload, i.e. the
    generator's batch write + relay + loopback both ways; the pass criterion uses this p99 as it is (nothing
    subtracted; the direct rows show the generator's own part); p99u_ms = the same up to when the generator read it
    (adds its ~1 ms polling); lag99ms = how far the generator's sender ran behind its pace (p99);
  relay%/gen% = CPU of the relay process / the generator (/proc/<pid>/stat, % of one core); rcore% = busy time of
    the relay's core, whoever ran there (pinned only); other% = the rest of the machine's busy time;
  us/pkt = relay CPU per packet relayed; drops g/r/b = UDP drops at the generator's sockets / at the relay's sockets /
    in the kernel's input backlog.
`)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-8s %5s %7s %6s %6s %6s %7s %7s %6s %6s %6s %6s %7s %11s  %s\n",
		"relay", "calls", "pps", "loss%", "p50ms", "p99ms", "p99u_ms", "lag99ms", "relay%", "rcore%", "gen%", "other%", "us/pkt", "drops g/r/b", "verdict")
	all := map[string]*ramp{}
	for _, c := range cfg.contenders {
		r := &ramp{c: c, at: map[int]stepResult{}}
		all[c.name] = r
		for _, n := range cfg.levels {
			var res stepResult
			var err error
			for attempt := 0; attempt <= cfg.retries; attempt++ {
				res, err = measureStep(ctx, w, cfg, c, n)
				if err != nil {
					break
				}
				res.retry = attempt > 0
				fmt.Fprintln(w, res.line(cfg))
				if res.pass() {
					break
				}
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				fmt.Fprintf(w, "%-8s %5d error: %v\n", c.name, n, err)
				r.failed = &stepResult{c: c, calls: n, notes: []string{"error: " + err.Error()}}
				break
			}
			r.at[n] = res
			if !res.pass() {
				r.failed = &res
				break
			}
			r.capacity = n
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "load average at end: %s\n", loadAverage())
	summary(w, cfg, all)
	return nil
}

// ramp is one contender's steps.
type ramp struct {
	c        contender
	at       map[int]stepResult // the deciding attempt of each step
	capacity int                // largest passing step
	failed   *stepResult        // the step that ended the ramp, nil if none did
}

type stepResult struct {
	c                  contender
	calls              int
	retry              bool
	sent, received     uint64
	took               time.Duration
	p50, p99, p99user  time.Duration
	lag99              time.Duration
	relayPct, genPct   float64
	otherPct, stealPct float64
	relayCorePct       float64 // -1 unless pinned
	usPerPacket        float64
	genDrops, relDrops uint64
	backlog            uint64
	notes              []string
}

func (r *stepResult) loss() float64 {
	if r.sent == 0 {
		return 1
	}
	return max(0, float64(r.sent)-float64(r.received)) / float64(r.sent)
}

func (r *stepResult) pass() bool { return r.sent > 0 && r.loss() <= maxLoss && r.p99 <= maxP99 }

func (r *stepResult) line(cfg *config) string {
	verdict := "ok"
	if !r.pass() {
		var why []string
		if r.loss() > maxLoss {
			why = append(why, "loss")
		}
		if r.p99 > maxP99 {
			why = append(why, "p99")
		}
		verdict = "FAIL(" + strings.Join(why, ",") + ")"
	}
	if r.retry {
		verdict += " retry"
	}
	if len(r.notes) > 0 {
		verdict += ": " + strings.Join(r.notes, "; ")
	}
	rcore := "-"
	if cfg.pin && r.c.relay != "" {
		rcore = fmt.Sprintf("%.0f", r.relayCorePct)
	}
	relay, us := "-", "-"
	if r.c.relay != "" {
		relay = fmt.Sprintf("%.0f", r.relayPct)
		us = fmt.Sprintf("%.2f", r.usPerPacket)
	}
	return fmt.Sprintf("%-8s %5d %7.0f %6.3f %6.2f %6.2f %7.2f %7.2f %6s %6s %6.0f %6.0f %7s %11s  %s",
		r.c.name, r.calls, float64(r.sent)/r.took.Seconds(), 100*r.loss(), ms(r.p50), ms(r.p99), ms(r.p99user), ms(r.lag99),
		relay, rcore, r.genPct, r.otherPct, us, fmt.Sprintf("%d/%d/%d", r.genDrops, r.relDrops, r.backlog), verdict)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// measureStep runs contender c at n calls once.
func measureStep(ctx context.Context, w io.Writer, cfg *config, c contender, n int) (stepResult, error) {
	var targets []target
	relayPid := 0
	relayPorts := map[uint16]bool{}
	if c.relay != "" {
		cpu := -1
		if cfg.pin {
			cpu = cfg.relCPU
		}
		rp, err := startRelayProc(ctx, c, n, relayOptions{cpu: cpu, rt: cfg.rt, linger: cfg.linger, profile: cfg.relayProfile})
		if err != nil {
			return stepResult{}, err
		}
		defer rp.stop()
		if cfg.relayInfoPrints == 0 {
			fmt.Fprintf(w, "relay process (pid %d) reports: %s\n", rp.pid, rp.info)
			cfg.relayInfoPrints++
		}
		targets, relayPid = rp.targets, rp.pid
		for _, t := range targets {
			relayPorts[t.callerPort], relayPorts[t.destPort] = true, true
		}
	}
	g, err := newGenerator(c, targets, n, cfg.batch, cfg.poll)
	if err != nil {
		return stepResult{}, err
	}
	defer g.close()
	genPorts := map[uint16]bool{}
	for _, p := range g.ports() {
		genPorts[p] = true
	}
	before, after, err := g.run(cfg.warmup, cfg.step, func() (stepCounters, error) {
		return readCounters(relayPid, genPorts, relayPorts)
	})
	if err != nil {
		return stepResult{}, err
	}
	return result(cfg, c, n, g, before, after), nil
}

// result turns what the generator and the kernel counted into a step's
// figures and notes.
func result(cfg *config, c contender, n int, g *generator, before, after stepCounters) stepResult {
	took := after.at.Sub(before.at)
	pct := func(d time.Duration) float64 { return 100 * float64(d) / float64(took) }
	r := stepResult{c: c, calls: n, sent: g.sent, took: took, lag99: g.lag.quantile(0.99), relayCorePct: -1,
		genDrops: after.genDrops - before.genDrops, relDrops: after.relDrops - before.relDrops,
		backlog: after.backlog - before.backlog}
	delay, user := newHistogram(), newHistogram()
	var unknown, bad, misrouted, noStamp, rxErrors uint64
	for _, rx := range g.rx {
		r.received += rx.received
		delay.merge(rx.delay)
		user.merge(rx.user)
		unknown += rx.unknown
		bad += rx.bad
		misrouted += rx.misrouted
		noStamp += rx.noStamp
		rxErrors += rx.errors
	}
	r.p50, r.p99, r.p99user = delay.quantile(0.50), delay.quantile(0.99), user.quantile(0.99)
	relayCPU := after.relayCPU - before.relayCPU
	r.relayPct = pct(relayCPU)
	r.genPct = pct(after.genCPU - before.genCPU)
	busy := pct(after.machine.busy - before.machine.busy)
	r.otherPct = max(0, busy-r.relayPct-r.genPct)
	r.stealPct = pct(after.machine.steal - before.machine.steal)
	if cfg.pin && c.relay != "" && cfg.relCPU < len(after.machine.core) && cfg.relCPU < len(before.machine.core) {
		r.relayCorePct = pct(after.machine.core[cfg.relCPU] - before.machine.core[cfg.relCPU])
	}
	if r.sent > 0 {
		r.usPerPacket = float64(relayCPU.Microseconds()) / float64(r.sent)
	}
	// Who saturated: each pinned process may use one core; unpinned, the
	// machine is shared and only its total says it is full.
	if cfg.pin {
		if c.relay != "" && r.relayPct >= saturated {
			r.notes = append(r.notes, fmt.Sprintf("relay saturated (%.0f%% of its core)", r.relayPct))
		}
		if r.genPct >= saturated {
			r.notes = append(r.notes, fmt.Sprintf("GENERATOR saturated (%.0f%% of its core)", r.genPct))
		}
	} else if capacity := 100 * float64(cfg.ncpu); busy >= saturated/100*capacity {
		r.notes = append(r.notes, fmt.Sprintf("machine busy %.0f%% of %.0f%%", busy, capacity))
	}
	if r.lag99 > maxP99 {
		r.notes = append(r.notes, fmt.Sprintf("GENERATOR late (p99 %.1f ms behind its pace)", ms(r.lag99)))
	}
	if want := float64(2*n*pps) * took.Seconds(); float64(r.sent) < 0.98*want {
		r.notes = append(r.notes, fmt.Sprintf("GENERATOR short: sent %.0f%% of the pace", 100*float64(r.sent)/want))
	}
	if r.stealPct >= 5 {
		r.notes = append(r.notes, fmt.Sprintf("steal %.0f%%", r.stealPct))
	}
	if r.genDrops > 0 {
		r.notes = append(r.notes, fmt.Sprintf("%d dropped at the generator's sockets", r.genDrops))
	}
	if g.sendErrors > 0 {
		r.notes = append(r.notes, fmt.Sprintf("%d send errors", g.sendErrors))
	}
	for _, x := range []struct {
		n    uint64
		what string
	}{{unknown, "from unknown ports"}, {bad, "undecodable"}, {misrouted, "misrouted"}, {noStamp, "without kernel stamp"},
		{rxErrors, "receive errors"}} {
		if x.n > 0 {
			r.notes = append(r.notes, fmt.Sprintf("%d %s", x.n, x.what))
		}
	}
	return r
}

// summary prints each contender's capacity and the ratios against the
// targets.
func summary(w io.Writer, cfg *config, all map[string]*ramp) {
	where := "unpinned: relay and generator share all cores"
	if cfg.pin {
		where = fmt.Sprintf("relay pinned to cpu %d alone, generator to cpu %d", cfg.relCPU, cfg.genCPU)
	}
	fmt.Fprintf(w, "capacity = largest passing step (%s):\n", where)
	top := slices.Max(cfg.levels)
	direct, hasDirect := all["direct"]
	for _, c := range cfg.contenders {
		r := all[c.name]
		s := fmt.Sprintf(">= %d calls (passed every step)", r.capacity)
		if r.failed != nil {
			s = fmt.Sprintf("%d calls (failed at %d", r.capacity, r.failed.calls)
			if len(r.failed.notes) > 0 {
				s += ": " + strings.Join(r.failed.notes, "; ")
			}
			s += ")"
		}
		if c.relay == "" {
			s += "  <- the generator alone: no relay can be judged above this"
		} else if generatorBound(r, direct, hasDirect) {
			s += "  <- GENERATOR-BOUND: the relay's real capacity may be higher"
		}
		fmt.Fprintf(w, "  %-8s %s\n", c.name, s)
	}
	floor, okF := all["floor"]
	rtp, okR := all["rtp"]
	if okF && okR && floor.capacity > 0 {
		ratio := float64(rtp.capacity) / float64(floor.capacity)
		var caveat string
		switch {
		case floor.failed == nil && rtp.failed == nil:
			caveat = fmt.Sprintf(" (both passed every step up to %d: the ramp is too short to compare)", top)
		case floor.failed == nil:
			caveat = fmt.Sprintf(" (the floor passed every step up to %d: its capacity is a lower bound, this ratio an upper bound)", top)
		}
		fmt.Fprintf(w, "bridge rtp / floor capacity: %d/%d = %.2f (target >= %.2f: %s)%s\n", rtp.capacity, floor.capacity, ratio,
			targetFloorRatio, yesNo(ratio >= targetFloorRatio), caveat)
	}
	for _, name := range []string{"rtp", "srtp", "srtp-gcm"} {
		r, ok := all[name]
		if !ok {
			continue
		}
		s := fmt.Sprintf("bridge %s capacity >= %d calls: %s", name, targetCalls, meets(r, targetCalls))
		if okR && r != rtp && rtp.capacity > 0 {
			s += fmt.Sprintf("; %.2f of rtp's capacity", float64(r.capacity)/float64(rtp.capacity))
		}
		fmt.Fprintln(w, s)
	}
	cpuRatios(w, cfg, all)
}

// cpuRatios prints the relays' CPU per packet at every step all of them
// passed, and the median over those steps of each one's ratio to the
// floor and (SRTP) to the bridge with RTP: on a shared machine one step's
// figure can be off by 20%.
func cpuRatios(w io.Writer, cfg *config, all map[string]*ramp) {
	var relays []*ramp
	for _, c := range cfg.contenders {
		if c.relay != "" {
			relays = append(relays, all[c.name])
		}
	}
	if len(relays) == 0 {
		return
	}
	var common []int
	for _, n := range cfg.levels {
		ok := true
		for _, r := range relays {
			if res, has := r.at[n]; !has || !res.pass() {
				ok = false
			}
		}
		if ok {
			common = append(common, n)
		}
	}
	if len(common) == 0 {
		fmt.Fprintln(w, "cpu per packet: no step passed by every relay")
		return
	}
	fmt.Fprintln(w, "relay cpu per packet relayed (us), at the steps every relay passed:")
	head := fmt.Sprintf("  %-8s", "calls")
	for _, r := range relays {
		head += fmt.Sprintf(" %9s", r.c.name)
	}
	fmt.Fprintln(w, head)
	for _, n := range common {
		row := fmt.Sprintf("  %-8d", n)
		for _, r := range relays {
			row += fmt.Sprintf(" %9.2f", r.at[n].usPerPacket)
		}
		fmt.Fprintln(w, row)
	}
	// median ratio of a to b over the common steps (0 if b is missing).
	median := func(a, b *ramp) float64 {
		var rs []float64
		for _, n := range common {
			if x, y := a.at[n].usPerPacket, b.at[n].usPerPacket; x > 0 && y > 0 {
				rs = append(rs, x/y)
			}
		}
		if len(rs) == 0 {
			return 0
		}
		slices.Sort(rs)
		if len(rs)%2 == 1 {
			return rs[len(rs)/2]
		}
		return (rs[len(rs)/2-1] + rs[len(rs)/2]) / 2
	}
	floor, hasFloor := all["floor"]
	rtp, hasRTP := all["rtp"]
	top := common[len(common)-1]
	for _, r := range relays {
		s := fmt.Sprintf("  %-8s %.0f calls per busy core (cpu per packet at %d calls)", r.c.name, 1e6/(r.at[top].usPerPacket*2*pps), top)
		if hasFloor && r != floor {
			s += fmt.Sprintf("; median %.2fx the floor's cpu per packet", median(r, floor))
		}
		if hasRTP && r.c.suite != "" {
			extra := median(r, rtp) - 1
			s += fmt.Sprintf("; median %+.0f%% vs rtp (target <= +%.0f%%: %s)", 100*extra, 100*targetSRTPCost, yesNo(extra <= targetSRTPCost))
		}
		fmt.Fprintln(w, s)
	}
}

// generatorBound says whether r's limit may be the generator's: the
// failing step was the generator's (saturated, late, short, its socket
// dropping), or the generator alone did no better.
func generatorBound(r, direct *ramp, hasDirect bool) bool {
	if r.failed == nil {
		return false
	}
	for _, n := range r.failed.notes {
		if strings.Contains(n, "GENERATOR") || strings.Contains(n, "generator's sockets") {
			return true
		}
	}
	return hasDirect && direct.failed != nil && direct.capacity <= r.capacity
}

// meets says whether r's capacity reached target calls.
func meets(r *ramp, target int) string {
	switch {
	case r.capacity >= target:
		return fmt.Sprintf("yes (%d)", r.capacity)
	case r.failed == nil:
		return fmt.Sprintf("not shown (passed every step, the ramp ended at %d)", r.capacity)
	}
	return fmt.Sprintf("NO (%d)", r.capacity)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
