package stack

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/cmd/baton/internal/checker"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
)

// sipMessage is one SIP message read from a stream: its first line, its
// headers and its body.
type sipMessage struct {
	line   string
	header textproto.MIMEHeader
	body   string
}

// readSIP reads one message from a SIP stream (RFC 3261 18.3: the body is
// Content-Length bytes).
func readSIP(t *testing.T, r *textproto.Reader) sipMessage {
	t.Helper()
	line, err := r.ReadLine()
	require.NoError(t, err)
	h, err := r.ReadMIMEHeader()
	require.NoError(t, err)
	n, err := strconv.Atoi(strings.TrimSpace(h.Get("Content-Length")))
	require.NoError(t, err, "Content-Length of %q", line)
	body := make([]byte, n)
	_, err = io.ReadFull(r.R, body)
	require.NoError(t, err)
	return sipMessage{line: line, header: h, body: string(body)}
}

// tag is the tag parameter of a From or To value.
func tag(v string) string {
	_, after, ok := strings.Cut(v, ";tag=")
	if !ok {
		return ""
	}
	t, _, _ := strings.Cut(after, ";")
	return t
}

// tcpSBC is an SBC calling ingress over TCP (RFC 3261 18): its listener,
// where transfer's requests arrive on connections of their own, and its
// connection to ingress, which carries the call's dialog.
type tcpSBC struct {
	t      *testing.T
	s      *Stack
	ln     net.Listener
	conn   net.Conn
	in     *textproto.Reader
	me     string // the listener's address (Contact)
	local  string // the connection's local address (Via)
	callID string
	tag    string // the SBC's From tag
	// Set by invite: ingress's tag and Contact.
	ingressTag, contact string
}

func newTCPSBC(t *testing.T, s *Stack, callID, fromTag string) *tcpSBC {
	t.Helper()
	me := fmt.Sprintf("127.0.0.1:%d", s.opts.SBCPort)
	ln, err := net.Listen("tcp", me)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	conn, err := net.Dial("tcp", s.IngressAddr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	require.NoError(t, conn.SetDeadline(time.Now().Add(60*time.Second)))
	return &tcpSBC{t: t, s: s, ln: ln, conn: conn, in: textproto.NewReader(bufio.NewReader(conn)), me: me,
		local: conn.LocalAddr().String(), callID: callID, tag: fromTag}
}

// send writes a message: head's lines end in LF here, CRLF on the wire;
// body goes as it is, after the blank line.
func (c *tcpSBC) send(head, body string) {
	c.t.Helper()
	_, err := io.WriteString(c.conn, strings.ReplaceAll(head, "\n", "\r\n")+"\r\n"+body)
	require.NoError(c.t, err)
}

// invite sends the INVITE with headers (LF-ended lines) and the SDP (LF
// lines), and returns ingress's final answer, which must be 200.
func (c *tcpSBC) invite(headers, sdp string) sipMessage {
	c.t.Helper()
	sdp = strings.ReplaceAll(sdp, "\n", "\r\n")
	c.send(fmt.Sprintf("INVITE sip:agent@%s;transport=tcp SIP/2.0\n"+
		"Via: SIP/2.0/TCP %s;branch=z9hG4bK-%s-inv\n"+
		"From: <sip:sbc@%s>;tag=%s\nTo: <sip:agent@%s>\nCall-ID: %s\nCSeq: 1 INVITE\n"+
		"Contact: <sip:sbc@%s;transport=tcp>\nMax-Forwards: 70\n%s"+
		"Content-Type: application/sdp\nContent-Length: %d\n", c.s.IngressAddr, c.local, c.tag, c.me, c.tag, c.s.IngressAddr,
		c.callID, c.me, headers, len(sdp)), sdp)
	var ok sipMessage
	for {
		ok = readSIP(c.t, c.in)
		if !strings.HasPrefix(ok.line, "SIP/2.0 1") {
			break
		}
	}
	require.Equal(c.t, "SIP/2.0 200 OK", ok.line, "the INVITE over TCP is answered")
	c.ingressTag = tag(ok.header.Get("To"))
	require.NotEmpty(c.t, c.ingressTag)
	c.contact = strings.Trim(ok.header.Get("Contact"), "<>")
	return ok
}

// inDialog sends a request in the call's dialog on its connection.
func (c *tcpSBC) inDialog(method string, cseq int, extra, body string) {
	c.t.Helper()
	c.send(fmt.Sprintf("%s %s SIP/2.0\nVia: SIP/2.0/TCP %s;branch=z9hG4bK-%s-%d\n"+
		"From: <sip:sbc@%s>;tag=%s\nTo: <sip:agent@%s>;tag=%s\nCall-ID: %s\nCSeq: %d %s\nMax-Forwards: 70\n%s"+
		"Content-Length: %d\n", method, c.contact, c.local, c.tag, cseq, c.me, c.tag, c.s.IngressAddr, c.ingressTag, c.callID,
		cseq, method, extra, len(body)), body)
}

// acceptRequest takes the next connection transfer opens to the SBC and
// reads the request on it.
func (c *tcpSBC) acceptRequest() (sipMessage, net.Conn) {
	c.t.Helper()
	require.NoError(c.t, c.ln.(*net.TCPListener).SetDeadline(time.Now().Add(60*time.Second)))
	rc, err := c.ln.Accept()
	require.NoError(c.t, err)
	c.t.Cleanup(func() { _ = rc.Close() })
	require.NoError(c.t, rc.SetDeadline(time.Now().Add(60*time.Second)))
	return readSIP(c.t, textproto.NewReader(bufio.NewReader(rc))), rc
}

// answer202 answers a request read by acceptRequest 202 Accepted on rc.
func (c *tcpSBC) answer202(req sipMessage, rc net.Conn) {
	c.t.Helper()
	_, err := io.WriteString(rc, strings.ReplaceAll(fmt.Sprintf("SIP/2.0 202 Accepted\nVia: %s\nFrom: %s\nTo: %s\nCall-ID: %s\nCSeq: %s\nContent-Length: 0\n\n",
		req.header.Get("Via"), req.header.Get("From"), req.header.Get("To"), c.callID, req.header.Get("Cseq")), "\n", "\r\n"))
	require.NoError(c.t, err)
}

// TestEndToEndOverTCP: an SBC calls over TCP (RFC 3261 18) through the
// whole pipeline: ingress answers on its TCP listener and records the
// dialog's transport, transfer sends the REFER over TCP to the SBC's
// Contact (a connection of its own, Via SIP/2.0/TCP), the SBC's NOTIFY and
// BYE go to ingress on the call's connection, and the handoff reaches
// ClickHouse as succeeded.
func TestEndToEndOverTCP(t *testing.T) {
	s := startStack(t)
	since := time.Now().Add(-time.Second)

	const callID = "tcp-e2e-1"
	c := newTCPSBC(t, s, callID, "sbc-tcp-1")
	ok := c.invite("X-Customer-Id: CUST-TCP-7\nX-Intent: cancel_contract\nX-Language: de-DE\n",
		"v=0\no=sbc 1 1 IN IP4 127.0.0.1\ns=sbc\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 40000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n")
	require.Contains(t, strings.Trim(ok.header.Get("Contact"), "<>"), "transport=tcp", "ingress's Contact keeps the call on TCP")
	c.inDialog("ACK", 1, "", "")

	// The REFER comes from transfer, on a connection of its own.
	refer, rc := c.acceptRequest()
	require.True(t, strings.HasPrefix(refer.line, "REFER "), refer.line)
	require.True(t, strings.HasPrefix(refer.header.Get("Via"), "SIP/2.0/TCP "), "Via %q", refer.header.Get("Via"))
	require.Equal(t, callID, refer.header.Get("Call-Id"))
	require.Equal(t, c.ingressTag, tag(refer.header.Get("From")), "the REFER is in the call's dialog")
	headers, err := sipx.ReferToHeaders(refer.header.Get("Refer-To"))
	require.NoError(t, err)
	got := map[string]string{}
	for _, h := range headers {
		got[h.Name] = h.Value
	}
	require.Equal(t, "CUST-TCP-7", got["X-Customer-Id"])
	require.Equal(t, "cancel_contract", got["X-Intent"])
	c.answer202(refer, rc)
	referCSeq, _, _ := strings.Cut(refer.header.Get("Cseq"), " ")

	// The SBC reports the transfer done, then hangs up, on the call's
	// connection to ingress.
	frag := "SIP/2.0 200 OK\r\n"
	c.inDialog("NOTIFY", 2, "Event: refer;id="+referCSeq+"\nSubscription-State: terminated;reason=noresource\nContent-Type: message/sipfrag\n", frag)
	require.Equal(t, "SIP/2.0 200 OK", readSIP(t, c.in).line, "NOTIFY answered")
	c.inDialog("BYE", 3, "", "")
	require.Equal(t, "SIP/2.0 200 OK", readSIP(t, c.in).line, "BYE answered")

	requireSucceededHandoff(t, s, since, callID, "CUST-TCP-7")

	// Kafka: the call's dialog was recorded as TCP, and it ended by the
	// SBC's BYE.
	recs, err := checker.Read(t.Context(), s.BrokerAddr)
	require.NoError(t, err)
	var started *batonv1.CallStarted
	var ended *batonv1.CallEnded
	for _, r := range recs {
		switch m := r.Event.Data.(type) {
		case *batonv1.CallStarted:
			if m.GetDialog().GetCallId() == callID {
				started = m
			}
		case *batonv1.CallEnded:
			if m.GetCallId() == callID {
				ended = m
			}
		}
	}
	require.NotNil(t, started)
	require.Equal(t, batonv1.Transport_TRANSPORT_TCP, started.GetDialog().GetTransport())
	require.NotNil(t, ended)
	require.Equal(t, batonv1.Party_PARTY_REMOTE, ended.GetEndedBy())
}
