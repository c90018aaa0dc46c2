// Command agentbench measures what an agent stream costs ingress: many
// concurrent calls streaming both ways between RTP and a local Media
// Streams bot, against the floor of relaying the same RTP through the
// same kind of socket (a goroutine per socket reading and writing back),
// measured in the same run. The media side (ingress's rtp and agent
// packages, or the relay) runs in a child process, so its CPU is its own;
// the callers and the bot run in this process. bench/agent/run.sh runs it.
//
//	agentbench [--streams 500] [--duration 20s]         (both modes, printed side by side)
//	agentbench media --mode agent|relay --bot URL       (the child; reads caller ports on stdin)
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/baton-voice/baton/pkg/agentbot"
	"github.com/baton-voice/baton/services/ingress/internal/agent"
	"github.com/baton-voice/baton/services/ingress/internal/rtp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if len(os.Args) > 1 && os.Args[1] == "media" {
		err = media(ctx, os.Args[2:], os.Stdout)
	} else {
		err = bench(ctx, os.Args[1:])
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentbench:", err)
		os.Exit(1)
	}
}

// result is what one mode measured.
type result struct {
	mode             string
	streams          int
	cpu              time.Duration // the media process's utime+stime
	harnessCPU       time.Duration // this process's (callers and bot) in the same window
	framesIn         uint64        // caller frames into the media side
	framesOut        uint64        // frames out of it (to the bot, or RTP back)
	agentIn, played  uint64
	late, dropped    uint64
	latIn, latOut    []time.Duration // RTP in → WS out; WS in → RTP out (or RTP in → RTP out for the relay)
	spacing          []time.Duration // |inter-arrival − 20 ms| of the RTP the callers received
	connectFailures  int
	mediaChildStatus string
}

func bench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("agentbench", flag.ContinueOnError)
	streams := fs.Int("streams", 500, "concurrent calls")
	duration := fs.Duration("duration", 20*time.Second, "measured time per mode")
	if err := fs.Parse(args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var results []*result
	for _, mode := range []string{"relay", "agent"} {
		r, err := run(ctx, self, mode, *streams, *duration)
		if err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
		results = append(results, r)
	}
	print(os.Stdout, results)
	return nil
}

// base is the clock the timestamps in payloads count from.
var base = time.Now()

func stamp(b []byte) { binary.BigEndian.PutUint64(b, uint64(time.Since(base))) }

func since(b []byte) time.Duration {
	return time.Since(base) - time.Duration(binary.BigEndian.Uint64(b))
}

// frame is 160 bytes of µ-law that is never silence, a timestamp first.
func frame() []byte {
	b := make([]byte, 160)
	for i := range b {
		b[i] = byte(i) & 0x7f
	}
	stamp(b)
	return b
}

func run(ctx context.Context, self, mode string, n int, d time.Duration) (*result, error) {
	r := &result{mode: mode, streams: n}
	var mu sync.Mutex
	record := func(dst *[]time.Duration, v time.Duration) {
		mu.Lock()
		*dst = append(*dst, v)
		mu.Unlock()
	}
	measuring := make(chan struct{})
	var measured, botIn uint64Counter
	bot := httptest.NewServer(&agentbot.Handler{Serve: func(ctx context.Context, s *agentbot.Session) {
		go func() { // the agent speaks in real time, 20 ms per message
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-s.Stopped():
					return
				case <-t.C:
					if s.SendMedia(ctx, frame()) != nil {
						return
					}
				}
			}
		}()
		for {
			select {
			case p := <-s.Media():
				botIn.add(1)
				if isMeasuring(measuring) && len(p) >= 8 {
					record(&r.latIn, since(p))
				}
			case <-s.Stopped():
				return
			}
		}
	}})
	defer bot.Close()

	// The callers' sockets.
	callers := make([]*net.UDPConn, n)
	for i := range callers {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil, err
		}
		defer func() { _ = c.Close() }()
		callers[i] = c
	}
	cmd := exec.CommandContext(ctx, self, "media", "--mode", mode, "--bot", "ws"+strings.TrimPrefix(bot.URL, "http")+"/media")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	for _, c := range callers {
		fmt.Fprintln(stdin, c.LocalAddr().(*net.UDPAddr).Port)
	}
	fmt.Fprintln(stdin, "go")
	out := bufio.NewScanner(stdout)
	targets := make([]*net.UDPAddr, 0, n)
	for len(targets) < n && out.Scan() {
		line := out.Text()
		if strings.HasPrefix(line, "fail ") {
			r.connectFailures++
			targets = append(targets, nil)
			continue
		}
		port, err := strconv.Atoi(line)
		if err != nil {
			return nil, fmt.Errorf("media side said %q", line)
		}
		targets = append(targets, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	}
	// Receive what comes back, on every caller socket.
	var wg sync.WaitGroup
	var received uint64Counter
	for _, c := range callers {
		wg.Go(func() {
			buf := make([]byte, 1500)
			var last time.Duration
			for {
				nb, err := c.Read(buf)
				if err != nil {
					return
				}
				now := time.Since(base)
				if nb < 12+8 || buf[12] == 0xff { // not ours, or silence
					continue
				}
				received.add(1)
				if isMeasuring(measuring) {
					record(&r.latOut, since(buf[12:]))
					if last != 0 {
						record(&r.spacing, (now - last - 20*time.Millisecond).Abs())
					}
				}
				last = now
			}
		})
	}
	// Send: every caller a frame every 20 ms, spread over the tick.
	sendCtx, stopSending := context.WithCancel(ctx)
	defer stopSending()
	go func() {
		pkt := make([]byte, 12+160)
		pkt[0], pkt[1] = 0x80, 0
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for seq := uint16(0); ; seq++ {
			for i, c := range callers {
				if targets[i] == nil {
					continue
				}
				binary.BigEndian.PutUint16(pkt[2:], seq)
				binary.BigEndian.PutUint32(pkt[4:], uint32(seq)*160)
				binary.BigEndian.PutUint32(pkt[8:], uint32(i))
				copy(pkt[12:], frame())
				_, _ = c.WriteToUDP(pkt, targets[i])
				measured.add(1)
			}
			select {
			case <-sendCtx.Done():
				return
			case <-t.C:
			}
		}
	}()
	time.Sleep(3 * time.Second) // warm up: every stream open and flowing
	cpu0, err := cpuOf(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	self0, err := cpuOf(os.Getpid())
	if err != nil {
		return nil, err
	}
	in0, out0, bot0 := measured.get(), received.get(), botIn.get()
	close(measuring)
	time.Sleep(d)
	cpu1, err := cpuOf(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	self1, err := cpuOf(os.Getpid())
	if err != nil {
		return nil, err
	}
	r.cpu = cpu1 - cpu0
	r.harnessCPU = self1 - self0
	r.framesIn = measured.get() - in0
	if mode == "agent" {
		r.framesOut = botIn.get() - bot0
		r.agentIn = received.get() - out0
	} else {
		r.framesOut = received.get() - out0
	}
	stopSending()
	_ = stdin.Close() // the child prints its counters and exits
	var stats mediaStats
	for out.Scan() {
		if err := json.Unmarshal(out.Bytes(), &stats); err == nil {
			break
		}
	}
	r.late, r.dropped, r.played = stats.Late, stats.Dropped, stats.Played
	if err := cmd.Wait(); err != nil {
		r.mediaChildStatus = err.Error()
	}
	for _, c := range callers {
		_ = c.Close()
	}
	wg.Wait()
	return r, nil
}

func isMeasuring(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

type uint64Counter struct {
	mu sync.Mutex
	n  uint64
}

func (c *uint64Counter) add(d uint64) { c.mu.Lock(); c.n += d; c.mu.Unlock() }
func (c *uint64Counter) get() uint64  { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

// cpuOf is a process's user+system CPU time (/proc/PID/stat).
func cpuOf(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, err1 := strconv.ParseUint(fields[11], 10, 64)
	st, err2 := strconv.ParseUint(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const tck = 100 // CLK_TCK on Linux
	return time.Duration(ut+st) * time.Second / tck, nil
}

// mediaStats is what the child reports when it ends.
type mediaStats struct {
	Late, Dropped, Played uint64
}

// media is the child: the ingress side of n calls (agent), or the relay.
func media(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("media", flag.ContinueOnError)
	mode := fs.String("mode", "agent", "agent or relay")
	bot := fs.String("bot", "", "the bot's ws:// URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	var peers []int
	for in.Scan() && in.Text() != "go" {
		p, err := strconv.Atoi(in.Text())
		if err != nil {
			return err
		}
		peers = append(peers, p)
	}
	if path := os.Getenv("AGENTBENCH_CPUPROFILE"); path != "" && *mode == "agent" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
	}
	logger := slog.New(slog.DiscardHandler)
	alloc := rtp.NewAllocator("127.0.0.1", 30000, 30000+2*len(peers)+200)
	var streams []*agent.Stream
	var sessions []*rtp.Session
	var relays []*net.UDPConn
	for _, p := range peers {
		remote := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p))
		switch *mode {
		case "relay":
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				return err
			}
			relays = append(relays, c)
			go func() {
				buf := make([]byte, 1500)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					_, _ = c.WriteToUDPAddrPort(buf[:n], remote)
				}
			}()
			fmt.Fprintln(out, c.LocalAddr().(*net.UDPAddr).Port)
		default:
			s, err := alloc.Open(nil, nil)
			if err != nil {
				return err
			}
			s.SetMedia(rtp.Media{Codec: "PCMU", PayloadType: 0, ClockRate: 8000, EventPayloadType: -1}, remote, true)
			st, err := agent.Dial(ctx, agent.Endpoint{URL: *bot, Format: agent.FormatMulaw, ConnectTimeout: 10 * time.Second,
				Playout: 10 * time.Second, WriteTimeout: 5 * time.Second, MaxMessage: 1 << 20},
				agent.Start{CallSid: "bench-" + strconv.Itoa(p)}, agent.Hooks{}, logger)
			if err != nil {
				fmt.Fprintln(out, "fail "+err.Error())
				_, _ = s.Close()
				continue
			}
			s.SetAudioSink(st.Caller)
			s.PlayFrom(st)
			streams = append(streams, st)
			sessions = append(sessions, s)
			fmt.Fprintln(out, s.Port())
		}
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
	var total mediaStats
	for _, st := range streams {
		x := st.Close(agent.ReasonCallEnded)
		total.Late += x.Late
		total.Dropped += x.Dropped
		total.Played += x.FramesPlayed
	}
	for _, s := range sessions {
		_, _ = s.Close()
	}
	for _, c := range relays {
		_ = c.Close()
	}
	return json.NewEncoder(out).Encode(total)
}

func pct(v []time.Duration, p float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func print(w io.Writer, rs []*result) {
	// A frame is one packet through the media side: read on one side,
	// written on the other (the relay's echo; the agent's RTP → WebSocket
	// and WebSocket → RTP).
	perFrame := func(r *result) float64 {
		n := r.framesOut + r.agentIn
		if n == 0 {
			return 0
		}
		return float64(r.cpu.Microseconds()) / float64(n)
	}
	fmt.Fprintf(w, "%-6s %7s %9s %9s %11s %11s %9s %10s %9s %9s %9s %9s %10s %8s\n", "mode", "streams", "cpu_s", "harness_s",
		"frames_in", "frames_out", "agent_in", "us/frame", "in_p50", "in_p99", "out_p50", "out_p99", "spacing99", "late")
	for _, r := range rs {
		fmt.Fprintf(w, "%-6s %7d %9.2f %9.2f %11d %11d %9d %10.2f %9s %9s %9s %9s %10s %8d\n", r.mode, r.streams, r.cpu.Seconds(), r.harnessCPU.Seconds(),
			r.framesIn, r.framesOut, r.agentIn, perFrame(r), pct(r.latIn, .5), pct(r.latIn, .99), pct(r.latOut, .5),
			pct(r.latOut, .99), pct(r.spacing, .99), r.late)
		if r.connectFailures > 0 || r.mediaChildStatus != "" {
			fmt.Fprintf(w, "  %s: %d streams failed to connect; child: %s\n", r.mode, r.connectFailures, r.mediaChildStatus)
		}
	}
	if len(rs) == 2 && perFrame(rs[0]) > 0 {
		fmt.Fprintf(w, "agent/relay CPU per frame: %.2fx\n", perFrame(rs[1])/perFrame(rs[0]))
	}
}
