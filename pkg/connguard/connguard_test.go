package connguard

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// serve accepts on a guarded loopback listener and hands each accepted
// connection to the returned channel; a reader goroutine drains each one
// the way sipgo's does, so deadlines apply.
func serve(t *testing.T, p Policy) (*Listener, <-chan net.Conn, chan error) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Wrap(raw, p, nil)
	t.Cleanup(func() { _ = l.Close() })
	accepted := make(chan net.Conn, 100)
	readErrs := make(chan error, 100)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
			go func() {
				buf := make([]byte, 64)
				for {
					if _, err := c.Read(buf); err != nil {
						readErrs <- err
						_ = c.Close()
						return
					}
				}
			}()
		}
	}()
	return l, accepted, readErrs
}

func dialFrom(t *testing.T, l net.Listener, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedByPeer reports whether the server closed c within d.
func closedByPeer(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

func TestRefusedSourceIsClosedAtAccept(t *testing.T) {
	allowed := netip.MustParseAddr("127.0.0.2")
	l, accepted, _ := serve(t, Policy{Allow: func(a netip.Addr) bool { return a == allowed }})
	for range 20 {
		c := dialFrom(t, l, "127.0.0.1")
		if !closedByPeer(c, 2*time.Second) {
			t.Fatal("a connection from a refused source stayed open")
		}
	}
	good := dialFrom(t, l, "127.0.0.2")
	select {
	case c := <-accepted:
		if got := remoteAddr(c); got != allowed {
			t.Fatalf("accepted a connection from %v", got)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the allowed source was not accepted after refused ones: the serve loop ended")
	}
	_ = good
	if n := l.Stats().RefusedACL.Load(); n != 20 {
		t.Fatalf("RefusedACL = %d, want 20", n)
	}
}

func TestConnectionCaps(t *testing.T) {
	l, accepted, _ := serve(t, Policy{MaxConns: 4, MaxPerSource: 2})
	var keep []net.Conn
	for _, src := range []string{"127.0.0.2", "127.0.0.2", "127.0.0.3"} {
		keep = append(keep, dialFrom(t, l, src))
		<-accepted
	}
	if c := dialFrom(t, l, "127.0.0.2"); !closedByPeer(c, 2*time.Second) {
		t.Fatal("third connection from one source was kept (per-source cap 2)")
	}
	dialFrom(t, l, "127.0.0.4")
	<-accepted
	if c := dialFrom(t, l, "127.0.0.5"); !closedByPeer(c, 2*time.Second) {
		t.Fatal("fifth connection on a listener capped at 4 was kept")
	}
	s := l.Stats()
	if s.RefusedSource.Load() != 1 || s.RefusedFull.Load() != 1 || s.Open.Load() != 4 {
		t.Fatalf("refused per source %d, full %d, open %d; want 1, 1, 4", s.RefusedSource.Load(), s.RefusedFull.Load(), s.Open.Load())
	}
	// Closing one frees its slot.
	_ = keep[0].Close()
	deadline := time.Now().Add(2 * time.Second)
	for s.Open.Load() != 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	dialFrom(t, l, "127.0.0.5")
	select {
	case <-accepted:
	case <-time.After(2 * time.Second):
		t.Fatalf("no slot freed after a close (open %d)", s.Open.Load())
	}
}

func TestSilentConnectionsAreClosed(t *testing.T) {
	l, _, readErrs := serve(t, Policy{FirstRead: 100 * time.Millisecond, Idle: 300 * time.Millisecond})
	silent := dialFrom(t, l, "127.0.0.1")
	talker := dialFrom(t, l, "127.0.0.1")
	start := time.Now()
	// The talker writes every 100 ms for a second: each read moves its
	// deadline on, so it outlives both FirstRead and Idle.
	for range 10 {
		if _, err := talker.Write([]byte("\r\n\r\n")); err != nil {
			t.Fatalf("talker closed after %v: %v", time.Since(start), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !closedByPeer(silent, time.Second) {
		t.Fatal("a connection that never sent a byte was kept")
	}
	select {
	case err := <-readErrs:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("the server's read of a silent connection gave %v, want io.EOF (sipgo logs anything else at ERROR)", err)
		}
	case <-time.After(time.Second):
		t.Fatal("server read did not end")
	}
	if l.Stats().Open.Load() != 1 {
		t.Fatalf("open = %d, want 1 (the talker)", l.Stats().Open.Load())
	}
	// Now the talker stops: Idle closes it.
	if !closedByPeer(talker, 2*time.Second) {
		t.Fatal("an idle connection was kept past Idle")
	}
	if n := l.Stats().TimedOut.Load(); n != 2 {
		t.Fatalf("TimedOut = %d, want 2", n)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate("sip"); err != nil {
		t.Fatal(err)
	}
	bad := Config{MaxConnections: 2, MaxConnectionsPerSource: 3, FirstReadTimeout: time.Second, IdleTimeout: time.Millisecond}
	err := bad.Validate("limits.connections")
	for _, want := range []string{"limits.connections.max_connections_per_source", "limits.connections.idle_timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %s in %v", want, err)
		}
	}
	p := DefaultConfig().Policy(nil)
	if p.MaxConns != DefaultMaxConns || p.Idle != DefaultIdle || p.Allow != nil {
		t.Errorf("policy %+v", p)
	}
}
