// Command bridgecap measures how many concurrent bridged calls the media
// bridge carries on this machine: every call is two G.711 streams of 50
// packets/s (one each way), the number of calls is ramped until loss
// exceeds 0.1% or the p99 one-way delay exceeds 5 ms. Three relays are
// measured in the same run: a minimal Go UDP relay loop (the floor), the
// bridge with plain RTP on both legs, and the bridge with SRTP
// (AES_CM_128_HMAC_SHA1_80) on the destination leg. The load generator
// runs in the same process and shares the CPUs. Run it through
// bench/transfer/bridge.sh.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
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
	flag.Parse()
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
	fmt.Fprintf(w, "%-6s %6s %10s %9s %9s %9s %12s\n", "relay", "calls", "packets", "loss%", "p50_ms", "p99_ms", "cpu_us/pkt")
	for _, mode := range modes {
		cpuAt[mode] = map[int]float64{}
		for _, n := range levels {
			r, err := run(mode, n, *step)
			if err != nil {
				fmt.Fprintf(w, "%-6s %6d error: %v\n", mode, n, err)
				break
			}
			ok := r.loss <= maxLoss && r.p99 <= maxP99
			mark := ""
			if !ok {
				mark = "  <- limit"
			}
			fmt.Fprintf(w, "%-6s %6d %10d %9.3f %9.2f %9.2f %12.2f%s\n", mode, n, r.sent, 100*r.loss,
				ms(r.p50), ms(r.p99), r.cpuPerPacket, mark)
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
				fmt.Fprintf(w, "ratio srtp/rtp cpu per packet at %d calls: %.2f (whole process, generator included)\n", n, b/a)
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
	cpuPerPacket   float64
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

// newFloor is the minimal relay: read, write to the other side's peer.
func newFloor(callerPeer, destPeer netip.AddrPort) (*floorRelay, error) {
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
	loop := func(from, to *net.UDPConn, peer netip.AddrPort) {
		buf := make([]byte, 1500)
		for {
			n, _, err := from.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = to.WriteToUDPAddrPort(buf[:n], peer)
		}
	}
	f.wg.Go(func() { loop(a, b, destPeer) })
	f.wg.Go(func() { loop(b, a, callerPeer) })
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

func (e *endpoint) addr() netip.AddrPort { return e.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// run measures one relay at n calls.
func run(mode string, n int, step time.Duration) (result, error) {
	var eps []*endpoint
	var relays []relay
	var ports bridge.Ports
	ports.Host = loopback
	defer func() {
		for _, r := range relays {
			r.close()
		}
		for _, e := range eps {
			_ = e.conn.Close()
		}
	}()
	for i := range n {
		caller, err := listenEndpoint()
		if err != nil {
			return result{}, err
		}
		dest, err := listenEndpoint()
		if err != nil {
			_ = caller.conn.Close()
			return result{}, err
		}
		eps = append(eps, caller, dest)
		caller.ssrc, dest.ssrc = uint32(2*i+1), uint32(2*i+2)
		var r relay
		switch mode {
		case "floor":
			f, err := newFloor(caller.addr(), dest.addr())
			if err != nil {
				return result{}, err
			}
			r = f
		case "rtp", "srtp":
			b, err := bridge.New(&ports)
			if err != nil {
				return result{}, err
			}
			var keys bridge.Keys
			if mode == "srtp" {
				if keys, err = srtpKeys(dest); err != nil {
					b.Close()
					return result{}, err
				}
			}
			if err := b.Leg(bridge.Caller).SetRemote(caller.addr(), 8000, bridge.Keys{}); err != nil {
				b.Close()
				return result{}, err
			}
			if err := b.Leg(bridge.Destination).SetRemote(dest.addr(), 8000, keys); err != nil {
				b.Close()
				return result{}, err
			}
			b.Activate()
			r = bridgeRelay{b}
		default:
			return result{}, fmt.Errorf("unknown relay %q", mode)
		}
		relays = append(relays, r)
		cp, dp := r.ports()
		caller.to = netip.AddrPortFrom(loopback, uint16(cp))
		dest.to = netip.AddrPortFrom(loopback, uint16(dp))
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
	cpu0 := cpuTime()
	measuring.Store(true)
	time.Sleep(step)
	measuring.Store(false)
	cpu1 := cpuTime()
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
	}
	return r, nil
}

// srtpKeys gives the bridge's destination leg and the destination
// endpoint matching SDES keys.
func srtpKeys(dest *endpoint) (bridge.Keys, error) {
	baton, err := sdp.NewCrypto(1, suiteSRTP)
	if err != nil {
		return bridge.Keys{}, err
	}
	theirs, err := sdp.NewCrypto(1, suiteSRTP)
	if err != nil {
		return bridge.Keys{}, err
	}
	ctx := func(c sdp.Crypto) (*srtp.Context, error) {
		return srtp.CreateContext(c.Key[:16], c.Key[16:], srtp.ProtectionProfileAes128CmHmacSha1_80)
	}
	if dest.enc, err = ctx(theirs); err != nil {
		return bridge.Keys{}, err
	}
	if dest.dec, err = ctx(baton); err != nil {
		return bridge.Keys{}, err
	}
	return bridge.Keys{Local: baton, Remote: theirs}, nil
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
