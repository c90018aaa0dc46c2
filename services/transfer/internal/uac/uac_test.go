package uac

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// listen is a client on a loopback port, closed when the test ends.
func listen(t *testing.T) *Client {
	t.Helper()
	c, err := Listen(t.Context(), "127.0.0.1:0", "127.0.0.1", testLogger(t), Options{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// TestRequestsLeaveFromTheListeningSocket checks on the wire what SIPp
// depends on: the top Via names via host and the bound port explicitly,
// the datagram's source is that socket, and the response sent back to the
// Via reaches the transaction.
func TestRequestsLeaveFromTheListeningSocket(t *testing.T) {
	logger := testLogger(t)
	c, err := Listen(t.Context(), "127.0.0.1:0", "transfer.test", logger, Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, c.Close()) }()

	var lc net.ListenConfig
	peer, err := lc.ListenPacket(t.Context(), "udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { require.NoError(t, peer.Close()) }()
	peerAddr := peer.LocalAddr().(*net.UDPAddr)

	type result struct {
		res *sip.Response
		err error
	}
	done := make(chan result, 1)
	go func() {
		req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: peerAddr.Port})
		res, err := c.Do(t.Context(), req)
		done <- result{res, err}
	}()

	require.NoError(t, peer.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, 4096)
	n, from, err := peer.ReadFrom(buf)
	require.NoError(t, err)
	require.Equal(t, c.Addr().String(), from.String(), "sent from the listening socket")
	msg, err := sip.NewParser().ParseSIP(buf[:n])
	require.NoError(t, err)
	req := msg.(*sip.Request)
	via := req.Via()
	require.Equal(t, "transfer.test", via.Host)
	require.Equal(t, c.Addr().Port, via.Port)

	// Answer to the address the Via would resolve to (here: the socket).
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	_, err = peer.WriteTo([]byte(res.String()), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: via.Port})
	require.NoError(t, err)
	r := <-done
	require.NoError(t, r.err)
	require.Equal(t, 200, r.res.StatusCode)
}

func TestListenOnABusyPortFails(t *testing.T) {
	a := listen(t)
	_, err := Listen(t.Context(), a.Addr().String(), "127.0.0.1", testLogger(t), Options{})
	require.ErrorContains(t, err, "listen sip")
}

func TestInviteOverTLSWithoutTLSFails(t *testing.T) {
	c := listen(t)
	require.Nil(t, c.TLSAddr())
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sips", User: "q", Host: "127.0.0.1", Port: 5061})
	req.SetTransport("TLS")
	_, err := c.Invite(t.Context(), req)
	require.ErrorIs(t, err, ErrNoTLS)
}

// TestTCPListensOnTheUDPPort: TCP is served on the port UDP is bound to;
// a fixed port whose TCP side is taken fails clearly instead of running
// without TCP.
func TestTCPListensOnTheUDPPort(t *testing.T) {
	logger := testLogger(t)
	c, err := Listen(t.Context(), "127.0.0.1:0", "127.0.0.1", logger, Options{})
	require.NoError(t, err)
	require.Equal(t, c.Addr().Port, c.TCPAddr().Port)
	require.NoError(t, c.Close())

	var lc net.ListenConfig
	busy, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { require.NoError(t, busy.Close()) }()
	_, err = Listen(t.Context(), busy.Addr().String(), "127.0.0.1", logger, Options{})
	require.ErrorContains(t, err, "listen sip tcp")
}

// rawPeer is a UDP socket on loopback that writes hand-made requests to
// c and returns the final response to each.
type rawPeer struct {
	conn net.PacketConn
	port int
}

func newRawPeer(t *testing.T) *rawPeer {
	t.Helper()
	var lc net.ListenConfig
	conn, err := lc.ListenPacket(t.Context(), "udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, conn.Close()) })
	return &rawPeer{conn: conn, port: conn.LocalAddr().(*net.UDPAddr).Port}
}

// rawRequest is a request of method outside any of c's dialogs (Via branch
// z9hG4bK+id, Call-ID id) sent by transport from port.
func rawRequest(method, id, transport string, port int) string {
	return method + " sip:baton-transfer@127.0.0.1 SIP/2.0\r\n" +
		"Via: SIP/2.0/" + transport + " 127.0.0.1:" + strconv.Itoa(port) + ";branch=z9hG4bK" + id + "\r\n" +
		"From: <sip:x@127.0.0.1>;tag=a\r\nTo: <sip:baton-transfer@127.0.0.1>;tag=b\r\n" +
		"Call-ID: " + id + "\r\nCSeq: 2 " + method + "\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
}

// send writes msg to c's UDP socket.
func (p *rawPeer) send(t *testing.T, c *Client, msg string) {
	t.Helper()
	_, err := p.conn.WriteTo([]byte(msg), c.Addr())
	require.NoError(t, err)
}

// silence asserts that nothing comes back within d.
func (p *rawPeer) silence(t *testing.T, d time.Duration) {
	t.Helper()
	require.NoError(t, p.conn.SetReadDeadline(time.Now().Add(d)))
	n, _, err := p.conn.ReadFrom(make([]byte, 4096))
	require.Error(t, err, "got an answer: %d bytes", n)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
}

// tcpRequest sends a request of method outside any dialog (Via branch
// z9hG4bK+id, Call-ID id) to c over a new TCP connection and returns its
// final response.
func tcpRequest(t *testing.T, c *Client, method, id string) *sip.Response {
	t.Helper()
	var d net.Dialer
	conn, err := d.DialContext(t.Context(), "tcp", c.TCPAddr().String())
	require.NoError(t, err)
	defer func() { require.NoError(t, conn.Close()) }()
	port := conn.LocalAddr().(*net.TCPAddr).Port
	_, err = conn.Write([]byte(rawRequest(method, id, "TCP", port)))
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	stream := sip.NewParser().NewSIPStream()
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		require.NoError(t, err)
		var final *sip.Response
		perr := stream.ParseSIPStream(buf[:n], func(m sip.Message) {
			if res, ok := m.(*sip.Response); ok && res.StatusCode >= 200 && final == nil {
				final = res
			}
		})
		if perr != nil && !errors.Is(perr, sip.ErrParseSipPartial) {
			require.NoError(t, perr)
		}
		if final != nil {
			return final
		}
	}
}

// TestStrayInviteGets481: an INVITE outside any of our legs is answered
// 481 over TCP, not taken as a new call (transfer asks; it never answers
// calls). Over UDP it gets nothing: the socket takes only what belongs to
// transfer's transactions and dialogs (TestUDPTakesOnlyOurs).
func TestStrayInviteGets481(t *testing.T) {
	c := listen(t)
	require.Equal(t, 481, tcpRequest(t, c, "INVITE", "stray-1").StatusCode)
	peer := newRawPeer(t)
	peer.send(t, c, rawRequest("INVITE", "stray-2", "UDP", peer.port))
	peer.silence(t, 300*time.Millisecond)
	require.Eventually(t, func() bool { return c.Counters().UDPStrayRequest == 1 }, 5*time.Second, 10*time.Millisecond)
}

// TestOtherMethodsGetAllow: what the user agent does not serve is answered
// with the methods it does (RFC 3261 8.2.1): UPDATE 405, an unknown method
// 501, OPTIONS 200; each names Allow, without UPDATE.
func TestOtherMethodsGetAllow(t *testing.T) {
	c := listen(t)
	for i, tc := range []struct {
		method string
		code   int
	}{{"UPDATE", 405}, {"FROBNICATE", 501}, {"OPTIONS", 200}} {
		res := tcpRequest(t, c, tc.method, "other-"+strconv.Itoa(i))
		require.Equal(t, tc.code, res.StatusCode, tc.method)
		allow := res.GetHeader("Allow")
		require.NotNil(t, allow, tc.method)
		require.Equal(t, Allow, allow.Value())
		require.NotContains(t, allow.Value(), "UPDATE")
	}
}
