// Command bridgecap measures how many concurrent bridged calls the media
// bridge carries on this machine: every call is two G.711 streams of 50
// packets/s (one each way), the number of calls is ramped until loss
// exceeds 0.1% or the p99 one-way delay exceeds 5 ms. Three relays are
// measured in the same run: a minimal Go UDP relay loop (the floor), the
// bridge with plain RTP on both legs, and the bridge with SRTP
// (AES_CM_128_HMAC_SHA1_80) on the destination leg. Each relay runs in a
// child process of its own (this binary with -serve), so its CPU time is
// measured alone and its scheduler is not shared with the load generator
// (the machine's cores still are). Run it through bench/transfer/run.sh.
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"

	"github.com/baton-voice/baton/services/transfer/internal/bridge"
	"github.com/baton-voice/baton/services/transfer/internal/sdp"
)

var loopback = netip.MustParseAddr("127.0.0.1")

const (
	pps       = 50
	payload   = 160 // G.711, 20 ms
	shards    = 8
	maxLoss   = 0.001
	maxP99    = 5 * time.Millisecond
	bucket    = 50 * time.Microsecond
	nBuckets  = 2000 // 100 ms
	suiteSRTP = "AES_CM_128_HMAC_SHA1_80"
)

func main() {
	levelsFlag := flag.String("calls", "100,250,500,750,1000,1250,1500,2000,2500", "call counts to ramp through")
	step := flag.Duration("step", 3*time.Second, "measuring time per level")
	modesFlag := flag.String("modes", "floor,rtp,srtp", "relays to measure")
	serveMode := flag.String("serve", "", "internal: run relays of this mode for the parent (child role)")
	serveCalls := flag.Int("n", 0, "internal: calls to serve")
	inProcess := flag.Bool("inproc", false, "run the relays in the generator's process (cpu then counts both)")
	flag.Parse()
	if *serveMode != "" {
		if err := serve(*serveMode, *serveCalls); err != nil {
			fmt.Fprintf(os.Stderr, "bridgecap relay: %v\n", err)
			os.Exit(1)
		}
		return
	}
	var levels []int
	for _, f := range strings.Split(*levelsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bridgecap: bad -calls entry %q\n", f)
			os.Exit(2)
		}
		levels = append(levels, n)
	}
	modes := strings.Split(*modesFlag, ",")
	w := os.Stdout
	capacity := map[string]int{}
	cpuAt := map[string]map[int]float64{}
	fmt.Fprintf(w, "%-6s %6s %10s %9s %9s %9s %12s %10s\n", "relay", "calls", "packets", "loss%", "p50_ms", "p99_ms", "cpu_us/pkt", "relay_cpu%")
	for _, mode := range modes {
		cpuAt[mode] = map[int]float64{}
		for _, n := range levels {
			r, err := run(mode, n, *step, *inProcess)
			if err != nil {
				fmt.Fprintf(w, "%-6s %6d error: %v\n", mode, n, err)
				break
			}
			ok := r.loss <= maxLoss && r.p99 <= maxP99
			mark := ""
			if !ok {
				mark = "  <- limit"
			}
			fmt.Fprintf(w, "%-6s %6d %10d %9.3f %9.2f %9.2f %12.2f %10.0f%s\n", mode, n, r.sent, 100*r.loss,
				ms(r.p50), ms(r.p99), r.cpuPerPacket, r.cpuPercent, mark)
			cpuAt[mode][n] = r.cpuPerPacket
			if !ok {
				break
			}
			capacity[mode] = n
		}
	}
	fmt.Fprintln(w)
	for _, mode := range modes {
		fmt.Fprintf(w, "capacity %-5s %5d calls (%d packets/s through the relay)\n", mode, capacity[mode], capacity[mode]*2*pps)
	}
	if f := capacity["floor"]; f > 0 {
		for _, mode := range []string{"rtp", "srtp"} {
			if _, ok := capacity[mode]; ok {
				fmt.Fprintf(w, "ratio %s/floor capacity: %.2f\n", mode, float64(capacity[mode])/float64(f))
			}
		}
	}
	if r, s := capacity["rtp"], capacity["srtp"]; r > 0 && s > 0 {
		fmt.Fprintf(w, "ratio srtp/rtp capacity: %.2f\n", float64(s)/float64(r))
		// CPU per packet at the highest level both passed.
		for _, n := range slices.Backward(levels) {
			a, okA := cpuAt["rtp"][n]
			b, okB := cpuAt["srtp"][n]
			if okA && okB && n <= min(r, s) {
				who := "relay process only"
				if *inProcess {
					who = "whole process, generator included"
				}
				fmt.Fprintf(w, "ratio srtp/rtp cpu per packet at %d calls: %.2f (%s)\n", n, b/a, who)
				break
			}
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

type result struct {
	sent, received uint64
	loss           float64
	p50, p99       time.Duration
	// cpuPerPacket is the relay process's CPU time per packet relayed;
	// cpuPercent its CPU use (100 = one core).
	cpuPerPacket, cpuPercent float64
}

// endpoint is one far end: caller or destination of a call.
type endpoint struct {
	conn     *net.UDPConn
	to       netip.AddrPort
	ssrc     uint32
	seq      uint16
	ts       uint32
	enc, dec *srtp.Context
	buf      []byte
}

// relay is what is measured: something with two ports per call.
type relay interface {
	ports() (caller, destination int)
	close()
}

type floorRelay struct {
	a, b *net.UDPConn
	wg   sync.WaitGroup
}

// newFloor is the minimal relay: read, latch the sender, write to the
// other side's latched peer (symmetric, like the bridge).
func newFloor() (*floorRelay, error) {
	a, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		return nil, err
	}
	b, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		_ = a.Close()
		return nil, err
	}
	f := &floorRelay{a: a, b: b}
	var peers [2]atomic.Pointer[netip.AddrPort]
	loop := func(from, to *net.UDPConn, mine, theirs *atomic.Pointer[netip.AddrPort]) {
		buf := make([]byte, 1500)
		for {
			n, src, err := from.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if mine.Load() == nil {
				mine.Store(&src)
			}
			if peer := theirs.Load(); peer != nil {
				_, _ = to.WriteToUDPAddrPort(buf[:n], *peer)
			}
		}
	}
	f.wg.Go(func() { loop(a, b, &peers[0], &peers[1]) })
	f.wg.Go(func() { loop(b, a, &peers[1], &peers[0]) })
	return f, nil
}

func (f *floorRelay) ports() (int, int) {
	return f.a.LocalAddr().(*net.UDPAddr).Port, f.b.LocalAddr().(*net.UDPAddr).Port
}

func (f *floorRelay) close() {
	_ = f.a.Close()
	_ = f.b.Close()
	f.wg.Wait()
}

type bridgeRelay struct{ b *bridge.Bridge }

func (r bridgeRelay) ports() (int, int) {
	return r.b.Leg(bridge.Caller).Port(), r.b.Leg(bridge.Destination).Port()
}
func (r bridgeRelay) close() { r.b.Close() }

// histogram of one-way delays.
type histogram struct{ b [nBuckets + 1]atomic.Uint64 }

func (h *histogram) add(d time.Duration) {
	i := int(d / bucket)
	if i < 0 {
		i = 0
	}
	if i > nBuckets {
		i = nBuckets
	}
	h.b[i].Add(1)
}

func (h *histogram) quantile(q float64) time.Duration {
	var total uint64
	for i := range h.b {
		total += h.b[i].Load()
	}
	if total == 0 {
		return 0
	}
	want := uint64(q * float64(total))
	var acc uint64
	for i := range h.b {
		acc += h.b[i].Load()
		if acc > want {
			return time.Duration(i+1) * bucket
		}
	}
	return nBuckets * bucket
}

func listenEndpoint() (*endpoint, error) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		return nil, err
	}
	return &endpoint{conn: c, buf: make([]byte, 0, 1500)}, nil
}

// discard is where a bridge leg sends before its peer's first packet
// latches it.
var discard = netip.MustParseAddrPort("127.0.0.1:9")

// serve is the child: it runs n relays of mode, prints one line per call
// ("caller_port dest_port [baton_key their_key]", keys in base64), then
// "ready"; each "cpu" line on stdin is answered with "cpu <nanoseconds>";
// stdin's end stops it.
func serve(mode string, n int) error {
	relays, lines, err := startRelays(mode, n)
	defer func() {
		for _, r := range relays {
			r.close()
		}
	}()
	if err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	for _, l := range lines {
		fmt.Fprintln(out, l)
	}
	fmt.Fprintln(out, "ready")
	if err := out.Flush(); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "cpu" {
			fmt.Fprintf(os.Stdout, "cpu %d\n", cpuTime().Nanoseconds())
		}
	}
	return nil
}

// startRelays starts n relays of mode and describes each in a line
// ("caller_port dest_port [baton_key their_key]"). On error the relays
// started so far are returned for closing.
func startRelays(mode string, n int) ([]relay, []string, error) {
	var relays []relay
	var lines []string
	for range n {
		var r relay
		var keyLine string
		switch mode {
		case "floor":
			f, err := newFloor()
			if err != nil {
				return relays, nil, err
			}
			r = f
		case "rtp", "srtp":
			b, err := bridge.New(&bridge.Ports{Host: loopback})
			if err != nil {
				return relays, nil, err
			}
			var keys bridge.Keys
			if mode == "srtp" {
				if keys, err = newKeys(); err != nil {
					b.Close()
					return relays, nil, err
				}
				keyLine = " " + base64.StdEncoding.EncodeToString(keys.Local.Key) + " " + base64.StdEncoding.EncodeToString(keys.Remote.Key)
			}
			if err := b.Leg(bridge.Caller).SetRemote(discard, 8000, bridge.Keys{}); err != nil {
				b.Close()
				return relays, nil, err
			}
			if err := b.Leg(bridge.Destination).SetRemote(discard, 8000, keys); err != nil {
				b.Close()
				return relays, nil, err
			}
			b.Activate()
			r = bridgeRelay{b}
		default:
			return relays, nil, fmt.Errorf("unknown relay %q", mode)
		}
		relays = append(relays, r)
		cp, dp := r.ports()
		lines = append(lines, fmt.Sprintf("%d %d%s", cp, dp, keyLine))
	}
	return relays, lines, nil
}

// relays is where the measured relays run: a child process, or this
// process (-inproc).
type relays interface {
	// next returns the next line of startRelays' output, then "ready".
	next() (string, error)
	// cpu is the CPU time used so far by the relays' process.
	cpu() (time.Duration, error)
	stop()
}

// inproc runs the relays in this process (the old way: generator and
// relays share one runtime; cpu counts both).
type inproc struct {
	relays []relay
	lines  []string
}

func (p *inproc) next() (string, error) {
	if len(p.lines) == 0 {
		return "ready", nil
	}
	l := p.lines[0]
	p.lines = p.lines[1:]
	return l, nil
}

func (p *inproc) cpu() (time.Duration, error) { return cpuTime(), nil }

func (p *inproc) stop() {
	for _, r := range p.relays {
		r.close()
	}
}

// child is a relay process.
type child struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func (c *child) next() (string, error) {
	if !c.out.Scan() {
		return "", fmt.Errorf("relay process ended early: %w", c.out.Err())
	}
	return c.out.Text(), nil
}

func (c *child) cpu() (time.Duration, error) {
	if _, err := io.WriteString(c.in, "cpu\n"); err != nil {
		return 0, err
	}
	if !c.out.Scan() {
		return 0, fmt.Errorf("relay process: no cpu answer: %w", c.out.Err())
	}
	var ns int64
	if _, err := fmt.Sscanf(c.out.Text(), "cpu %d", &ns); err != nil {
		return 0, fmt.Errorf("relay process: %q: %w", c.out.Text(), err)
	}
	return time.Duration(ns), nil
}

func (c *child) stop() {
	_ = c.in.Close()
	_ = c.cmd.Wait()
}

// startChild starts the relays in a child process.
func startChild(mode string, n int) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-serve", mode, "-n", strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &child{cmd: cmd, in: stdin, out: bufio.NewScanner(stdout)}, nil
}

// run measures one relay at n calls: the relays in a child process (or
// here with inProcess), the endpoints here.
func run(mode string, n int, step time.Duration, inProcess bool) (result, error) {
	var c relays
	if inProcess {
		rs, lines, err := startRelays(mode, n)
		p := &inproc{relays: rs, lines: lines}
		if err != nil {
			p.stop()
			return result{}, err
		}
		c = p
	} else {
		ch, err := startChild(mode, n)
		if err != nil {
			return result{}, err
		}
		c = ch
	}
	defer c.stop()
	var eps []*endpoint
	defer func() {
		for _, e := range eps {
			_ = e.conn.Close()
		}
	}()
	for i := range n {
		line, err := c.next()
		if err != nil {
			return result{}, err
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return result{}, fmt.Errorf("relay process: %q", line)
		}
		cp, _ := strconv.Atoi(f[0])
		dp, _ := strconv.Atoi(f[1])
		caller, err := listenEndpoint()
		if err != nil {
			return result{}, err
		}
		eps = append(eps, caller)
		dest, err := listenEndpoint()
		if err != nil {
			return result{}, err
		}
		eps = append(eps, dest)
		caller.ssrc, dest.ssrc = uint32(2*i+1), uint32(2*i+2)
		if len(f) == 4 {
			if err := dest.useKeys(f[2], f[3]); err != nil {
				return result{}, err
			}
		}
		caller.to = netip.AddrPortFrom(loopback, uint16(cp))
		dest.to = netip.AddrPortFrom(loopback, uint16(dp))
	}
	if line, err := c.next(); err != nil {
		return result{}, err
	} else if line != "ready" {
		return result{}, fmt.Errorf("relay process not ready: %q", line)
	}

	base := time.Now()
	var hist histogram
	var received atomic.Uint64
	var measuring atomic.Bool
	var rwg sync.WaitGroup
	for _, e := range eps {
		rwg.Go(func() { receive(e, base, &hist, &received) })
	}
	var sent atomic.Uint64
	stop := make(chan struct{})
	var swg sync.WaitGroup
	for s := range shards {
		var mine []*endpoint
		for i := s; i < len(eps); i += shards {
			mine = append(mine, eps[i])
		}
		swg.Go(func() {
			time.Sleep(time.Duration(s) * time.Second / pps / shards) // spread the shards over a frame
			tick := time.NewTicker(time.Second / pps)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				counting := measuring.Load()
				for _, e := range mine {
					if e.send(base, counting) && counting {
						sent.Add(1)
					}
				}
			}
		})
	}
	// Warm up (latching, first packets), then measure.
	time.Sleep(500 * time.Millisecond)
	cpu0, err := c.cpu()
	if err != nil {
		return result{}, err
	}
	measuring.Store(true)
	began := time.Now()
	time.Sleep(step)
	measuring.Store(false)
	took := time.Since(began)
	cpu1, err := c.cpu()
	if err != nil {
		return result{}, err
	}
	close(stop)
	swg.Wait()
	// Packets in flight at the end are still counted as received.
	time.Sleep(100 * time.Millisecond)
	for _, e := range eps {
		_ = e.conn.SetReadDeadline(time.Now())
	}
	rwg.Wait()
	r := result{sent: sent.Load(), received: received.Load(), p50: hist.quantile(0.50), p99: hist.quantile(0.99)}
	if r.sent > 0 {
		lost := float64(r.sent) - float64(r.received)
		if lost < 0 {
			lost = 0
		}
		r.loss = lost / float64(r.sent)
		r.cpuPerPacket = float64((cpu1 - cpu0).Microseconds()) / float64(r.sent)
		r.cpuPercent = 100 * float64(cpu1-cpu0) / float64(took)
	}
	return r, nil
}

// newKeys are SDES keys for the bridge's destination leg.
func newKeys() (bridge.Keys, error) {
	baton, err := sdp.NewCrypto(1, suiteSRTP)
	if err != nil {
		return bridge.Keys{}, err
	}
	theirs, err := sdp.NewCrypto(1, suiteSRTP)
	if err != nil {
		return bridge.Keys{}, err
	}
	return bridge.Keys{Local: baton, Remote: theirs}, nil
}

// useKeys makes e the destination of an SRTP leg: it decrypts with
// Baton's key and encrypts with its own.
func (e *endpoint) useKeys(batonB64, theirsB64 string) error {
	ctx := func(s string) (*srtp.Context, error) {
		k, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(k) != 30 {
			return nil, fmt.Errorf("bad key %q", s)
		}
		return srtp.CreateContext(k[:16], k[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	}
	var err error
	if e.dec, err = ctx(batonB64); err != nil {
		return err
	}
	e.enc, err = ctx(theirsB64)
	return err
}

// send writes one packet stamped with its send time and whether it is
// counted; false on error.
func (e *endpoint) send(base time.Time, counted bool) bool {
	e.seq++
	e.ts += payload
	h := rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: e.seq, Timestamp: e.ts, SSRC: e.ssrc}
	b := e.buf[:0]
	hb, err := h.Marshal()
	if err != nil {
		return false
	}
	b = append(b, hb...)
	var body [payload]byte
	binary.BigEndian.PutUint64(body[:8], uint64(time.Since(base)))
	if counted {
		body[8] = 1
	}
	b = append(b, body[:]...)
	if e.enc != nil {
		if b, err = e.enc.EncryptRTP(nil, b, nil); err != nil {
			return false
		}
	}
	_, err = e.conn.WriteToUDPAddrPort(b, e.to)
	return err == nil
}

// receive reads an endpoint's socket until its deadline, recording the
// delay of packets sent while measuring.
func receive(e *endpoint, base time.Time, hist *histogram, received *atomic.Uint64) {
	buf := make([]byte, 1500)
	plain := make([]byte, 0, 1500)
	for {
		n, _, err := e.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		pkt := buf[:n]
		if e.dec != nil {
			if pkt, err = e.dec.DecryptRTP(plain[:0], pkt, nil); err != nil {
				continue
			}
		}
		if len(pkt) < 12+9 || pkt[20] != 1 {
			continue // too short, or sent outside the measurement
		}
		sentAt := time.Duration(binary.BigEndian.Uint64(pkt[12:20]))
		d := time.Since(base) - sentAt
		hist.add(d)
		received.Add(1)
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
