package main

// gen.go is the load generator: two UDP sockets (the callers' side and the
// destinations' side, mmsg.go), one paced sender and one receiver per
// socket, all I/O in batches (sendmmsg/recvmmsg).
//
// Every call is two streams: 2i from the caller side to the relay's caller
// port, 2i+1 from the destination side to its destination port. All the
// relays latch to the generator's two sockets and send back to them; a
// packet's stream is known from the relay port it comes from (and checked
// against the stream written in its payload). The sender spreads the
// packets of all streams evenly over each 20 ms frame (packet k of the run
// is due at k*20ms/streams); each time it wakes (about every millisecond:
// Go's sleep granularity) it sends every packet due by then, in batches.
// The receivers wake about every millisecond too and read what is queued.
//
// Each packet carries in its payload its send time (CLOCK_REALTIME, taken
// as the packet is built, just before its batch is written), its stream
// and whether it is counted (sent during the measuring window). The delay
// of a packet is its kernel receive timestamp (SO_TIMESTAMPNS: when the
// relay's write queued it on the generator's socket) minus its send time:
// it covers the rest of the generator's batch write, the relay, and
// loopback both ways, not the generator's polling. The "user" delay (when
// the receiver read it) is reported next to it.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"golang.org/x/sys/unix"
)

const (
	frame     = 20 * time.Millisecond // G.711 packet interval
	payload   = 160                   // G.711, 20 ms
	rtpHeader = 12
	// The payload starts with: send time (8 bytes), stream (4), counted (1).
	stampLen = 13
)

// histogram of durations in fixed buckets (one goroutine writes it).
type histogram struct{ b []uint64 }

const (
	histBucket = 10 * time.Microsecond
	histN      = 20000 // 200 ms
)

func newHistogram() *histogram { return &histogram{b: make([]uint64, histN+1)} }

func (h *histogram) add(d time.Duration) {
	i := int(d / histBucket)
	i = max(0, min(i, histN))
	h.b[i]++
}

func (h *histogram) merge(o *histogram) {
	for i, v := range o.b {
		h.b[i] += v
	}
}

func (h *histogram) count() uint64 {
	var n uint64
	for _, v := range h.b {
		n += v
	}
	return n
}

// quantile is the upper bound of the bucket holding the q-quantile.
func (h *histogram) quantile(q float64) time.Duration {
	total := h.count()
	if total == 0 {
		return 0
	}
	want := uint64(q * float64(total))
	var acc uint64
	for i, v := range h.b {
		acc += v
		if acc > want {
			return time.Duration(i+1) * histBucket
		}
	}
	return histN * histBucket
}

// stream is what one endpoint sends.
type stream struct {
	side int // socket: 0 callers, 1 destinations
	to   unix.RawSockaddrInet4
	hdr  rtp.Header
	enc  *srtp.Context
}

// rxStats are one receiver's counts.
type rxStats struct {
	received, unknown, bad, misrouted, noStamp, errors uint64
	delay, user                                        *histogram
}

// generator drives one step: one contender at one number of calls.
type generator struct {
	socks  [2]*sock
	direct bool
	// streams in sending order (2 per call).
	streams []stream
	// byPort maps a relay port to the stream whose packets leave the relay
	// there (-1: none).
	byPort []int32
	// dec decrypts, per call, what the relay's SRTP destination leg sends.
	dec   []*srtp.Context
	batch int
	// poll is how long the receivers sleep when their socket is empty.
	poll time.Duration

	measuring atomic.Bool
	stopRx    atomic.Bool
	// Written by the sender only, read after it stopped.
	sent, sendErrors uint64
	lag              *histogram
	// Written by receiver i only, read after it stopped.
	rx [2]rxStats
}

// newGenerator sets up the endpoints of the calls: toward the relays'
// targets, or (no targets) of n calls sent to the generator itself.
func newGenerator(c contender, targets []target, n, batch int, poll time.Duration) (*generator, error) {
	g := &generator{direct: c.relay == "", batch: batch, poll: poll, lag: newHistogram()}
	for i := range g.socks {
		s, err := openSock()
		if err != nil {
			g.close()
			return nil, err
		}
		g.socks[i] = s
		g.rx[i] = rxStats{delay: newHistogram(), user: newHistogram()}
	}
	var prof srtp.ProtectionProfile
	var keyLen int
	if c.suite != "" {
		var err error
		if prof, err = profile(c.suite); err != nil {
			g.close()
			return nil, err
		}
		if keyLen, err = prof.KeyLen(); err != nil {
			g.close()
			return nil, fmt.Errorf("srtp key length: %w", err)
		}
		g.dec = make([]*srtp.Context, n)
	}
	if !g.direct {
		g.byPort = make([]int32, 1<<16)
		for i := range g.byPort {
			g.byPort[i] = -1
		}
	}
	for i := range n {
		caller := stream{side: 0, hdr: rtp.Header{Version: 2, SSRC: uint32(2*i + 1)}}
		dest := stream{side: 1, hdr: rtp.Header{Version: 2, SSRC: uint32(2*i + 2)}}
		if g.direct {
			caller.to, dest.to = inet4(g.socks[1].port), inet4(g.socks[0].port)
		} else {
			t := targets[i]
			caller.to, dest.to = inet4(t.callerPort), inet4(t.destPort)
			// Stream 2i leaves the relay at its destination port, 2i+1
			// at its caller port.
			g.byPort[t.destPort] = int32(2 * i)
			g.byPort[t.callerPort] = int32(2*i + 1)
			if c.suite != "" {
				if len(t.baton) <= keyLen || len(t.theirs) <= keyLen {
					g.close()
					return nil, fmt.Errorf("srtp keys of %d and %d bytes", len(t.baton), len(t.theirs))
				}
				var err error
				if g.dec[i], err = srtp.CreateContext(t.baton[:keyLen], t.baton[keyLen:], prof); err != nil {
					g.close()
					return nil, fmt.Errorf("srtp context: %w", err)
				}
				if dest.enc, err = srtp.CreateContext(t.theirs[:keyLen], t.theirs[keyLen:], prof); err != nil {
					g.close()
					return nil, fmt.Errorf("srtp context: %w", err)
				}
			}
		}
		g.streams = append(g.streams, caller, dest)
	}
	return g, nil
}

func (g *generator) ports() []uint16 {
	var ps []uint16
	for _, s := range g.socks {
		if s != nil {
			ps = append(ps, s.port)
		}
	}
	return ps
}

func (g *generator) close() {
	for _, s := range g.socks {
		if s != nil {
			s.close()
		}
	}
}

// outBatch is the packets being gathered for one socket.
type outBatch struct {
	m       *mmsg
	n       int
	counted bool
}

// send paces the streams from base until stop closes.
func (g *generator) send(base time.Time, stop <-chan struct{}) {
	batches := [2]*outBatch{{m: newMmsg(g.batch, 0)}, {m: newMmsg(g.batch, 0)}}
	plain := make([]byte, 1500)
	interval := float64(frame) / float64(len(g.streams))
	dueAt := func(k int) time.Time { return base.Add(time.Duration(float64(k) * interval)) }
	k := 0
	for {
		select {
		case <-stop:
			return
		default:
		}
		now := time.Now()
		due := int(float64(now.Sub(base))/interval) + 1 // packets 0..due-1 are due
		if k >= due {
			time.Sleep(time.Until(dueAt(k)))
			continue
		}
		counting := g.measuring.Load()
		if counting {
			g.lag.add(now.Sub(dueAt(k)))
		}
		// At most a few batches per pass, so a late sender still sees stop.
		end := min(due, k+8*g.batch)
		for ; k < end; k++ {
			s := k % len(g.streams)
			st := &g.streams[s]
			b := batches[st.side]
			if err := g.build(b, s, st, plain, counting); err != nil {
				g.sendErrors++
				continue
			}
			if b.n == g.batch {
				g.flush(st.side, b)
			}
		}
		g.flush(0, batches[0])
		g.flush(1, batches[1])
	}
}

// build adds stream s's next packet to b.
func (g *generator) build(b *outBatch, s int, st *stream, plain []byte, counted bool) error {
	st.hdr.SequenceNumber++
	st.hdr.Timestamp += payload
	buf := b.m.bufs[b.n]
	p := buf[:rtpHeader+payload]
	if st.enc != nil {
		p = plain[:rtpHeader+payload]
	}
	p[0], p[1] = 0x80, 0 // V=2, PT 0 (PCMU)
	binary.BigEndian.PutUint16(p[2:4], st.hdr.SequenceNumber)
	binary.BigEndian.PutUint32(p[4:8], st.hdr.Timestamp)
	binary.BigEndian.PutUint32(p[8:12], st.hdr.SSRC)
	body := p[rtpHeader:]
	binary.BigEndian.PutUint64(body[0:8], uint64(time.Now().UnixNano()))
	binary.BigEndian.PutUint32(body[8:12], uint32(s))
	body[12] = 0
	if counted {
		body[12] = 1
	}
	if st.enc != nil {
		out, err := st.enc.EncryptRTP(buf[:0], p, &st.hdr)
		if err != nil {
			return fmt.Errorf("encrypt: %w", err)
		}
		if len(out) > len(buf) {
			return fmt.Errorf("encrypted packet of %d bytes", len(out))
		}
		if &out[0] != &buf[0] {
			copy(buf, out)
		}
		p = buf[:len(out)]
	}
	b.m.iovs[b.n].SetLen(len(p))
	b.m.names[b.n] = st.to
	b.n++
	b.counted = counted
	return nil
}

// flush writes b's packets. A batch holds only counted or only uncounted
// packets (the flag is read once per pass and every pass flushes).
func (g *generator) flush(side int, b *outBatch) {
	if b.n == 0 {
		return
	}
	written, _ := g.socks[side].send(b.m, b.n)
	if b.counted {
		g.sent += uint64(written)
	}
	g.sendErrors += uint64(b.n - written)
	b.n = 0
}

// receive reads side's socket, sleeping poll whenever it is empty, until
// stopRx is set and the socket is empty.
func (g *generator) receive(side int) {
	st := &g.rx[side]
	m := newMmsg(g.batch, 128)
	plain := make([]byte, 1500)
	s := g.socks[side]
	for {
		n, err := s.recv(m)
		if err != nil {
			st.errors++
		}
		if n == 0 {
			if g.stopRx.Load() {
				return
			}
			time.Sleep(g.poll)
			continue
		}
		now := time.Now().UnixNano()
		for i := range n {
			g.packet(st, m, i, now, plain)
		}
	}
}

// packet accounts for message i of m, read at now.
func (g *generator) packet(st *rxStats, m *mmsg, i int, now int64, plain []byte) {
	pkt := m.bufs[i][:m.hs[i].Len]
	s := -1
	if !g.direct {
		s = int(g.byPort[portOf(&m.names[i])])
		if s < 0 {
			st.unknown++
			return
		}
		if g.dec != nil && s%2 == 0 {
			var err error
			if pkt, err = g.dec[s/2].DecryptRTP(plain[:0], pkt, nil); err != nil {
				st.bad++
				return
			}
		}
	}
	hl := headerLen(pkt)
	if hl < 0 || len(pkt) < hl+stampLen {
		st.bad++
		return
	}
	body := pkt[hl:]
	sentAt := int64(binary.BigEndian.Uint64(body[0:8]))
	if idx := int(binary.BigEndian.Uint32(body[8:12])); s >= 0 && idx != s {
		st.misrouted++
		return
	}
	if body[12] != 1 {
		return // sent outside the measuring window
	}
	st.received++
	h := &m.hs[i].Hdr
	at := kernelStamp(m.oobs[i][:h.Controllen])
	if at == 0 {
		st.noStamp++
		at = now
	}
	st.delay.add(time.Duration(at - sentAt))
	st.user.add(time.Duration(now - sentAt))
}

// headerLen is the length of pkt's RTP header (CSRCs and extension
// included), -1 if pkt is not RTP.
func headerLen(pkt []byte) int {
	if len(pkt) < rtpHeader || pkt[0]>>6 != 2 {
		return -1
	}
	n := rtpHeader + 4*int(pkt[0]&0x0f)
	if pkt[0]&0x10 != 0 {
		if len(pkt) < n+4 {
			return -1
		}
		n += 4 + 4*int(binary.BigEndian.Uint16(pkt[n+2:n+4]))
	}
	if len(pkt) < n {
		return -1
	}
	return n
}

// kernelStamp is the SCM_TIMESTAMPNS time in oob (unix nanoseconds), 0 if
// there is none. Control messages: a header (length, level, type; 16
// bytes on 64-bit Linux) then data, each aligned to 8 bytes.
func kernelStamp(oob []byte) int64 {
	const hdr = 16
	for len(oob) >= hdr {
		l := int(binary.NativeEndian.Uint64(oob[0:8]))
		level := int32(binary.NativeEndian.Uint32(oob[8:12]))
		typ := int32(binary.NativeEndian.Uint32(oob[12:16]))
		if l < hdr || l > len(oob) {
			return 0
		}
		if level == unix.SOL_SOCKET && typ == unix.SCM_TIMESTAMPNS && l >= hdr+16 {
			sec := int64(binary.NativeEndian.Uint64(oob[hdr : hdr+8]))
			nsec := int64(binary.NativeEndian.Uint64(oob[hdr+8 : hdr+16]))
			return sec*int64(time.Second) + nsec
		}
		next := (l + 7) &^ 7
		if next >= len(oob) {
			return 0
		}
		oob = oob[next:]
	}
	return 0
}

// stepCounters are the kernel's counters around a step.
type stepCounters struct {
	at                 time.Time
	relayCPU, genCPU   time.Duration
	machine            cpuTimes
	genDrops, relDrops uint64
	backlog            uint64
}

func readCounters(relayPid int, genPorts, relayPorts map[uint16]bool) (stepCounters, error) {
	c := stepCounters{at: time.Now()}
	var errs []error
	var err error
	if relayPid > 0 {
		c.relayCPU, err = processCPU(relayPid)
		errs = append(errs, err)
	}
	c.genCPU, err = processCPU(os.Getpid())
	errs = append(errs, err)
	c.machine, err = machineCPU()
	errs = append(errs, err)
	c.genDrops, err = udpDrops(genPorts)
	errs = append(errs, err)
	if len(relayPorts) > 0 {
		c.relDrops, err = udpDrops(relayPorts)
		errs = append(errs, err)
	}
	c.backlog, err = backlogDrops()
	errs = append(errs, err)
	return c, errors.Join(errs...)
}

// run drives the generator for warmup + measure and collects what it saw.
func (g *generator) run(warmup, measure time.Duration, snapshot func() (stepCounters, error)) (before, after stepCounters, err error) {
	var rwg sync.WaitGroup
	for side := range g.socks {
		rwg.Go(func() { g.receive(side) })
	}
	stop := make(chan struct{})
	var swg sync.WaitGroup
	base := time.Now()
	swg.Go(func() { g.send(base, stop) })
	defer func() {
		// Stop sending, give packets in flight 200 ms, stop receiving.
		close(stop)
		swg.Wait()
		time.Sleep(200 * time.Millisecond)
		g.stopRx.Store(true)
		rwg.Wait()
	}()
	time.Sleep(warmup)
	if before, err = snapshot(); err != nil {
		return before, after, err
	}
	g.measuring.Store(true)
	time.Sleep(measure)
	g.measuring.Store(false)
	after, err = snapshot()
	return before, after, err
}
