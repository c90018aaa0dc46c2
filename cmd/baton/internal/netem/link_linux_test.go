package netem_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/cmd/baton/internal/netem"
)

// echoEnv makes the test binary, started inside the namespace, run
// TestEchoHelper as a UDP echo server on the address it names.
const echoEnv = "NETEM_TEST_ECHO_ADDR"

// TestEchoHelper is not a test: it is the echo server TestLinkDropsUDP runs
// inside the namespace (the test binary itself, under ip netns exec). It
// answers every datagram with the same bytes until one says "quit" or none
// came for a while, then prints how many it received.
func TestEchoHelper(t *testing.T) {
	addr := os.Getenv(echoEnv)
	if addr == "" {
		t.Skip("helper process for TestLinkDropsUDP")
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	bigBuffer(t, conn)
	fmt.Println("ready")
	buf := make([]byte, 2048)
	got := 0
	for {
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
		n, from, err := conn.ReadFrom(buf)
		if err != nil || string(buf[:n]) == "quit" {
			break
		}
		got++
		_, _ = conn.WriteTo(buf[:n], from)
	}
	fmt.Printf("received %d\n", got)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("network namespaces: needs root, ip and nft; run without -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("netem needs root for network namespaces (run the suite as root)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: netem needs iproute2 and nftables", tool)
		}
	}
}

// TestLinkDropsUDP sends datagrams from the root namespace to an echo
// server in the link's namespace through 20% loss each way and checks
// that the counters saw every datagram, that the dropped ones never
// arrived, that the loss is near what was asked in both directions, that
// other ports pass untouched, and that Close removes everything.
func TestLinkDropsUDP(t *testing.T) {
	requireRoot(t)
	ctx := t.Context()
	link, err := netem.Create(ctx, "btl-")
	require.NoError(t, err)
	closed := false
	t.Cleanup(func() {
		if !closed {
			require.NoError(t, link.Close(context.WithoutCancel(ctx)))
		}
	})
	require.True(t, strings.HasPrefix(link.Namespace, "btl-"), link.Namespace)
	require.True(t, link.Prefix.Contains(link.HostIP) && link.Prefix.Contains(link.PeerIP))
	require.Equal(t, 30, link.Prefix.Bits())

	const port, other = 7000, 7001
	require.NoError(t, link.SetLoss(ctx, 20, port))

	lossy := startEcho(t, link, netip.AddrPortFrom(link.PeerIP, port))
	clean := startEcho(t, link, netip.AddrPortFrom(link.PeerIP, other))

	const n = 2000
	echoed := exchange(t, link.HostIP, lossy.addr, n)
	c, err := link.Counters(ctx)
	require.NoError(t, err)
	serverGot := lossy.stop(t) // its "quit"s are counted too: c is read before
	t.Logf("%d sent, %d reached the namespace, %d echoed back; %s", n, serverGot, echoed, c)

	require.EqualValues(t, n, c.InSeen, "every datagram to the port crosses the ingress rule")
	require.EqualValues(t, n-c.InDropped, serverGot, "the dropped ones never arrive, the others all do")
	require.EqualValues(t, serverGot, c.OutSeen, "every echo crosses the egress rule")
	require.EqualValues(t, c.OutSeen-c.OutDropped, echoed, "the echoes dropped never arrive, the others all do")
	// 20% of 2000 and of ~1600: a binomial spread of about 1 point; 5
	// points is far outside chance.
	require.InDelta(t, 0.20, c.InRate(), 0.05)
	require.InDelta(t, 0.20, c.OutRate(), 0.05)

	// Another port is neither counted nor dropped.
	before, err := link.Counters(ctx)
	require.NoError(t, err)
	require.Equal(t, 200, exchange(t, link.HostIP, clean.addr, 200))
	require.Equal(t, 200, clean.stop(t))
	after, err := link.Counters(ctx)
	require.NoError(t, err)
	require.Equal(t, before, after)

	// Loss 0 passes everything and resets the counters.
	require.NoError(t, link.SetLoss(ctx, 0, port))
	zero, err := link.Counters(ctx)
	require.NoError(t, err)
	require.Equal(t, netem.Counters{}, zero)

	require.NoError(t, link.Close(ctx))
	closed = true
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").CombinedOutput()
	require.NoError(t, err)
	require.NotContains(t, string(out), link.Namespace)
	// The kernel tears a namespace down in the background.
	require.Eventually(t, func() bool {
		_, err := net.InterfaceByName(link.HostDev)
		return err != nil
	}, 30*time.Second, 50*time.Millisecond, "the veth pair goes with the namespace")
}

// bigBuffer gives a socket a receive buffer no burst of the test fills, so
// every datagram missing was dropped by the rules, not by the socket.
func bigBuffer(t *testing.T, c syscall.Conn) {
	t.Helper()
	raw, err := c.SyscallConn()
	require.NoError(t, err)
	var serr error
	require.NoError(t, raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 8<<20)
	}))
	require.NoError(t, serr)
}

type echo struct {
	addr netip.AddrPort
	cmd  *exec.Cmd
	out  *bufio.Scanner
}

// startEcho runs the echo helper inside the namespace and waits until it
// listens.
func startEcho(t *testing.T, link *netem.Link, addr netip.AddrPort) *echo {
	t.Helper()
	cmd := link.Command(t.Context(), os.Args[0], "-test.run=^TestEchoHelper$", "-test.v")
	cmd.Env = append(os.Environ(), echoEnv+"="+addr.String())
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	e := &echo{addr: addr, cmd: cmd, out: bufio.NewScanner(stdout)}
	for e.out.Scan() {
		if e.out.Text() == "ready" {
			return e
		}
	}
	t.Fatalf("echo helper in %s did not start: %v", link.Namespace, e.out.Err())
	return nil
}

// stop asks the helper to quit and returns how many datagrams it got.
func (e *echo) stop(t *testing.T) int {
	t.Helper()
	// Unconnected: a port unreachable once the helper is gone does not
	// fail the next write.
	conn, err := net.ListenUDP("udp", nil)
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	// "quit" crosses the lossy port too: repeat it until the helper exits.
	done := make(chan int, 1)
	go func() {
		got := -1
		for e.out.Scan() {
			if n, ok := strings.CutPrefix(e.out.Text(), "received "); ok {
				got, _ = strconv.Atoi(n)
			}
		}
		done <- got
	}()
	for {
		_, err := conn.WriteToUDP([]byte("quit"), net.UDPAddrFromAddrPort(e.addr))
		require.NoError(t, err)
		select {
		case got := <-done:
			require.GreaterOrEqual(t, got, 0, "helper output has no count")
			return got
		case <-time.After(100 * time.Millisecond):
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		}
	}
}

// exchange sends n numbered datagrams from host to addr, paced so no
// socket buffer overflows, and returns how many distinct ones came back.
func exchange(t *testing.T, host netip.Addr, addr netip.AddrPort, n int) int {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(host, 0)))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	bigBuffer(t, conn)
	seen := map[string]bool{}
	got := make(chan struct{})
	go func() {
		defer close(got)
		buf := make([]byte, 2048)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			m, err := conn.Read(buf)
			if err != nil {
				return
			}
			seen[string(buf[:m])] = true
		}
	}()
	to := net.UDPAddrFromAddrPort(addr)
	for i := range n {
		_, err := conn.WriteToUDP([]byte("datagram "+strconv.Itoa(i)), to)
		require.NoError(t, err)
		time.Sleep(100 * time.Microsecond)
	}
	<-got
	return len(seen)
}
