package main

// relay.go holds the relays under test. They run in a child process (this
// binary with -serve) so that their CPU time and their Go scheduler are
// their own; with -pin the child is bound to one core and the generator
// to another.

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/srtp/v3"

	"github.com/baton-voice/baton/services/transfer/internal/bridge"
	"github.com/baton-voice/baton/services/transfer/internal/pump"
	"github.com/baton-voice/baton/services/transfer/internal/sdp"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// contender is one thing measured.
type contender struct {
	name string
	// relay is the child's relay kind: "floor" or "bridge"; "" means no
	// relay at all (the generator sends to itself).
	relay string
	// suite is the SRTP suite of the bridge's destination leg; "" for
	// plain RTP on both legs.
	suite string
}

func contenderOf(name string) (contender, error) {
	switch name {
	case "direct":
		return contender{name: name}, nil
	case "floor":
		return contender{name: name, relay: "floor"}, nil
	case "rtp":
		return contender{name: name, relay: "bridge"}, nil
	case "srtp":
		return contender{name: name, relay: "bridge", suite: "AES_CM_128_HMAC_SHA1_80"}, nil
	case "srtp-gcm":
		return contender{name: name, relay: "bridge", suite: "AEAD_AES_128_GCM"}, nil
	}
	return contender{}, fmt.Errorf("unknown contender %q (direct, floor, rtp, srtp, srtp-gcm)", name)
}

// profile is the pion profile of an SRTP suite.
func profile(suite string) (srtp.ProtectionProfile, error) {
	switch suite {
	case "AES_CM_128_HMAC_SHA1_80":
		return srtp.ProtectionProfileAes128CmHmacSha1_80, nil
	case "AEAD_AES_128_GCM":
		return srtp.ProtectionProfileAeadAes128Gcm, nil
	}
	return 0, fmt.Errorf("srtp suite %q not supported", suite)
}

// target is one call's relay as the generator sees it: the relay's two
// ports and, for an SRTP destination leg, the keys (master key and salt):
// baton encrypts what the relay sends, theirs what the endpoint sends.
type target struct {
	callerPort, destPort uint16
	baton, theirs        []byte
}

// relayCloser is one call's relay in the child.
type relayCloser interface {
	ports() (caller, destination int)
	close()
}

type floorRelay struct {
	a, b *net.UDPConn
	wg   sync.WaitGroup
}

// newFloor is the minimal relay: a goroutine per socket that reads,
// latches the sender, and writes to the other side's latched peer
// (symmetric, like the bridge, with none of its per-packet work).
func newFloor() (*floorRelay, error) {
	a, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	b, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		_ = a.Close()
		return nil, fmt.Errorf("floor: %w", err)
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

// discard is where a bridge leg sends before its peer's first packet
// latches it.
var discard = netip.MustParseAddrPort("127.0.0.1:9")

// serve is the child: pinned to cpu unless cpu < 0, in SCHED_FIFO at rt
// unless rt is 0, it runs n relays of
// the contender name and prints "info pid=... cpus=... gomaxprocs=...",
// one line per call ("caller_port dest_port [baton_key their_key]", keys
// in base64), then "ready"; the end of stdin stops it.
// relayOptions are a relay process's: its core (-1: none), SCHED_FIFO
// priority (0: none), the bridge pump's linger and where its CPU profile
// goes ("" none).
type relayOptions struct {
	cpu, rt int
	linger  time.Duration
	profile string
}

func serve(name string, n int, o relayOptions) error {
	if o.rt != 0 {
		if err := realtime(o.rt); err != nil {
			return err
		}
	}
	if o.cpu >= 0 {
		if err := pinTo(o.cpu); err != nil {
			return err
		}
	}
	c, err := contenderOf(name)
	if err != nil {
		return err
	}
	// The bridges share one pump, a worker per core, as in the service.
	ports := &bridge.Ports{Host: loopback}
	if c.relay == "bridge" {
		if ports.Pump, err = pump.New(runtime.GOMAXPROCS(0), o.linger); err != nil {
			return err
		}
		defer func() { _ = ports.Pump.Close() }() // after the relays
	}
	if o.profile != "" {
		f, err := os.Create(fmt.Sprintf("%s.%s.%d", o.profile, name, n))
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	relays, lines, err := startRelays(c, n, ports)
	defer func() {
		for _, r := range relays {
			r.close()
		}
	}()
	if err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "info pid=%d %s\n", os.Getpid(), affinity())
	for _, l := range lines {
		fmt.Fprintln(out, l)
	}
	fmt.Fprintln(out, "ready")
	if err := out.Flush(); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// startRelays starts n relays of c and describes each in a line. On error
// the relays started so far are returned for closing.
func startRelays(c contender, n int, ports *bridge.Ports) ([]relayCloser, []string, error) {
	var relays []relayCloser
	lines := make([]string, 0, n)
	for range n {
		var r relayCloser
		var keyLine string
		switch c.relay {
		case "floor":
			f, err := newFloor()
			if err != nil {
				return relays, nil, err
			}
			r = f
		case "bridge":
			b, err := bridge.New(ports)
			if err != nil {
				return relays, nil, fmt.Errorf("bridge: %w", err)
			}
			var keys bridge.Keys
			if c.suite != "" {
				if keys, err = newKeys(c.suite); err != nil {
					b.Close()
					return relays, nil, err
				}
				keyLine = " " + base64.StdEncoding.EncodeToString(keys.Local.Key) + " " + base64.StdEncoding.EncodeToString(keys.Remote.Key)
			}
			if err := b.Leg(bridge.Caller).SetRemote(discard, 8000, bridge.Keys{}); err != nil {
				b.Close()
				return relays, nil, fmt.Errorf("bridge caller leg: %w", err)
			}
			if err := b.Leg(bridge.Destination).SetRemote(discard, 8000, keys); err != nil {
				b.Close()
				return relays, nil, fmt.Errorf("bridge destination leg: %w", err)
			}
			b.Activate()
			r = bridgeRelay{b}
		default:
			return relays, nil, fmt.Errorf("no relay for contender %q", c.name)
		}
		relays = append(relays, r)
		cp, dp := r.ports()
		lines = append(lines, fmt.Sprintf("%d %d%s", cp, dp, keyLine))
	}
	return relays, lines, nil
}

// newKeys are SDES keys for the bridge's destination leg.
func newKeys(suite string) (bridge.Keys, error) {
	baton, err := sdp.NewCrypto(1, suite)
	if err != nil {
		return bridge.Keys{}, fmt.Errorf("keys: %w", err)
	}
	theirs, err := sdp.NewCrypto(1, suite)
	if err != nil {
		return bridge.Keys{}, fmt.Errorf("keys: %w", err)
	}
	return bridge.Keys{Local: baton, Remote: theirs}, nil
}

// relayProc is the parent's handle on a child running relays.
type relayProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	pid int
	// info is the child's own account of its pinning.
	info    string
	targets []target
}

// startRelayProc starts n relays of c in a child with o's pinning,
// scheduling, pump and profile, and reads their ports and keys.
func startRelayProc(ctx context.Context, c contender, n int, o relayOptions) (*relayProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("relay process: %w", err)
	}
	cmd := exec.CommandContext(ctx, self, "-serve", c.name, "-n", strconv.Itoa(n), "-cpu", strconv.Itoa(o.cpu), "-rt", strconv.Itoa(o.rt),
		"-linger", o.linger.String(), "-relay-cpuprofile", o.profile)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("relay process: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("relay process: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("relay process: %w", err)
	}
	p := &relayProc{cmd: cmd, in: stdin, pid: cmd.Process.Pid}
	if err := p.read(bufio.NewScanner(stdout), c, n); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

func (p *relayProc) read(sc *bufio.Scanner, c contender, n int) error {
	next := func() (string, error) {
		if !sc.Scan() {
			return "", fmt.Errorf("relay process ended early: %w", sc.Err())
		}
		return sc.Text(), nil
	}
	line, err := next()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "info ") {
		return fmt.Errorf("relay process: %q, want info", line)
	}
	p.info = strings.TrimPrefix(line, "info ")
	for range n {
		if line, err = next(); err != nil {
			return err
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return fmt.Errorf("relay process: %q", line)
		}
		cp, err1 := strconv.ParseUint(f[0], 10, 16)
		dp, err2 := strconv.ParseUint(f[1], 10, 16)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("relay process: bad ports %q", line)
		}
		t := target{callerPort: uint16(cp), destPort: uint16(dp)}
		if c.suite != "" {
			if len(f) != 4 {
				return fmt.Errorf("relay process: no keys in %q", line)
			}
			if t.baton, err = base64.StdEncoding.DecodeString(f[2]); err != nil {
				return fmt.Errorf("relay process: key: %w", err)
			}
			if t.theirs, err = base64.StdEncoding.DecodeString(f[3]); err != nil {
				return fmt.Errorf("relay process: key: %w", err)
			}
		}
		p.targets = append(p.targets, t)
	}
	if line, err = next(); err != nil {
		return err
	}
	if line != "ready" {
		return fmt.Errorf("relay process not ready: %q", line)
	}
	return nil
}

// stop ends the child (end of its stdin) and waits for it.
func (p *relayProc) stop() {
	_ = p.in.Close()
	_ = p.cmd.Wait()
}
