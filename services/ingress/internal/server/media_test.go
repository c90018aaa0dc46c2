package server

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/pkg/pcm"
	"github.com/baton-voice/baton/services/ingress/internal/config"
)

// sbcCall is one call from a raw SBC, with the SBC's RTP socket.
type sbcCall struct {
	t      *testing.T
	in     *ingress
	sbc    *rawSBC
	rtp    *net.UDPConn
	callID string
	toTag  string
	cseq   int
	// answer is the last SDP ingress sent.
	answer string
}

func sbcOffer(rtpPort int, codecs, dir string) string {
	return strings.NewReplacer("m=audio 40000 RTP/AVP 8 0 101", "m=audio "+strconv.Itoa(rtpPort)+" RTP/AVP "+codecs,
		"a=sendrecv", "a="+dir).Replace(offer)
}

// request renders an in-dialog request (toTag set) or the INVITE.
func (c *sbcCall) request(method sip.RequestMethod, cseq int, branch, contentType, body string) []byte {
	ct := ""
	if body != "" {
		ct = "Content-Type: " + contentType + "\r\n"
	}
	toTag := ""
	if c.toTag != "" {
		toTag = ";tag=" + c.toTag
	}
	return fmt.Appendf(nil, "%s sip:+15550200@127.0.0.1:%d SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=%s\r\n"+
		"From: <sip:+15550100@127.0.0.1>;tag=raw\r\n"+
		"To: <sip:+15550200@127.0.0.1>%s\r\n"+
		"Call-ID: %s\r\nCSeq: %d %s\r\nContact: <sip:sbc@127.0.0.1:%d>\r\nMax-Forwards: 70\r\n"+
		"%sContent-Length: %d\r\n\r\n%s",
		method, c.in.port, c.sbc.port, branch, toTag, c.callID, cseq, method, c.sbc.port, ct, len(body), body)
}

// final sends req and returns its final response (skipping 1xx and
// retransmitted 200s of earlier transactions).
func (c *sbcCall) final(req []byte, method sip.RequestMethod, cseq int) *sip.Response {
	c.t.Helper()
	c.sbc.send(c.t, c.in.srv.Addr(), req)
	for {
		res := c.sbc.read(c.t, 10*time.Second)
		require.NotNil(c.t, res, "no answer to %s %d", method, cseq)
		if res.StatusCode >= 200 && res.CSeq().MethodName == method && int(res.CSeq().SeqNo) == cseq {
			return res
		}
	}
}

// inDialog sends an in-dialog request with the next CSeq and returns the final answer.
func (c *sbcCall) inDialog(method sip.RequestMethod, contentType, body string) *sip.Response {
	c.t.Helper()
	c.cseq++
	return c.final(c.request(method, c.cseq, fmt.Sprintf("z9hG4bK-%s-%d", c.callID, c.cseq), contentType, body), method, c.cseq)
}

func (c *sbcCall) ack(body string) {
	c.t.Helper()
	c.sbc.send(c.t, c.in.srv.Addr(), c.request(sip.ACK, c.cseq, fmt.Sprintf("z9hG4bK-%s-ack-%d", c.callID, c.cseq), "application/sdp", body))
}

// dial sets up a call and ACKs it.
func dial(t *testing.T, in *ingress, callID, codecs string) *sbcCall {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, conn.Close()) })
	c := &sbcCall{t: t, in: in, sbc: newRawSBC(t), rtp: conn, callID: callID, cseq: 1}
	res := c.final(c.request(sip.INVITE, 1, "z9hG4bK-"+callID, "application/sdp", sbcOffer(c.rtpPort(), codecs, "sendrecv")), sip.INVITE, 1)
	require.Equal(t, sip.StatusOK, res.StatusCode, res.Short())
	c.toTag, _ = res.To().Params.Get("tag")
	c.answer = string(res.Body())
	c.ack("")
	return c
}

func (c *sbcCall) rtpPort() int { return c.rtp.LocalAddr().(*net.UDPAddr).Port }

// ingressRTP is the RTP address in ingress's last SDP.
func (c *sbcCall) ingressRTP() *net.UDPAddr {
	c.t.Helper()
	for line := range strings.SplitSeq(c.answer, "\r\n") {
		if rest, ok := strings.CutPrefix(line, "m=audio "); ok {
			p, _, _ := strings.Cut(rest, " ")
			port, err := strconv.Atoi(p)
			require.NoError(c.t, err)
			return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
		}
	}
	c.t.Fatalf("no m=audio in %q", c.answer)
	return nil
}

func sdpDirection(t *testing.T, body []byte) string {
	t.Helper()
	for _, d := range []string{"sendrecv", "sendonly", "recvonly", "inactive"} {
		if strings.Contains(string(body), "a="+d+"\r\n") {
			return d
		}
	}
	t.Fatalf("no direction in %q", body)
	return ""
}

func TestReInvite(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, nil)
	consumer := newCalls(t, brokers, topics.Calls)
	c := dial(t, in, "reinvite-1", "0 101")
	require.Equal(t, events.TypeCallStarted, consumer.next(t).Type)
	oLine := func(body []byte) string {
		for line := range strings.SplitSeq(string(body), "\r\n") {
			if strings.HasPrefix(line, "o=") {
				return line
			}
		}
		return ""
	}
	prevO := oLine([]byte(c.answer))

	cases := []struct {
		name, offerDir, wantDir string
		hold                    bool
	}{
		{"hold", "sendonly", "recvonly", true},
		{"inactive", "inactive", "inactive", true},
		{"resume", "sendrecv", "sendrecv", false},
	}
	for _, tc := range cases {
		res := c.inDialog(sip.INVITE, "application/sdp", sbcOffer(c.rtpPort(), "0 101", tc.offerDir))
		require.Equal(t, sip.StatusOK, res.StatusCode, tc.name)
		require.Equal(t, tc.wantDir, sdpDirection(t, res.Body()), tc.name)
		o := oLine(res.Body())
		require.NotEqual(t, prevO, o, "%s: the o= version must grow", tc.name)
		prevO = o
		c.ack("")
		ev := consumer.next(t)
		require.Equal(t, events.TypeCallUpdated, ev.Type, tc.name)
		u := ev.Data.(*batonv1.CallUpdated)
		require.Equal(t, c.callID, u.GetCallId())
		require.Equal(t, tc.wantDir, u.GetDirection(), tc.name)
		require.Equal(t, tc.offerDir, u.GetRemoteDirection(), tc.name)
		require.Equal(t, tc.hold, u.GetHold(), tc.name)
		require.Equal(t, "PCMU", u.GetCodec())
		require.EqualValues(t, c.cseq, u.GetCseq())
		require.Equal(t, "127.0.0.1:"+strconv.Itoa(c.rtpPort()), u.GetRemoteRtpAddress())
	}

	// An unsupported codec: 488, and the call is still up.
	res := c.inDialog(sip.INVITE, "application/sdp", sbcOffer(c.rtpPort(), "18", "sendrecv"))
	require.Equal(t, sip.StatusNotAcceptableHere, res.StatusCode)
	c.ack("") // the ACK of a non-2xx goes to the transaction

	// No SDP: ingress offers in the 200, the SBC answers in the ACK with
	// PCMA on a new port.
	res = c.inDialog(sip.INVITE, "", "")
	require.Equal(t, sip.StatusOK, res.StatusCode)
	require.Contains(t, string(res.Body()), "RTP/AVP 0 8 101\r\n")
	require.Equal(t, "sendrecv", sdpDirection(t, res.Body()))
	c.ack(sbcOffer(c.rtpPort()+1000, "8", "sendrecv"))
	ev := consumer.next(t)
	require.Equal(t, events.TypeCallUpdated, ev.Type, "a 488 publishes nothing; the ACK's answer does")
	u := ev.Data.(*batonv1.CallUpdated)
	require.Equal(t, "PCMA", u.GetCodec())
	require.Equal(t, "127.0.0.1:"+strconv.Itoa(c.rtpPort()+1000), u.GetRemoteRtpAddress())
	require.False(t, u.GetHold())
	require.Equal(t, string(res.Body()), u.GetLocalSdp())

	// An old CSeq is refused (RFC 3261 12.2.2).
	stale := c.final(c.request(sip.INVITE, 2, "z9hG4bK-stale", "application/sdp", sbcOffer(c.rtpPort(), "0", "sendrecv")), sip.INVITE, 2)
	require.Equal(t, sip.StatusInternalServerError, stale.StatusCode)

	res = c.inDialog(sip.BYE, "", "")
	require.Equal(t, sip.StatusOK, res.StatusCode, "the call survived the 488")
	ev = consumer.next(t)
	require.Equal(t, events.TypeCallEnded, ev.Type)
	require.Equal(t, "PCMA", ev.Data.(*batonv1.CallEnded).GetMedia().GetCodec())
}

// rtpPacket renders an RTP packet from the SBC.
func rtpPacket(pt uint8, seq uint16, ts uint32, payload []byte) []byte {
	b := make([]byte, 12, 12+len(payload))
	b[0], b[1] = 0x80, pt
	binary.BigEndian.PutUint16(b[2:], seq)
	binary.BigEndian.PutUint32(b[4:], ts)
	binary.BigEndian.PutUint32(b[8:], 0xcafe)
	return append(b, payload...)
}

func TestDTMFAndMediaStats(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, nil)
	consumer := newCalls(t, brokers, topics.Calls)
	c := dial(t, in, "dtmf-1", "0 101")
	require.Equal(t, events.TypeCallStarted, consumer.next(t).Type)

	infos := []struct {
		contentType, body string
		want              *batonv1.DtmfReceived
		status            int
	}{
		{"application/dtmf-relay", "Signal=5\r\nDuration=160\r\n", &batonv1.DtmfReceived{Digit: "5", DurationMs: 160}, sip.StatusOK},
		{"application/dtmf-relay", "signal= #\r\nduration=250\r\n", &batonv1.DtmfReceived{Digit: "#", DurationMs: 250}, sip.StatusOK},
		{"application/dtmf", "7", &batonv1.DtmfReceived{Digit: "7"}, sip.StatusOK},
		{"application/dtmf-relay", "Signal=Z\r\n", nil, sip.StatusBadRequest},
		{"", "", nil, sip.StatusOK}, // keepalive INFO
	}
	for _, tc := range infos {
		res := c.inDialog(sip.INFO, tc.contentType, tc.body)
		require.Equal(t, tc.status, res.StatusCode, tc.body)
		if tc.want == nil {
			continue
		}
		ev := consumer.next(t)
		require.Equal(t, events.TypeDtmfReceived, ev.Type)
		d := ev.Data.(*batonv1.DtmfReceived)
		require.Equal(t, c.callID, d.GetCallId())
		require.Equal(t, tc.want.GetDigit(), d.GetDigit())
		require.Equal(t, tc.want.GetDurationMs(), d.GetDurationMs())
		require.Equal(t, "info", d.GetSource())
	}

	// RTP: audio 1..10 without 4 (one lost), then digit 9 as RFC 4733
	// events: two updates and three end packets make one digit.
	dst := c.ingressRTP()
	send := func(p []byte) {
		_, err := c.rtp.WriteToUDP(p, dst)
		require.NoError(t, err)
	}
	for seq := uint16(1); seq <= 10; seq++ {
		if seq != 4 {
			send(rtpPacket(0, seq, uint32(seq)*160, make([]byte, 160)))
		}
	}
	ev := func(end bool, dur uint16) []byte {
		p := []byte{9, 10, 0, 0}
		if end {
			p[1] |= 0x80
		}
		binary.BigEndian.PutUint16(p[2:], dur)
		return p
	}
	send(rtpPacket(101, 11, 1760, ev(false, 160)))
	send(rtpPacket(101, 12, 1760, ev(false, 320)))
	for i := range 3 {
		send(rtpPacket(101, uint16(13+i), 1760, ev(true, 640)))
	}
	e := consumer.next(t)
	require.Equal(t, events.TypeDtmfReceived, e.Type)
	d := e.Data.(*batonv1.DtmfReceived)
	require.Equal(t, "9", d.GetDigit())
	require.EqualValues(t, 80, d.GetDurationMs())
	require.Equal(t, "rfc4733", d.GetSource())

	res := c.inDialog(sip.BYE, "", "")
	require.Equal(t, sip.StatusOK, res.StatusCode)
	e = consumer.next(t)
	require.Equal(t, events.TypeCallEnded, e.Type, "the three end packets made one digit")
	m := e.Data.(*batonv1.CallEnded).GetMedia()
	require.EqualValues(t, 14, m.GetPackets())
	require.EqualValues(t, 9*172+5*16, m.GetBytes())
	require.EqualValues(t, 1, m.GetLost())
	require.GreaterOrEqual(t, m.GetJitterMs(), 0.0)
	require.Equal(t, "PCMU", m.GetCodec())
}

// wavFile writes 8 kHz mono 16-bit PCM samples as a WAV file.
func wavFile(t *testing.T, samples []int16) string {
	t.Helper()
	b := []byte("RIFF\x00\x00\x00\x00WAVEfmt ")
	b = binary.LittleEndian.AppendUint32(b, 16)
	for _, v := range []uint16{1, 1} { // PCM, mono
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	b = binary.LittleEndian.AppendUint32(b, 8000)
	b = binary.LittleEndian.AppendUint32(b, 16000)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 16)
	b = append(b, "data"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(2*len(samples)))
	for _, v := range samples {
		b = binary.LittleEndian.AppendUint16(b, uint16(v))
	}
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)-8))
	path := filepath.Join(t.TempDir(), "greeting.wav")
	require.NoError(t, os.WriteFile(path, b, 0o600))
	return path
}

// TestGreetingPlayed answers calls and receives, on the SBC's RTP socket
// after the ACK, the configured greeting or silence in the negotiated law.
func TestGreetingPlayed(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	samples := make([]int16, 3*160)
	for i := range samples {
		samples[i] = int16(1000 * (i / 160)) // frame k holds the value 1000k
	}
	greeting := wavFile(t, samples)
	cases := []struct {
		name   string
		tune   func(*config.Config)
		codecs string
		pt     byte
		frames []string
	}{
		{"greeting in pcmu", func(c *config.Config) { c.Media.Greeting = greeting }, "0", 0,
			[]string{strings.Repeat("\xff", 160), strings.Repeat(string([]byte{pcm.ULaw(1000)}), 160), strings.Repeat(string([]byte{pcm.ULaw(2000)}), 160)}},
		{"silence in pcma", func(c *config.Config) { c.Media.Silence = 60 * time.Millisecond }, "8", 8,
			[]string{strings.Repeat("\xd5", 160), strings.Repeat("\xd5", 160), strings.Repeat("\xd5", 160)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := startIngress(t, brokers, tc.tune)
			c := dial(t, in, "greeting-"+strconv.Itoa(int(tc.pt)), tc.codecs)
			buf := make([]byte, 1500)
			var seqs []uint16
			var stamps []uint32
			for i, want := range tc.frames {
				require.NoError(t, c.rtp.SetReadDeadline(time.Now().Add(5*time.Second)))
				n, from, err := c.rtp.ReadFromUDP(buf)
				require.NoError(t, err)
				require.Equal(t, c.ingressRTP().Port, from.Port, "symmetric: sent from the call's port")
				require.Equal(t, 12+160, n)
				require.Equal(t, tc.pt, buf[1]&0x7f)
				require.Equal(t, i == 0, buf[1]&0x80 != 0, "marker on the first packet")
				require.Equal(t, want, string(buf[12:n]), "frame %d", i)
				seqs = append(seqs, binary.BigEndian.Uint16(buf[2:]))
				stamps = append(stamps, binary.BigEndian.Uint32(buf[4:]))
			}
			for i := 1; i < len(seqs); i++ {
				require.Equal(t, seqs[0]+uint16(i), seqs[i])
				require.Equal(t, stamps[0]+uint32(160*i), stamps[i])
			}
			require.NoError(t, c.rtp.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
			_, _, err := c.rtp.ReadFromUDP(buf)
			require.Error(t, err, "the clip is played once")
			res := c.inDialog(sip.BYE, "", "")
			require.Equal(t, sip.StatusOK, res.StatusCode)
		})
	}
}

// TestReInviteOnBridgedCallAnswersFromTheBridge (issue 19, 2): once
// transfer moved the caller to its bridge (BRIDGED, with the SDP its
// re-INVITE gave the caller), the caller's hold, resume or session
// refresh still reaches ingress, the dialog's UAS; ingress answers with
// the bridge's address and port, continuing the session's version, so
// the caller's audio stays on the bridge.
func TestReInviteOnBridgedCallAnswersFromTheBridge(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, nil)
	consumer := newCalls(t, brokers, topics.Calls)
	c := dial(t, in, "reinvite-bridged", "0 101")
	require.Equal(t, events.TypeCallStarted, consumer.next(t).Type)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	// Transfer continues ingress's o= line: same session, version + 1.
	var session, version uint64
	for line := range strings.SplitSeq(c.answer, "\r\n") {
		if rest, ok := strings.CutPrefix(line, "o=baton "); ok {
			_, err := fmt.Sscanf(rest, "%d %d", &session, &version)
			require.NoError(t, err)
		}
	}
	require.NotZero(t, version)
	version++
	bridgeSDP := fmt.Sprintf("v=0\r\no=baton %d %d IN IP4 127.0.0.1\r\ns=baton\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\n"+
		"m=audio 41234 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n", session, version)
	ev, err := events.New("baton/transfer", c.callID, &batonv1.TransferOutcome{CommandId: "cmd-b", CallId: c.callID,
		Status: batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED, Method: batonv1.Method_METHOD_INVITE, CallerSdp: bridgeSDP}, time.Now())
	require.NoError(t, err)
	rec, err := events.Encode(topics.Transfers, ev)
	require.NoError(t, err)
	require.NoError(t, cl.ProduceSync(t.Context(), rec).FirstErr())
	require.Eventually(t, func() bool {
		in.srv.mu.Lock()
		call := in.srv.calls[c.callID]
		in.srv.mu.Unlock()
		call.mu.Lock()
		defer call.mu.Unlock()
		return call.bridge.Port != 0
	}, 10*time.Second, 10*time.Millisecond, "the BRIDGED outcome never reached ingress")

	for _, tc := range []struct{ offerDir, wantDir string }{{"sendonly", "recvonly"}, {"sendrecv", "sendrecv"}} {
		res := c.inDialog(sip.INVITE, "application/sdp", sbcOffer(c.rtpPort(), "0 101", tc.offerDir))
		require.Equal(t, sip.StatusOK, res.StatusCode)
		body := string(res.Body())
		version++
		require.Contains(t, body, fmt.Sprintf(" %d IN IP4 ", version), "the session's version continues transfer's")
		require.Contains(t, body, "c=IN IP4 127.0.0.9\r\n", "the bridge's address, not the anchor's")
		require.Contains(t, body, "m=audio 41234 ", "the bridge's port")
		require.Equal(t, tc.wantDir, sdpDirection(t, res.Body()))
		c.ack("")
	}

	// A session refresh (RFC 4028): the same offer again. The answer is
	// unchanged, so it keeps its version (RFC 3264 8: the version moves
	// only with a change).
	res := c.inDialog(sip.INVITE, "application/sdp", sbcOffer(c.rtpPort(), "0 101", "sendrecv"))
	require.Equal(t, sip.StatusOK, res.StatusCode)
	require.Contains(t, string(res.Body()), fmt.Sprintf("o=baton %d %d IN IP4 ", session, version),
		"an unchanged answer keeps the session's version")
	require.Contains(t, string(res.Body()), "m=audio 41234 ", "the bridge's port")
	c.ack("")
}
