package uac

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/logtest"
)

// infoLogger logs at INFO into a buffer the test reads.
func infoLogger() (*slog.Logger, *logtest.Buffer) {
	var b logtest.Buffer
	return slog.New(slog.NewJSONHandler(&b, &slog.HandlerOptions{Level: slog.LevelInfo})), &b
}

// next reads the next SIP message p receives, with where it came from.
func (p *rawPeer) next(t *testing.T) (sip.Message, net.Addr) {
	t.Helper()
	require.NoError(t, p.conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, 4096)
	n, from, err := p.conn.ReadFrom(buf)
	require.NoError(t, err)
	msg, err := sip.NewParser().ParseSIP(buf[:n])
	require.NoError(t, err)
	return msg, from
}

// answerOptions has peer answer 200 to the OPTIONS c sends it, and
// returns the response c got.
func answerOptions(t *testing.T, c *Client, peer *rawPeer) *sip.Response {
	t.Helper()
	type result struct {
		res *sip.Response
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := c.Do(t.Context(), sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: peer.port}))
		done <- result{res, err}
	}()
	msg, _ := peer.next(t)
	peer.send(t, c, sip.NewResponseFromRequest(msg.(*sip.Request), 200, "OK", nil).String())
	r := <-done
	require.NoError(t, r.err)
	return r.res
}

// leg is a dialog c started over UDP with peer (the destination side),
// answered and acknowledged.
type leg struct {
	d                *sipgo.DialogClientSession
	invite           *sip.Request // as peer received it
	localTag, remote string
}

func startLeg(t *testing.T, c *Client, peer *rawPeer) *leg {
	t.Helper()
	type result struct {
		d   *sipgo.DialogClientSession
		err error
	}
	done := make(chan result, 1)
	go func() {
		req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "dest", Host: "127.0.0.1", Port: peer.port})
		d, err := c.Invite(t.Context(), req)
		if err == nil {
			err = d.WaitAnswer(t.Context(), sipgo.AnswerOptions{})
		}
		if err == nil {
			err = d.Ack(t.Context())
		}
		done <- result{d, err}
	}()
	msg, _ := peer.next(t)
	inv := msg.(*sip.Request)
	require.True(t, inv.IsInvite())
	res := sip.NewResponseFromRequest(inv, 200, "OK", nil)
	res.To().Params.Add("tag", "dest-tag")
	res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "dest", Host: "127.0.0.1", Port: peer.port}})
	peer.send(t, c, res.String())
	ack, _ := peer.next(t)
	require.True(t, ack.(*sip.Request).IsAck())
	r := <-done
	require.NoError(t, r.err)
	t.Cleanup(func() { _ = r.d.Close() })
	local, _ := inv.From().Params.Get("tag")
	return &leg{d: r.d, invite: inv, localTag: local, remote: "dest-tag"}
}

// bye is the peer's BYE in l (fromTag and toTag name the dialog; the real
// ones are l.remote and l.localTag), sent from port.
func (l *leg) bye(fromTag, toTag, branch string, port int) string {
	return "BYE sip:baton-transfer@127.0.0.1 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:" + strconv.Itoa(port) + ";branch=z9hG4bK" + branch + "\r\n" +
		"From: <sip:dest@127.0.0.1>;tag=" + fromTag + "\r\nTo: <sip:x@127.0.0.1>;tag=" + toTag + "\r\n" +
		"Call-ID: " + l.invite.CallID().Value() + "\r\nCSeq: 7 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
}

// TestUDPTakesOnlyOurs: on the UDP socket, garbage, a response to no
// request of ours and a request outside our dialogs are dropped unanswered,
// each counted by reason and logged without its bytes; the response to our
// request and a request in one of our legs get through, and a
// retransmission of a request taken is taken again.
func TestUDPTakesOnlyOurs(t *testing.T) {
	const marker = "MARKER-51d0"
	logger, logs := infoLogger()
	c, err := Listen(t.Context(), "127.0.0.1:0", "127.0.0.1", logger, Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, c.Close()) }()
	stranger := newRawPeer(t)

	stranger.send(t, c, "GET / HTTP/1.1 "+marker+"\r\n\r\n")
	stranger.send(t, c, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK"+marker+"\r\n"+
		"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: "+marker+"\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
	stranger.send(t, c, rawRequest("OPTIONS", marker+"-1", "UDP", stranger.port))
	stranger.silence(t, 300*time.Millisecond)
	require.Eventually(t, func() bool { return c.Counters().UDPDropped() == 3 }, 5*time.Second, 10*time.Millisecond)
	cs := c.Counters()
	require.Equal(t, [3]uint64{1, 1, 1}, [3]uint64{cs.UDPGarbage, cs.UDPStrayResponse, cs.UDPStrayRequest})
	require.Zero(t, cs.UDPPassed)
	for _, reason := range []string{DropGarbage, DropStrayResponse, DropStrayRequest} {
		require.Contains(t, logs.String(), `"reason":"`+reason+`"`)
	}
	require.Contains(t, logs.String(), `"msg":"sip datagram dropped"`)
	require.NotContains(t, logs.String(), marker)

	// Ours: the answer to our OPTIONS, then a leg and the peer's BYE in it.
	peer := newRawPeer(t)
	require.Equal(t, 200, answerOptions(t, c, peer).StatusCode)
	l := startLeg(t, c, peer)
	// A BYE naming another dialog (wrong tags) is dropped...
	peer.send(t, c, l.bye("other", l.localTag, "bye-x", peer.port))
	peer.silence(t, 300*time.Millisecond)
	require.Equal(t, uint64(2), c.Counters().UDPStrayRequest)
	// ...the leg's own is answered, and so is its retransmission once the
	// dialog is gone (our 200 was lost, say): the transaction is ours.
	for i := range 2 {
		peer.send(t, c, l.bye(l.remote, l.localTag, "bye-1", peer.port))
		res, from := peer.next(t)
		require.Equal(t, 200, res.(*sip.Response).StatusCode)
		require.Equal(t, c.Addr().String(), from.String(), "answered from the listening socket")
		if i == 0 {
			require.NoError(t, l.d.Close())
		}
	}
	require.Equal(t, uint64(2), c.Counters().UDPStrayRequest, "nothing of ours was dropped")
	// A new request in the dialog that is gone is not ours any more.
	peer.send(t, c, l.bye(l.remote, l.localTag, "bye-2", peer.port))
	peer.silence(t, 300*time.Millisecond)
	require.Equal(t, uint64(3), c.Counters().UDPStrayRequest)
}

// TestUDPFloodFromManySources: 2,400 datagrams, each from its own source
// address and port (12 loopback addresses), garbage, stray responses and
// stray requests carrying a marker, leave nothing behind: every one is
// dropped and counted, sipgo's UDP pool does not grow, the goroutines and
// the heap come back, the log stays a few lines that never hold the marker,
// and transfer's own transactions still work.
func TestUDPFloodFromManySources(t *testing.T) {
	const addrs, perAddr = 12, 200
	const marker = "MARKER-e93a"
	logger, logs := infoLogger()
	c, err := Listen(t.Context(), "127.0.0.1:0", "127.0.0.1", logger, Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, c.Close()) }()
	poolBefore := c.Counters().UDPPoolEntries
	goroutinesBefore := runtime.NumGoroutine()
	heapBefore := heapInUse()

	start := time.Now()
	sent, sources := flood(t, c.Addr(), addrs, perAddr, marker, handled(c))
	took := time.Since(start)
	require.Equal(t, addrs*perAddr, sources, "distinct source address:port pairs")

	cs := c.Counters()
	require.Equal(t, sent, [3]uint64{cs.UDPGarbage, cs.UDPStrayResponse, cs.UDPStrayRequest}, "every datagram counted by its reason")
	require.Equal(t, uint64(addrs*perAddr), cs.UDPDropped())
	require.Zero(t, cs.UDPPassed)
	require.Equal(t, poolBefore, cs.UDPPoolEntries, "sipgo's UDP pool did not grow (it was %d)", poolBefore)
	require.Zero(t, cs.UDPSources)
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= goroutinesBefore+2 }, 5*time.Second, 10*time.Millisecond)
	require.Less(t, heapInUse()-heapBefore, int64(4<<20), "heap growth")

	out := logs.String()
	require.NotContains(t, out, marker)
	lines := strings.Count(out, "\n")
	limit := logsPerSecond * (int(took/time.Second) + 2)
	require.LessOrEqual(t, lines, limit, "log lines for %v of flood", took)
	require.Less(t, len(out), limit*300, "log bytes")
	// A second on, the next drop's record says how many were held back:
	// every drop is a record or in a count.
	time.Sleep(1100 * time.Millisecond)
	newRawPeer(t).send(t, c, "garbage")
	require.Eventually(t, func() bool { return c.Counters().UDPGarbage == sent[0]+1 }, 5*time.Second, time.Millisecond)
	logged, held := dropRecords(t, logs.String())
	require.Equal(t, addrs*perAddr+1, logged+held, "records %d + held back %d", logged, held)

	// Transfer's own transaction still works.
	require.Equal(t, 200, answerOptions(t, c, newRawPeer(t)).StatusCode)
}

// floodBurst is how many datagrams flood sends before it waits for them to
// be counted: a socket buffer holds about 200 small datagrams.
const floodBurst = 50

// handled is what c's UDP socket took or dropped so far.
func handled(c *Client) func() uint64 {
	return func() uint64 { cs := c.Counters(); return cs.UDPDropped() + cs.UDPPassed }
}

// flood sends addrs*perAddr datagrams to to, each from its own socket
// (perAddr sockets on each of addrs loopback addresses), rotating garbage,
// stray responses and stray requests, all carrying marker. It waits until
// counted reaches the number sent after each burst, so the socket buffer
// never overflows, and returns how many of each kind it sent and the
// distinct sources.
func flood(t testing.TB, to *net.UDPAddr, addrs, perAddr int, marker string, counted func() uint64) ([3]uint64, int) {
	t.Helper()
	var sent [3]uint64
	seen := map[string]bool{}
	var lc net.ListenConfig
	for a := range addrs {
		ip := net.IPv4(127, 0, 0, byte(101+a))
		socks := make([]net.PacketConn, 0, perAddr)
		for i := range perAddr {
			conn, err := lc.ListenPacket(context.Background(), "udp", net.JoinHostPort(ip.String(), "0"))
			require.NoError(t, err)
			socks = append(socks, conn)
			seen[conn.LocalAddr().String()] = true
			n := a*perAddr + i
			kind := n % 3
			_, err = conn.WriteTo([]byte(floodDatagram(kind, n, conn.LocalAddr().(*net.UDPAddr).Port, marker)), to)
			require.NoError(t, err)
			sent[kind]++
			if (n+1)%floodBurst == 0 {
				want := uint64(n + 1)
				require.Eventually(t, func() bool { return counted() >= want },
					10*time.Second, time.Millisecond, "datagram %d not counted: %d", n, counted())
			}
		}
		for _, s := range socks {
			require.NoError(t, s.Close())
		}
	}
	return sent, len(seen)
}

// floodDatagram is datagram n of kind 0 (garbage), 1 (a stray response) or
// 2 (a stray request, the method rotating).
func floodDatagram(kind, n, port int, marker string) string {
	id := fmt.Sprintf("%s-%d", marker, n)
	switch kind {
	case 0:
		return "\x16\x03\x01 not sip " + id + "\r\n"
	case 1:
		return "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:" + strconv.Itoa(port) + ";branch=z9hG4bK" + id + "\r\n" +
			"From: <sip:a@b>;tag=" + id + "\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: " + id + "\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
	default:
		methods := []string{"INVITE", "OPTIONS", "BYE", "NOTIFY", "REGISTER"}
		return rawRequest(methods[n%len(methods)], id, "UDP", port)
	}
}

// dropRecords counts the "sip datagram dropped" records in the JSON log
// out and sums the counts of records they say were held back.
func dropRecords(t testing.TB, out string) (records, held int) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec struct {
			Msg        string `json:"msg"`
			Suppressed int    `json:"suppressed"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		if rec.Msg == "sip datagram dropped" {
			records++
			held += rec.Suppressed
		}
	}
	return records, held
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// TestUDPPoolForgetsSilentPeers: every peer that answers transfer adds an
// entry to sipgo's UDP pool; once they have been silent for a
// transaction's lifetime the entries are deleted, except the latest
// source's, which sipgo would not add again.
func TestUDPPoolForgetsSilentPeers(t *testing.T) {
	const peers = 20
	c := listen(t)
	base := c.Counters().UDPPoolEntries
	for range peers {
		require.Equal(t, 200, answerOptions(t, c, newRawPeer(t)).StatusCode)
	}
	require.Equal(t, base+peers, c.Counters().UDPPoolEntries, "one entry per peer")
	require.Equal(t, peers, c.Counters().UDPSources)

	quickSweep(c, 100*time.Millisecond)
	time.Sleep(150 * time.Millisecond)
	// The sweep runs on the next datagram (a dropped one here).
	stranger := newRawPeer(t)
	stranger.send(t, c, "garbage")
	require.Eventually(t, func() bool { return c.Counters().UDPGarbage == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, base+1, c.Counters().UDPPoolEntries, "only the latest source is kept")
	require.Equal(t, 1, c.Counters().UDPSources)
}

// TestUDPLatestSourceKeepsItsEntry: a leg's peer that is the latest source
// and silent for longer than the sweep's idle time keeps its pool entry,
// so its next request is answered from the listening socket (sipgo only
// adds a source again when it differs from the previous one, and without
// the entry would answer from a new socket).
func TestUDPLatestSourceKeepsItsEntry(t *testing.T) {
	c := listen(t)
	base := c.Counters().UDPPoolEntries
	require.Equal(t, 200, answerOptions(t, c, newRawPeer(t)).StatusCode)
	peer := newRawPeer(t)
	l := startLeg(t, c, peer)
	require.Equal(t, base+2, c.Counters().UDPPoolEntries)
	quickSweep(c, 50*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	stranger := newRawPeer(t)
	stranger.send(t, c, "garbage") // dropped; sweeps
	require.Eventually(t, func() bool { return c.Counters().UDPGarbage == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, base+1, c.Counters().UDPPoolEntries, "the other peer's entry went, the latest's stayed")
	peer.send(t, c, l.bye(l.remote, l.localTag, "late-bye", peer.port))
	res, from := peer.next(t)
	require.Equal(t, 200, res.(*sip.Response).StatusCode)
	require.Equal(t, c.Addr().String(), from.String(), "answered from the listening socket")
}

// quickSweep makes c's guard forget sources silent for idle, sweeping on
// every datagram from now on.
func quickSweep(c *Client, idle time.Duration) {
	c.guard.mu.Lock()
	defer c.guard.mu.Unlock()
	c.guard.life, c.guard.every, c.guard.nextSweep = idle, time.Millisecond, time.Time{}
}

// TestUDPGuardForgetsUnansweredRequests: the branches of requests nobody
// answers are forgotten after a transaction's lifetime even when nothing
// at all arrives on the socket (the sweep runs on sends too), and a late
// answer to one is then dropped.
func TestUDPGuardForgetsUnansweredRequests(t *testing.T) {
	c := listen(t)
	quickSweep(c, 50*time.Millisecond)
	sent := func() int {
		c.guard.mu.Lock()
		defer c.guard.mu.Unlock()
		return len(c.guard.sent)
	}
	blackhole := newRawPeer(t)
	var first *sip.Request
	for i := range 20 {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		_, err := c.Do(ctx, sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: blackhole.port}))
		cancel()
		require.ErrorIs(t, err, ErrTimeout)
		if i == 0 {
			msg, _ := blackhole.next(t)
			first = msg.(*sip.Request)
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.LessOrEqual(t, sent(), 8, "at most the last ~50 ms of requests are remembered")
	require.Zero(t, c.Counters().UDPPassed+c.Counters().UDPDropped(), "nothing arrived")
	blackhole.send(t, c, sip.NewResponseFromRequest(first, 200, "OK", nil).String())
	require.Eventually(t, func() bool { return c.Counters().UDPStrayResponse == 1 }, 5*time.Second, time.Millisecond,
		"a response after the transaction's lifetime is not let in")
}
