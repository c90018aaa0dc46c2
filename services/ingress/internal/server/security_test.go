package server

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
)

// unacked sends n INVITEs from sbc that it never ACKs and returns the
// final status of each (and the To tags of the 200s, by Call-ID).
func unacked(t *testing.T, in *ingress, sbc *rawSBC, prefix string, n int) ([]int, map[string]string) {
	t.Helper()
	var out []int
	tags := map[string]string{}
	for i := range n {
		id := prefix + strconv.Itoa(i)
		sbc.send(t, in.srv.Addr(), rawRequest(sip.INVITE, in.port, sbc.port, id, "z9hG4bK-"+id, "", offer, 1))
		res := finalOrProbe(t, sbc)
		for res.CallID().Value() != id { // a retransmitted 200 of an earlier call
			res = finalOrProbe(t, sbc)
		}
		out = append(out, res.StatusCode)
		tags[id], _ = res.To().Params.Get("tag")
	}
	return out, tags
}

// TestUnackedCallsPerSourceAreCapped: a source that never ACKs holds at
// most max_unacked_unverified calls; one ACK raises it to
// max_unacked_per_source. Before, every INVITE was answered 200 and held
// an RTP port for 64*T1.
func TestUnackedCallsPerSourceAreCapped(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, func(c *config.Config) {
		c.Limits.MaxUnackedUnverified = 2
		c.Limits.MaxUnackedPerSource = 4
	}, withT1(2*time.Second)) // the 200s are retransmitted (and the calls held) for 128 s

	forger := newRawSBC(t)
	statuses, tags := unacked(t, in, forger, "forged-", 4)
	require.Equal(t, []int{200, 200, 503, 503}, statuses)
	require.EqualValues(t, 2, in.srv.Stats().UnackedSource.Load())

	// The cap is per address: another port on 127.0.0.1 is the same source.
	other := newRawSBC(t)
	statuses, _ = unacked(t, in, other, "other-port-", 1)
	require.Equal(t, []int{503}, statuses)

	// The genuine SBC at that address answers a call (ACK), which proves
	// it receives what ingress sends: the verified cap applies.
	c := &sbcCall{t: t, in: in, sbc: forger, callID: "forged-0", toTag: tags["forged-0"], cseq: 1}
	c.ack("")
	require.Eventually(t, func() bool {
		in.srv.handshakes.mu.Lock()
		defer in.srv.handshakes.mu.Unlock()
		return in.srv.handshakes.pending[netip.MustParseAddr("127.0.0.1")] == 1
	}, 5*time.Second, 10*time.Millisecond, "the ACKed call left the un-ACKed count")
	statuses, _ = unacked(t, in, newRawSBC(t), "verified-", 4)
	require.Equal(t, []int{200, 200, 200, 503}, statuses)
}

// TestStreamConnectionsAreBounded: TCP connections from a source no trunk
// allows are closed at accept; a trunk's silent connection is closed after
// limits.connections.first_read_timeout; a source holds at most
// max_connections_per_source. Before, 300 silent connections from a
// stranger stayed open with a goroutine each.
func TestStreamConnectionsAreBounded(t *testing.T) {
	// Not parallel: it counts the process's goroutines.
	in := startIngress(t, []string{"127.0.0.1:1"}, func(c *config.Config) {
		c.Listeners = []config.Listener{{Transport: config.TCP, Address: "127.0.0.1:0"}}
		c.Trunks = []config.Trunk{{Name: "sbc", Sources: []string{"127.0.0.2"}}}
		c.Limits.Connections.MaxConnectionsPerSource = 3
		c.Limits.Connections.FirstReadTimeout = 300 * time.Millisecond
		c.Limits.Connections.IdleTimeout = time.Second
	})
	addr := in.srv.Addrs()[0].String()
	dialFrom := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
		conn, err := d.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	// closed reads (ingress answers CRLF keep-alives) until the
	// connection ends or wait passes.
	closed := func(conn net.Conn, wait time.Duration) bool {
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, 512)
		for {
			if _, err := conn.Read(buf); err != nil {
				var ne net.Error
				return !errors.As(err, &ne) || !ne.Timeout()
			}
		}
	}
	goroutines := runtime.NumGoroutine()
	strangers := make([]net.Conn, 100)
	for i := range strangers {
		strangers[i] = dialFrom("127.0.0.1")
	}
	for _, conn := range strangers {
		require.True(t, closed(conn, 2*time.Second), "a stranger's connection was kept")
	}
	require.EqualValues(t, 100, in.srv.Counters()["connections_refused_acl"])
	require.Zero(t, in.srv.Stats().ACLDropped.Load(), "no stranger's byte was read")
	// A held connection holds a reader goroutine: 100 would show.
	require.Less(t, runtime.NumGoroutine(), goroutines+50, "goroutines after 100 refused connections (before %d)", goroutines)

	// The trunk: three connections at most, silent ones closed.
	mine := []net.Conn{dialFrom("127.0.0.2"), dialFrom("127.0.0.2"), dialFrom("127.0.0.2")}
	require.True(t, closed(dialFrom("127.0.0.2"), 2*time.Second), "a fourth connection from one source was kept")
	require.EqualValues(t, 1, in.srv.Counters()["connections_refused_source"])
	// One talks (an OPTIONS, then CRLF keep-alives); two stay silent.
	p := &streamPeer{conn: mine[0], r: bufio.NewReader(mine[0])}
	res := p.final(t, streamRequest("TCP", sip.OPTIONS, mine[0].LocalAddr(), "opts", "z9hG4bK-opts", "", 1, "", ""))
	require.Equal(t, sip.StatusOK, res.StatusCode)
	for _, conn := range mine[1:] {
		require.True(t, closed(conn, 2*time.Second), "a silent connection outlived limits.connections.first_read_timeout")
	}
	for range 4 {
		_, err := mine[0].Write([]byte("\r\n\r\n"))
		require.NoError(t, err, "a connection sending keep-alives was closed")
		time.Sleep(300 * time.Millisecond)
	}
	require.True(t, closed(mine[0], 3*time.Second), "an idle connection outlived limits.connections.idle_timeout")
	require.EqualValues(t, 3, in.srv.Counters()["connections_timed_out"])
	require.Eventually(t, func() bool { return in.srv.Counters()["connections_open"] == 0 }, 2*time.Second, 10*time.Millisecond)
}
