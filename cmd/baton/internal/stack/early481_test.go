package stack

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/cmd/baton/internal/checker"
)

// TestEndToEndREFERBefore200: the race every UDP deployment meets. The
// SBC's copy of ingress's 200 OK is lost, Baton decides at once, and
// transfer's REFER reaches the SBC before any copy of the 200 does. A
// strict SBC answers such a REFER 481 (RFC 3261 12.2.2: no dialog yet).
// Here the SBC plays that over real UDP against the whole stack: it
// treats the first 200 as lost, answers every REFER 481 until a
// retransmitted 200 has come and been ACKed, then 202. Transfer must send
// the REFER again with the next CSeq each time (a new transaction, the
// same Refer-To), the handoff must end as succeeded, and Kafka must hold
// ACCEPTED 202 then SUCCEEDED 200 for it, with no FAILED.
func TestEndToEndREFERBefore200(t *testing.T) {
	s := startStack(t)
	since := time.Now().Add(-time.Second)

	me := fmt.Sprintf("127.0.0.1:%d", s.opts.SBCPort)
	laddr, err := net.ResolveUDPAddr("udp", me)
	require.NoError(t, err)
	sock, err := net.ListenUDP("udp", laddr)
	require.NoError(t, err)
	defer func() { _ = sock.Close() }()
	ingress, err := net.ResolveUDPAddr("udp", s.IngressAddr)
	require.NoError(t, err)
	deadline := time.Now().Add(60 * time.Second)
	require.NoError(t, sock.SetDeadline(deadline))

	send := func(to *net.UDPAddr, head, body string) {
		t.Helper()
		_, err := sock.WriteToUDP([]byte(strings.ReplaceAll(head, "\n", "\r\n")+"\r\n"+body), to)
		require.NoError(t, err)
	}
	type datagram struct {
		sipMessage
		from *net.UDPAddr
	}
	buf := make([]byte, 65535)
	read := func() datagram {
		t.Helper()
		n, from, err := sock.ReadFromUDP(buf)
		require.NoError(t, err, "the SBC waited for SIP until %s", deadline.Format(time.TimeOnly))
		m := readSIP(t, textproto.NewReader(bufio.NewReader(bytes.NewReader(buf[:n]))))
		return datagram{sipMessage: m, from: from}
	}

	const callID, fromTag = "early481-e2e-1", "sbc-early-1"
	sdp := strings.ReplaceAll("v=0\no=sbc 1 1 IN IP4 127.0.0.1\ns=sbc\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 40002 RTP/AVP 0\n"+
		"a=rtpmap:0 PCMU/8000\n", "\n", "\r\n")
	send(ingress, fmt.Sprintf("INVITE sip:agent@%s SIP/2.0\n"+
		"Via: SIP/2.0/UDP %s;branch=z9hG4bK-early-inv\n"+
		"From: <sip:sbc@%s>;tag=%s\nTo: <sip:agent@%s>\nCall-ID: %s\nCSeq: 1 INVITE\n"+
		"Contact: <sip:sbc@%s>\nMax-Forwards: 70\n"+
		"X-Customer-Id: CUST-EARLY-9\nX-Intent: cancel_contract\nX-Language: en-GB\n"+
		"Content-Type: application/sdp\nContent-Length: %d\n", s.IngressAddr, me, me, fromTag, s.IngressAddr, callID, me, len(sdp)), sdp)

	// The SBC's side of the dialog: known once a 200 that is not the
	// first, lost one has come after a REFER was refused.
	var (
		ingressTag, contact string
		oks, refused        int
		known               bool
		refers              []sipMessage
		answered            = map[string]string{} // REFER Via (its branch) -> status sent
	)
	const refuse, accept = "481 Call/Transaction Does Not Exist", "202 Accepted"
	answerRefer := func(d datagram, status string) {
		send(d.from, fmt.Sprintf("SIP/2.0 %s\nVia: %s\nFrom: %s\nTo: %s\nCall-ID: %s\nCSeq: %s\nContent-Length: 0\n",
			status, d.header.Get("Via"), d.header.Get("From"), d.header.Get("To"), callID, d.header.Get("Cseq")), "")
	}
	ack := func() {
		send(ingress, fmt.Sprintf("ACK %s SIP/2.0\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-early-ack\n"+
			"From: <sip:sbc@%s>;tag=%s\nTo: <sip:agent@%s>;tag=%s\nCall-ID: %s\nCSeq: 1 ACK\nMax-Forwards: 70\nContent-Length: 0\n",
			contact, me, me, fromTag, s.IngressAddr, ingressTag, callID), "")
	}
	var accepted datagram
	for accepted.from == nil {
		d := read()
		switch {
		case strings.HasPrefix(d.line, "SIP/2.0 1"):
		case d.line == "SIP/2.0 200 OK":
			require.Equal(t, "1 INVITE", d.header.Get("Cseq"))
			oks++
			ingressTag, contact = tag(d.header.Get("To")), strings.Trim(d.header.Get("Contact"), "<>")
			if oks > 1 && refused > 0 {
				known = true
				ack()
			}
		case strings.HasPrefix(d.line, "REFER "):
			require.Equal(t, callID, d.header.Get("Call-Id"))
			branch := d.header.Get("Via")
			if status, seen := answered[branch]; seen { // a retransmission: the same answer
				answerRefer(d, status)
				continue
			}
			refers = append(refers, d.sipMessage)
			if !known {
				refused++
				answered[branch] = refuse
				answerRefer(d, refuse)
				continue
			}
			answered[branch] = accept
			answerRefer(d, accept)
			accepted = d
		case strings.HasPrefix(d.line, "BYE "):
			t.Fatalf("the call was ended (%q) after %d REFERs answered 481 and none accepted: "+
				"transfer gave the handoff up instead of sending the REFER again", d.line, refused)
		default:
			t.Fatalf("unexpected before the REFER was accepted: %q", d.line)
		}
	}
	require.Positive(t, refused, "the REFER came before a copy of the 200 that counts")
	require.Greater(t, oks, 1, "ingress retransmitted its 200 OK until the ACK")
	t.Logf("REFER answered 481 %d times, then 202; ingress sent the 200 OK %d times before the ACK", refused, oks)

	// Each REFER is a new transaction in the same dialog, with the next
	// CSeq and the same Refer-To.
	first := refers[0]
	firstCSeq := cseqNumber(t, first.header.Get("Cseq"))
	for i, r := range refers {
		require.Equal(t, fmt.Sprintf("%d REFER", firstCSeq+i), r.header.Get("Cseq"), "REFER %d", i+1)
		require.Equal(t, first.header.Get("Refer-To"), r.header.Get("Refer-To"))
		require.Equal(t, ingressTag, tag(r.header.Get("From")), "REFER %d is in the call's dialog", i+1)
		require.Equal(t, fromTag, tag(r.header.Get("To")))
		if i > 0 {
			require.NotEqual(t, refers[i-1].header.Get("Via"), r.header.Get("Via"), "REFER %d: a new branch", i+1)
		}
	}

	// The SBC reports the transfer done and hangs up, to ingress.
	referCSeq := strconv.Itoa(firstCSeq + len(refers) - 1)
	inDialog := func(method string, cseq int, extra, body string) {
		send(ingress, fmt.Sprintf("%s %s SIP/2.0\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-early-%d\n"+
			"From: <sip:sbc@%s>;tag=%s\nTo: <sip:agent@%s>;tag=%s\nCall-ID: %s\nCSeq: %d %s\nMax-Forwards: 70\n%s"+
			"Content-Length: %d\n", method, contact, me, cseq, me, fromTag, s.IngressAddr, ingressTag, callID, cseq, method,
			extra, len(body)), body)
	}
	// awaitAnswer reads until ingress answers the request of cseq,
	// answering copies of the accepted REFER and ACKing late 200s.
	awaitAnswer := func(cseq string) string {
		t.Helper()
		for {
			d := read()
			switch {
			case strings.HasPrefix(d.line, "REFER "):
				require.Equal(t, accepted.header.Get("Via"), d.header.Get("Via"), "only copies of the accepted REFER")
				answerRefer(d, accept)
			case d.header.Get("Cseq") == "1 INVITE":
				ack()
			case d.header.Get("Cseq") == cseq:
				return d.line
			default:
				t.Fatalf("unexpected while waiting for the answer to %s: %q", cseq, d.line)
			}
		}
	}
	inDialog("NOTIFY", 2, "Event: refer;id="+referCSeq+"\nSubscription-State: terminated;reason=noresource\n"+
		"Content-Type: message/sipfrag\n", "SIP/2.0 200 OK\r\n")
	require.Equal(t, "SIP/2.0 200 OK", awaitAnswer("2 NOTIFY"), "NOTIFY answered")
	inDialog("BYE", 3, "", "")
	require.Equal(t, "SIP/2.0 200 OK", awaitAnswer("3 BYE"), "BYE answered")

	requireSucceededHandoff(t, s, since, callID, "CUST-EARLY-9")

	// Kafka: the 481s never became an outcome; the accepted REFER and the
	// final NOTIFY did.
	recs, err := checker.Read(t.Context(), s.BrokerAddr)
	require.NoError(t, err)
	require.Equal(t, []string{"OUTCOME_STATUS_ACCEPTED 202", "OUTCOME_STATUS_SUCCEEDED 200"}, transferSteps(recs)[callID])
}

// cseqNumber is the number of a CSeq value ("7 REFER").
func cseqNumber(t *testing.T, v string) int {
	t.Helper()
	n, _, _ := strings.Cut(v, " ")
	i, err := strconv.Atoi(n)
	require.NoError(t, err, "CSeq %q", v)
	return i
}
