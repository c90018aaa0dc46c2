package transfer

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/pcm"
	"github.com/baton-voice/baton/services/transfer/internal/bridge"
	"github.com/baton-voice/baton/services/transfer/internal/request"
	"github.com/baton-voice/baton/services/transfer/internal/sdp"
	"github.com/baton-voice/baton/services/transfer/internal/uac"
	"github.com/baton-voice/baton/services/transfer/internal/whisper"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// withInvite configures warm transfers on loopback with short timers.
func withInvite(tune func(*InviteOptions)) func(*Options) {
	return func(o *Options) {
		o.Invite = InviteOptions{
			Ports:         &bridge.Ports{Host: loopback, RTCPInterval: 100 * time.Millisecond},
			MediaAddr:     loopback,
			IdleTimeout:   5 * time.Second,
			AnswerTimeout: 5 * time.Second,
			CallerID:      request.CallerID{Policy: request.CallerIDCaller, Host: "127.0.0.1"},
			SRTPSuites:    []string{"AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"},
			ByeTimeout:    2 * time.Second,
		}
		o.ShutdownTimeout = 500 * time.Millisecond
		if tune != nil {
			tune(&o.Invite)
		}
	}
}

// sippRun is a SIPp destination (UAS) on loopback.
type sippRun struct {
	port, mediaPort int
	logFile         string
	out             bytes.Buffer
	done            chan error
}

// startSIPp runs scenario (a file of deploy/sipp) for one call, with RTP
// echo on its media port.
func startSIPp(t *testing.T, scenario string, extra ...string) *sippRun {
	t.Helper()
	bin, err := exec.LookPath("sipp")
	require.NoError(t, err, "SIPp is required (Debian package sip-tester)")
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "..", "deploy", "sipp"))
	require.NoError(t, err)
	tmp := t.TempDir()
	network, port := "udp", 0
	if slices.Contains(extra, "t1") {
		network, port = "tcp", freeTCPPort(t)
	} else {
		port = freeUDPPort(t)
	}
	r := &sippRun{port: port, mediaPort: freeMediaPort(t), logFile: filepath.Join(tmp, "sipp.log"), done: make(chan error, 1)}
	args := append([]string{
		"-sf", filepath.Join(dir, scenario), "-i", "127.0.0.1", "-p", strconv.Itoa(r.port),
		"-m", "1", "-rtp_echo", "-mp", strconv.Itoa(r.mediaPort), "-mi", "127.0.0.1",
		"-timeout", "60s", "-timeout_error", "-max_socket", "100",
		"-trace_logs", "-log_file", r.logFile,
		"-trace_err", "-error_file", filepath.Join(tmp, "errors.log"),
		"-trace_msg", "-message_file", filepath.Join(tmp, "messages.log"),
		"-nostdin",
	}, extra...)
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Stdout, cmd.Stderr = &r.out, &r.out
	require.NoError(t, cmd.Start())
	go func() { r.done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			msgs, _ := os.ReadFile(filepath.Join(tmp, "messages.log"))
			errs, _ := os.ReadFile(filepath.Join(tmp, "errors.log"))
			t.Logf("sipp output:\n%s\nmessages:\n%s\nerrors:\n%s", r.out.String(), msgs, errs)
		}
	})
	// Ready once its SIP socket is bound. Probing by binding the port
	// ourselves would race SIPp's own bind, so read the kernel's table.
	require.Eventually(t, func() bool { return bound(t, network, r.port) }, 10*time.Second, 5*time.Millisecond,
		"sipp did not bind its port")
	return r
}

// wait returns sipp's log lines and its exit error (nil for exit 0).
func (r *sippRun) wait(t *testing.T) (string, error) {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		b, _ := os.ReadFile(r.logFile)
		return string(b), err
	case <-time.After(20 * time.Second):
		t.Fatal("sipp did not finish")
		return "", nil
	}
}

func (r *sippRun) route() string { return "sip:queue@127.0.0.1:" + strconv.Itoa(r.port) }

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	var lc net.ListenConfig
	l, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// freeMediaPort finds an even port p with p and p+2 free (SIPp echoes on
// both).
func freeMediaPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		p := 20000 + 2*rand.IntN(5000)
		a, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, uint16(p))))
		if err != nil {
			continue
		}
		b, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, uint16(p+2))))
		_ = a.Close()
		if err != nil {
			continue
		}
		_ = b.Close()
		return p
	}
	t.Fatal("no free media port")
	return 0
}

// callerSBC is the caller's side of the call: a sipgo UAS that answers the
// re-INVITE with its own media address, and a media socket.
type callerSBC struct {
	addr  *net.UDPAddr
	media *net.UDPConn
	got   chan *sip.Request
	mu    sync.Mutex
	reqs  []*sip.Request
	// reject, when set, is the re-INVITE's answer.
	reject int
	// answerAt, when valid, is the media address of the re-INVITE's
	// answer instead of media's (a relay in front of it); under mu.
	answerAt netip.AddrPort
	// referAnswer, when set, is the REFER's answer (else 405); under mu.
	referAnswer int
	// ua is the SBC's user agent (a test can make a client of it).
	ua *sipgo.UserAgent
}

func startCallerSBC(t *testing.T, reject int) *callerSBC {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("test-caller-sbc"))
	require.NoError(t, err)
	srv, err := sipgo.NewServer(ua)
	require.NoError(t, err)
	conn, ln := listenUDPAndTCP(t)
	media, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	c := &callerSBC{addr: conn.LocalAddr().(*net.UDPAddr), media: media, got: make(chan *sip.Request, 16), reject: reject, ua: ua}
	record := func(req *sip.Request) {
		c.mu.Lock()
		c.reqs = append(c.reqs, req)
		c.mu.Unlock()
		c.got <- req
	}
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		record(req)
		if c.reject != 0 {
			_ = tx.Respond(sip.NewResponseFromRequest(req, c.reject, "Not Acceptable Here", nil))
			return
		}
		offer, err := sdp.Parse(string(req.Body()))
		if err != nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil))
			return
		}
		c.mu.Lock()
		at := c.answerAt
		c.mu.Unlock()
		if !at.IsValid() {
			at = media.LocalAddr().(*net.UDPAddr).AddrPort()
		}
		ans := sdp.Session{Origin: "sbc 1 1 IN IP4 127.0.0.1", Addr: at, Formats: offer.Formats}
		res := sip.NewResponseFromRequest(req, 200, "OK", []byte(ans.String()))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		_ = tx.Respond(res)
	})
	srv.OnAck(func(req *sip.Request, _ sip.ServerTransaction) { record(req) })
	// An SBC with "take back and transfer" off: REFER is not allowed.
	// A test may make it take REFER (referAnswer).
	srv.OnRefer(func(req *sip.Request, tx sip.ServerTransaction) {
		c.mu.Lock()
		code := c.referAnswer
		c.mu.Unlock()
		if code == 0 {
			code = sip.StatusMethodNotAllowed
		}
		_ = tx.Respond(sip.NewResponseFromRequest(req, code, reasonOf(code), nil))
		record(req)
	})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		record(req)
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	served, tcpServed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.ServeUDP(conn)
	}()
	go func() {
		defer close(tcpServed)
		_ = srv.ServeTCP(ln)
	}()
	t.Cleanup(func() {
		require.NoError(t, ua.Close())
		_ = conn.Close()
		_ = ln.Close()
		_ = media.Close()
		<-served
		<-tcpServed
	})
	return c
}

// next waits for the next request of method.
func (c *callerSBC) next(t *testing.T, method sip.RequestMethod) *sip.Request {
	t.Helper()
	for {
		select {
		case r := <-c.got:
			if r.Method == method {
				return r
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the caller's SBC received no %s", method)
			return nil
		}
	}
}

func (c *callerSBC) count(method sip.RequestMethod) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.reqs {
		if r.Method == method {
			n++
		}
	}
	return n
}

// echo sends n packets from the caller's media socket to to and reads the
// echo of each: media crossed the bridge both ways.
func (c *callerSBC) echo(t *testing.T, to netip.AddrPort, n int) {
	t.Helper()
	buf := make([]byte, 1500)
	for i := range n {
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(1000 + i),
			Timestamp: uint32(160 * i), SSRC: 0xCA11E4}, Payload: bytes.Repeat([]byte{byte(i)}, 160)}
		b, err := pkt.Marshal()
		require.NoError(t, err)
		_, err = c.media.WriteToUDPAddrPort(b, to)
		require.NoError(t, err)
		require.NoError(t, c.media.SetReadDeadline(time.Now().Add(3*time.Second)))
		m, from, err := c.media.ReadFromUDPAddrPort(buf)
		require.NoError(t, err, "no echo of packet %d", i)
		require.Equal(t, to, from, "the echo comes from the bridge's caller leg")
		var back rtp.Packet
		require.NoError(t, back.Unmarshal(buf[:m]))
		require.Equal(t, pkt.Payload, back.Payload, "packet %d came back", i)
		require.NotEqual(t, uint32(0xCA11E4), back.SSRC, "the bridge's own SSRC toward the caller")
	}
}

func inviteCommand(c *callerSBC, id, route string) *batonv1.HandoffCommand {
	d := dialogTo(c.addr, "call-"+id)
	d.RemoteUri = "sip:+4915112345678@" + c.addr.String()
	d.NextLocalCseq = 4
	return &batonv1.HandoffCommand{
		CommandId:     "cmd-" + id,
		CallId:        "call-" + id,
		Method:        batonv1.Method_METHOD_INVITE,
		Destination:   "queue",
		Route:         route,
		Headers:       []*batonv1.SipHeader{{Name: "X-Customer-Id", Value: "CUST-7"}, {Name: "X-Intent", Value: "billing"}},
		Dialog:        d,
		Attempt:       1,
		AnswerTimeout: durationpb.New(5 * time.Second),
		LocalSdp:      "v=0\r\no=ingress 77 3 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 31000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
	}
}

// statuses reads the command's outcomes until want's length.
func (h *harness) statuses(t *testing.T, id string, want ...batonv1.OutcomeStatus) []*batonv1.TransferOutcome {
	t.Helper()
	var got []*batonv1.TransferOutcome
	for i, w := range want {
		o := h.outcome(t, id)
		require.Equal(t, w.String(), o.GetStatus().String(), "outcome %d: detail %q", i, o.GetDetail())
		got = append(got, o)
	}
	return got
}

func TestWarmTransferBridgesMediaBothWays(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// hangup: who ends the call.
		scenario, hangup string
	}{
		{name: "caller hangs up", scenario: "dest_answer.xml", hangup: "caller"},
		{name: "destination hangs up", scenario: "dest_hangup.xml", hangup: "destination"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			metrics := NewMetrics(prometheus.NewRegistry())
			h := start(t, 202, func(o *Options) {
				withInvite(nil)(o)
				o.Metrics = metrics
			})
			caller := startCallerSBC(t, 0)
			var dest *sippRun
			if tc.hangup == "destination" {
				dest = startSIPp(t, tc.scenario, "-d", "1500")
			} else {
				dest = startSIPp(t, tc.scenario)
			}
			cmd := inviteCommand(caller, "warm", dest.route())
			h.command(t, cmd)

			want := []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED}
			if tc.hangup == "caller" {
				want = append([]batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING}, want...)
			}
			got := h.statuses(t, cmd.CommandId, want...)
			if tc.hangup == "caller" {
				require.Equal(t, int32(180), got[0].GetSipCode())
			}
			require.Less(t, got[len(got)-2].GetElapsed().AsDuration(), got[len(got)-1].GetElapsed().AsDuration(), "timings grow")

			// The caller's dialog was re-INVITEd to the bridge: in dialog,
			// next CSeq, ingress's o= line continued.
			reinvite := caller.next(t, sip.INVITE)
			require.Equal(t, cmd.Dialog.CallId, reinvite.CallID().Value())
			require.Equal(t, uint32(4), reinvite.CSeq().SeqNo)
			tag, _ := reinvite.To().Params.Get("tag")
			require.Equal(t, cmd.Dialog.RemoteTag, tag)
			offer, err := sdp.Parse(string(reinvite.Body()))
			require.NoError(t, err)
			require.Equal(t, "ingress 77 4 IN IP4 127.0.0.1", offer.Origin)
			bridgedOutcome := got[len(got)-1]
			require.Equal(t, string(reinvite.Body()), bridgedOutcome.GetCallerSdp(),
				"BRIDGED carries the SDP the caller was given, for ingress's later answers")
			codec, ok := offer.Audio()
			require.True(t, ok)
			require.Equal(t, "PCMU", codec.Name)
			ack := caller.next(t, sip.ACK)
			require.Equal(t, uint32(4), ack.CSeq().SeqNo)

			const packets = 20
			caller.echo(t, offer.Addr, packets)

			if tc.hangup == "caller" {
				h.fact(t, cmd.CallId, &batonv1.CallEnded{CallId: cmd.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
			} else {
				bye := caller.next(t, sip.BYE)
				require.Equal(t, uint32(5), bye.CSeq().SeqNo, "after the re-INVITE")
			}
			end := h.outcome(t, cmd.CommandId)
			require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), end.GetStatus().String(), end.GetDetail())
			require.Contains(t, end.GetDetail(), tc.hangup+" hung up")
			require.Equal(t, tc.hangup+"_hangup", end.GetReason())
			st := end.GetBridge()
			require.NotNil(t, st)
			require.Equal(t, uint64(packets), st.GetCallerToDestination().GetPackets())
			require.Equal(t, uint64(packets), st.GetDestinationToCaller().GetPackets(), "every echo crossed back")
			require.Equal(t, uint64(packets*(12+160)), st.GetCallerToDestination().GetBytes())
			require.Zero(t, st.GetCallerToDestination().GetLost())
			require.Equal(t, "PCMU/8000", st.GetCodec())
			require.Positive(t, st.GetDuration().AsDuration())
			// The bridge's media is in the metrics once its outcome was
			// published.
			require.Eventually(t, func() bool {
				return testutil.ToFloat64(metrics.Outcomes.WithLabelValues("invite", "ended")) == 1
			}, 5*time.Second, 10*time.Millisecond)
			require.Equal(t, float64(packets), testutil.ToFloat64(metrics.BridgePackets.WithLabelValues("caller_to_destination")))
			require.Equal(t, float64(packets), testutil.ToFloat64(metrics.BridgePackets.WithLabelValues("destination_to_caller")))
			require.Equal(t, float64(packets*(12+160)), testutil.ToFloat64(metrics.BridgeBytes.WithLabelValues("caller_to_destination")))
			require.Zero(t, testutil.ToFloat64(metrics.BridgeLost.WithLabelValues("caller_to_destination")))
			require.Equal(t, 1.0, testutil.ToFloat64(metrics.Commands.WithLabelValues("invite")))

			log, err := dest.wait(t)
			require.NoError(t, err, "sipp: %s", log)
			require.Contains(t, log, "x_customer_id=CUST-7", "the X- headers reached the destination")
			if tc.hangup == "caller" {
				require.Contains(t, log, "from=<sip:+4915112345678@127.0.0.1>", "caller-id policy caller")
				require.Contains(t, log, "BYE call_id=")
				require.Zero(t, caller.count(sip.BYE), "the caller's leg was not BYEd: it hung up")
			} else {
				require.Contains(t, log, "HANGUP call_id=")
			}
		})
	}
}

func TestWarmTransferFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		scenario string
		timeout  time.Duration
		want     []batonv1.OutcomeStatus
		code     int32
		detail   string
		log      string
	}{
		{
			name: "busy", scenario: "dest_busy.xml",
			want: []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED},
			code: 486, detail: "destination answered 486", log: "BUSY",
		},
		{
			name: "no answer: CANCEL", scenario: "dest_no_answer.xml", timeout: 700 * time.Millisecond,
			want: []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED},
			code: 487, detail: "no answer within 700ms", log: "CANCELLED",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, 202, withInvite(nil))
			caller := startCallerSBC(t, 0)
			dest := startSIPp(t, tc.scenario)
			cmd := inviteCommand(caller, "fail", dest.route())
			if tc.timeout > 0 {
				cmd.AnswerTimeout = durationpb.New(tc.timeout)
			}
			h.command(t, cmd)
			got := h.statuses(t, cmd.CommandId, tc.want...)
			last := got[len(got)-1]
			require.Equal(t, tc.code, last.GetSipCode(), last.GetDetail())
			require.Contains(t, last.GetDetail(), tc.detail)
			log, err := dest.wait(t)
			require.NoError(t, err, "sipp: %s", log)
			require.Contains(t, log, tc.log)
			require.Zero(t, caller.count(sip.INVITE), "the caller's media never moved")
		})
	}
}

// TestWarmTransferUnreachableDestination (issue 19, 4): a destination that
// answers nothing is reported when the answer timeout says, as
// unreachable, with no CANCEL (there is nothing to cancel before a 1xx),
// not 32 s later when the INVITE's Timer B fires.
func TestWarmTransferUnreachableDestination(t *testing.T) {
	t.Parallel()
	h := start(t, 202, withInvite(nil))
	caller := startCallerSBC(t, 0)
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = silent.Close() })
	cmd := inviteCommand(caller, "unreachable", fmt.Sprintf("sip:agent@127.0.0.1:%d", silent.LocalAddr().(*net.UDPAddr).Port))
	cmd.AnswerTimeout = durationpb.New(700 * time.Millisecond)
	h.command(t, cmd)
	got := h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED)
	last := got[len(got)-1]
	require.Contains(t, last.GetDetail(), "no response within 700ms: destination unreachable")
	require.Zero(t, last.GetSipCode())
	require.Less(t, last.GetElapsed().AsDuration(), 10*time.Second, "reported at the answer timeout, not at Timer B (32 s)")
	// Nothing but the INVITE (and its retransmissions) reached it: no CANCEL.
	buf := make([]byte, 65535)
	require.NoError(t, silent.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	for {
		n, _, err := silent.ReadFromUDP(buf)
		if err != nil {
			break
		}
		require.True(t, strings.HasPrefix(string(buf[:n]), "INVITE "), "only INVITEs: %q", buf[:min(n, 40)])
	}
	require.Zero(t, caller.count(sip.INVITE), "the caller's media never moved")
}

func TestWarmTransferCallerRejectsTheReInvite(t *testing.T) {
	t.Parallel()
	h := start(t, 202, withInvite(nil))
	caller := startCallerSBC(t, 488)
	dest := startSIPp(t, "dest_answer.xml")
	cmd := inviteCommand(caller, "reject", dest.route())
	h.command(t, cmd)
	got := h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING,
		batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED)
	require.Equal(t, int32(488), got[2].GetSipCode())
	require.Contains(t, got[2].GetDetail(), "the call stays with the agent")
	log, err := dest.wait(t)
	require.NoError(t, err, "the destination got its BYE: %s", log)
	require.Contains(t, log, "BYE call_id=")
}

func TestWarmTransferIdleMediaTearsDown(t *testing.T) {
	t.Parallel()
	h := start(t, 202, withInvite(func(o *InviteOptions) { o.IdleTimeout = 600 * time.Millisecond }))
	caller := startCallerSBC(t, 0)
	dest := startSIPp(t, "dest_answer.xml")
	cmd := inviteCommand(caller, "idle", dest.route())
	h.command(t, cmd)
	h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING,
		batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
	// Nobody sends media.
	end := h.outcome(t, cmd.CommandId)
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), end.GetStatus().String())
	require.Contains(t, end.GetDetail(), "no media from the")
	require.Equal(t, EndMediaTimeout, end.GetReason(), "an ENDED outcome says why the call ended")
	require.Equal(t, uint32(5), caller.next(t, sip.BYE).CSeq().SeqNo, "the caller's leg is ended too")
	log, err := dest.wait(t)
	require.NoError(t, err, "sipp: %s", log)
	require.Contains(t, log, "BYE call_id=")
}

func TestWarmTransferRefusedBeforeSIP(t *testing.T) {
	t.Parallel()
	h := start(t, 202, withInvite(nil))
	caller := startCallerSBC(t, 0)
	for i, tc := range []struct {
		route, encryption, detail string
	}{
		{route: "tel:+15551234567", detail: "tel: URI"},
		{route: "sips:queue@127.0.0.1:5999", encryption: "udp_rtp", detail: "needs TLS"},
		{route: "sip:queue@127.0.0.1:5999", encryption: "udp_srtp", detail: "allow_sdes_over_udp"},
		{route: "1234", detail: "extension"},
	} {
		cmd := inviteCommand(caller, fmt.Sprintf("refused-%d", i), tc.route)
		cmd.Encryption = tc.encryption
		h.command(t, cmd)
		o := h.outcome(t, cmd.CommandId)
		require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED.String(), o.GetStatus().String())
		require.Contains(t, o.GetDetail(), tc.detail)
		require.True(t, strings.HasPrefix(o.GetDetail(), "INVITE not sent"), o.GetDetail())
	}
	require.Zero(t, caller.count(sip.INVITE))
}

func srtpContext(c sdp.Crypto) (*srtp.Context, error) {
	profile := srtp.ProtectionProfileAes128CmHmacSha1_80
	if c.Suite == "AEAD_AES_128_GCM" {
		profile = srtp.ProtectionProfileAeadAes128Gcm
	}
	k, _, _ := sdp.KeyLen(c.Suite)
	return srtp.CreateContext(c.Key[:k], c.Key[k:], profile)
}

func TestWarmTransferSRTPLeg(t *testing.T) {
	t.Parallel()
	for _, suite := range []string{"AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"} {
		t.Run(suite, func(t *testing.T) {
			t.Parallel()
			h := start(t, 202, withInvite(func(o *InviteOptions) { o.AllowSDESOverUDP = true }))
			caller := startCallerSBC(t, 0)
			dest := startDestination(t, destOptions{suite: suite})
			cmd := inviteCommand(caller, "srtp", "sip:queue@"+dest.addr.String())
			cmd.Encryption = "udp_srtp"
			h.command(t, cmd)
			h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
			offer, err := sdp.Parse(string(caller.next(t, sip.INVITE).Body()))
			require.NoError(t, err)
			require.Equal(t, "RTP/AVP", offer.Proto, "the caller's leg stays plain RTP")
			require.Empty(t, offer.Crypto)

			caller.echo(t, offer.Addr, 10) // plain → SRTP → echoed SRTP → plain
			// The echo can overtake the peer's count: wait for it.
			require.Eventually(t, func() bool { return dest.echoed.Load() == 10 }, 2*time.Second, time.Millisecond,
				"the destination decrypted every packet with Baton's key")

			h.fact(t, cmd.CallId, &batonv1.CallEnded{CallId: cmd.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
			end := h.outcome(t, cmd.CommandId)
			require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), end.GetStatus().String())
			require.Equal(t, suite, end.GetBridge().GetDestinationSrtp())
			require.Empty(t, end.GetBridge().GetCallerSrtp())
			require.Equal(t, uint64(10), end.GetBridge().GetDestinationToCaller().GetPackets())
			require.Zero(t, end.GetBridge().GetDestinationToCaller().GetDropped())
		})
	}
}

// TestWarmTransferOverTLS: encryption tls_srtp (the router's default for
// INVITE) and sips: routes send the new leg over TLS, verified against the
// destination's certificate, with SRTP on its media; media crosses the
// bridge both ways (the destination decrypts with Baton's key, Baton with
// the destination's).
func TestWarmTransferOverTLS(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, route, encryption string
		suite                   string
	}{
		{name: "sip route, tls_srtp", route: "sip:queue@127.0.0.1:%d", encryption: "tls_srtp", suite: "AES_CM_128_HMAC_SHA1_80"},
		{name: "sips route, encryption from the route", route: "sips:queue@127.0.0.1:%d", suite: "AEAD_AES_128_GCM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			destCert, ourCert := newSelfSigned(t, "destination"), newSelfSigned(t, "baton")
			h := start(t, 202, withInvite(func(o *InviteOptions) { o.TLS = true }), uac.Options{TLS: &uac.TLS{
				Listen: "127.0.0.1:0",
				Server: &tls.Config{Certificates: []tls.Certificate{ourCert.cert}, MinVersion: tls.VersionTLS12},
				Client: &tls.Config{RootCAs: destCert.pool, MinVersion: tls.VersionTLS12},
			}})
			caller := startCallerSBC(t, 0)
			dest := startDestination(t, destOptions{suite: tc.suite, ring: true,
				tls: &tls.Config{Certificates: []tls.Certificate{destCert.cert}, MinVersion: tls.VersionTLS12}})
			cmd := inviteCommand(caller, "tls", fmt.Sprintf(tc.route, dest.port()))
			cmd.Encryption = tc.encryption
			h.command(t, cmd)
			// A 180 over a TLS leg is RINGING like one over UDP (issue 19, 6).
			h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING,
				batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)

			inv := dest.invite(t)
			require.Equal(t, "TLS", inv.Via().Transport, "the INVITE came over TLS")
			require.Equal(t, h.in.sip.TLSAddr().Port, inv.Via().Port, "the Via names the TLS listener")
			require.Equal(t, h.in.sip.TLSAddr().Port, inv.Contact().Address.Port)
			if inv.Recipient.Scheme == "sips" {
				require.Equal(t, "sips", inv.Contact().Address.Scheme)
			} else {
				tp, _ := inv.Contact().Address.UriParams.Get("transport")
				require.Equal(t, "tls", tp)
			}
			require.Equal(t, "CUST-7", inv.GetHeader("X-Customer-Id").Value())
			require.Equal(t, uac.Allow, inv.GetHeader("Allow").Value(), "the methods the destination may send")

			offer, err := sdp.Parse(string(caller.next(t, sip.INVITE).Body()))
			require.NoError(t, err)
			caller.echo(t, offer.Addr, 10) // plain → SRTP → echoed SRTP → plain
			// The echo can overtake the peer's count: wait for it.
			require.Eventually(t, func() bool { return dest.echoed.Load() == 10 }, 2*time.Second, time.Millisecond,
				"the destination decrypted every packet with Baton's key")

			h.fact(t, cmd.CallId, &batonv1.CallEnded{CallId: cmd.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
			end := h.outcome(t, cmd.CommandId)
			require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), end.GetStatus().String(), end.GetDetail())
			require.Equal(t, tc.suite, end.GetBridge().GetDestinationSrtp())
			require.Equal(t, uint64(10), end.GetBridge().GetDestinationToCaller().GetPackets(), "Baton decrypted every echo")
			require.Zero(t, end.GetBridge().GetDestinationToCaller().GetDropped())
		})
	}
}

// TestWarmTransferTLSRefusedWithoutTLS: without a TLS transport, tls_srtp
// fails before any SIP; an untrusted destination certificate fails the
// INVITE.
func TestWarmTransferTLSRefused(t *testing.T) {
	t.Parallel()
	t.Run("no tls configured", func(t *testing.T) {
		t.Parallel()
		h := start(t, 202, withInvite(nil))
		caller := startCallerSBC(t, 0)
		cmd := inviteCommand(caller, "notls", "sip:queue@127.0.0.1:5999")
		cmd.Encryption = "tls_srtp"
		h.command(t, cmd)
		o := h.outcome(t, cmd.CommandId)
		require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED.String(), o.GetStatus().String())
		require.Contains(t, o.GetDetail(), "INVITE not sent: encryption tls_srtp needs TLS signalling")
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		t.Parallel()
		destCert, ourCert, other := newSelfSigned(t, "destination"), newSelfSigned(t, "baton"), newSelfSigned(t, "other")
		h := start(t, 202, withInvite(func(o *InviteOptions) { o.TLS = true }), uac.Options{TLS: &uac.TLS{
			Listen: "127.0.0.1:0",
			Server: &tls.Config{Certificates: []tls.Certificate{ourCert.cert}, MinVersion: tls.VersionTLS12},
			Client: &tls.Config{RootCAs: other.pool, MinVersion: tls.VersionTLS12},
		}})
		caller := startCallerSBC(t, 0)
		dest := startDestination(t, destOptions{suite: "AES_CM_128_HMAC_SHA1_80",
			tls: &tls.Config{Certificates: []tls.Certificate{destCert.cert}, MinVersion: tls.VersionTLS12}})
		cmd := inviteCommand(caller, "badcert", fmt.Sprintf("sips:queue@127.0.0.1:%d", dest.port()))
		h.command(t, cmd)
		o := h.outcome(t, cmd.CommandId)
		require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED.String(), o.GetStatus().String())
		require.Contains(t, o.GetDetail(), "certificate")
		require.Zero(t, caller.count(sip.INVITE))
	})
}

// TestWarmTransferWhisper: after the answer and before the caller's
// re-INVITE, the destination hears the whisper (G.711 of the WAV, 20 ms
// packets), then the caller's media continues the same stream: one SSRC,
// consecutive sequence numbers, timestamps 160 apart within the whisper and
// moving forward after it, the marker on the first packet of each part.
func TestWarmTransferWhisper(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, codec, suite string
		encode             func(int16) byte
		// fromURL serves the WAV over https instead of from a file.
		fromURL bool
	}{
		{name: "PCMU, plain RTP", codec: "PCMU", encode: pcm.ULaw},
		{name: "PCMA, SRTP", codec: "PCMA", suite: "AEAD_AES_128_GCM", encode: pcm.ALaw},
		{name: "PCMU, whisper from an https URL", codec: "PCMU", encode: pcm.ULaw, fromURL: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const whisperPackets, callerPackets = 7, 5
			samples := make([]int16, 160*whisperPackets-60) // the last frame is padded
			for i := range samples {
				samples[i] = int16((i%80)*400 - 16000)
			}
			whisperFile := writeWAV(t, samples)
			var origin *whisperOrigin
			if tc.fromURL {
				wav, err := os.ReadFile(whisperFile)
				require.NoError(t, err)
				origin = startWhisperOrigin(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(wav) })
			}
			h := start(t, 202, withInvite(func(o *InviteOptions) {
				o.AllowSDESOverUDP = true
				if origin != nil {
					o.WhisperURLs = origin.fetcher(t, nil)
				}
			}))
			caller := startCallerSBC(t, 0)
			dest := startDestination(t, destOptions{suite: tc.suite, noEcho: true})
			cmd := inviteCommand(caller, "whisper", "sip:queue@"+dest.addr.String())
			cmd.LocalSdp = strings.ReplaceAll(strings.ReplaceAll(cmd.LocalSdp, "RTP/AVP 0 101", "RTP/AVP 8 101"), "0 PCMU", "8 PCMA")
			if tc.codec == "PCMU" {
				cmd.LocalSdp = inviteCommand(caller, "x", "").LocalSdp
			}
			if tc.suite != "" {
				cmd.Encryption = "udp_srtp"
			}
			cmd.Whisper = whisperFile
			if origin != nil {
				cmd.Whisper = origin.URL + "/summary.wav?signature=abc"
			}
			h.command(t, cmd)
			h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED)
			reinvite := caller.next(t, sip.INVITE)
			// The whisper is over before the caller is moved. Its last
			// packets may still be in flight on the RTP socket when the
			// re-INVITE arrives on the SIP one, so wait for them; no caller
			// media exists until the test sends it below, and the final
			// count (whisper + caller) catches any extra whisper packet.
			require.Eventually(t, func() bool { return len(dest.media()) == whisperPackets },
				2*time.Second, 5*time.Millisecond, "exactly the whisper's packets before the caller's media")
			h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
			offer, err := sdp.Parse(string(reinvite.Body()))
			require.NoError(t, err)

			for i := range callerPackets {
				pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: offer.Formats[0].PT, SequenceNumber: uint16(40000 + i),
					Timestamp: uint32(999 + 160*i), SSRC: 0xCA11E4}, Payload: bytes.Repeat([]byte{0x42}, 160)}
				b, err := pkt.Marshal()
				require.NoError(t, err)
				_, err = caller.media.WriteToUDPAddrPort(b, offer.Addr)
				require.NoError(t, err)
			}
			require.Eventually(t, func() bool { return len(dest.media()) == whisperPackets+callerPackets },
				5*time.Second, 5*time.Millisecond, "the caller's packets follow")
			got := dest.media()
			padded := append(append([]int16(nil), samples...), make([]int16, 60)...)
			for i, p := range got {
				require.Equal(t, got[0].header.SSRC, p.header.SSRC, "packet %d: one SSRC", i)
				require.Equal(t, got[0].header.SequenceNumber+uint16(i), p.header.SequenceNumber, "packet %d: consecutive", i)
				require.Equal(t, i == 0 || i == whisperPackets, p.header.Marker, "packet %d: marker on each part's first", i)
				if i >= whisperPackets {
					require.Equal(t, bytes.Repeat([]byte{0x42}, 160), p.payload, "packet %d: the caller's", i)
					continue
				}
				require.Equal(t, offer.Formats[0].PT, p.header.PayloadType)
				require.Equal(t, got[0].header.Timestamp+uint32(160*i), p.header.Timestamp, "packet %d: 20 ms apart", i)
				want := make([]byte, 160)
				for j := range want {
					want[j] = tc.encode(padded[160*i+j])
				}
				require.Equal(t, want, p.payload, "whisper packet %d", i)
			}
			last := got[whisperPackets-1].header.Timestamp
			require.Greater(t, got[whisperPackets].header.Timestamp-last, uint32(160)-1, "timestamps move forward into the caller's media")
			require.Less(t, got[whisperPackets].header.Timestamp-last, uint32(8000*10), "by about the time that passed")

			h.fact(t, cmd.CallId, &batonv1.CallEnded{CallId: cmd.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
			require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), h.outcome(t, cmd.CommandId).GetStatus().String())
			if origin != nil {
				require.Equal(t, 1, origin.requests(), "one GET for the whisper")
			}
		})
	}
}

// whisperOrigin is an https server of whisper WAVs on loopback.
type whisperOrigin struct {
	*httptest.Server
	n atomic.Int64
}

func startWhisperOrigin(t *testing.T, h http.HandlerFunc) *whisperOrigin {
	t.Helper()
	o := &whisperOrigin{}
	o.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.n.Add(1)
		h(w, r)
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *whisperOrigin) requests() int { return int(o.n.Load()) }

// fetcher allows 127.0.0.1 and trusts the origin's certificate.
func (o *whisperOrigin) fetcher(t *testing.T, tune func(*whisper.FetchOptions)) *whisper.Fetcher {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(o.Certificate())
	opts := whisper.FetchOptions{AllowHosts: []string{"127.0.0.1"}, Timeout: 5 * time.Second, MaxBytes: 1 << 20,
		MaxDuration: 10 * time.Second, CacheEntries: 4, CacheBytes: 4 << 20, CacheTTL: time.Minute, RootCAs: pool}
	if tune != nil {
		tune(&opts)
	}
	f, err := whisper.NewFetcher(opts, nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(f.Close)
	return f
}

func TestWarmTransferWhisperRefused(t *testing.T) {
	t.Parallel()
	h := start(t, 202, withInvite(func(o *InviteOptions) { o.WhisperMax = time.Second }))
	caller := startCallerSBC(t, 0)
	long := writeWAV(t, make([]int16, 8000*2))
	for i, tc := range []struct{ whisper, detail string }{
		{whisper: "https://cdn.example/w.wav", detail: "is a URL: only local files are supported"}, // no fetcher
		{whisper: "/nonexistent/w.wav", detail: "no such file"},
		{whisper: long, detail: "max_duration"},
	} {
		cmd := inviteCommand(caller, fmt.Sprintf("whisper-refused-%d", i), "sip:queue@127.0.0.1:5999")
		cmd.Whisper = tc.whisper
		h.command(t, cmd)
		o := h.outcome(t, cmd.CommandId)
		require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED.String(), o.GetStatus().String())
		require.True(t, strings.HasPrefix(o.GetDetail(), "INVITE not sent: "), o.GetDetail())
		require.Contains(t, o.GetDetail(), tc.detail)
	}
	require.Zero(t, caller.count(sip.INVITE))
}

// TestWarmTransferWhisperURLRefused: a whisper URL that cannot be
// fetched, or whose audio cannot be played, fails the command as a bad
// file does (invalid_whisper, nothing sent), the detail naming why.
func TestWarmTransferWhisperURLRefused(t *testing.T) {
	t.Parallel()
	good := writeWAV(t, make([]int16, 800))
	wav, err := os.ReadFile(good)
	require.NoError(t, err)
	longWAV, err := os.ReadFile(writeWAV(t, make([]int16, 8000*2)))
	require.NoError(t, err)
	origin := startWhisperOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/mp3":
			_, _ = w.Write([]byte("ID3\x04 an mp3"))
		case "/long":
			_, _ = w.Write(longWAV)
		case "/big":
			_, _ = w.Write(bytes.Repeat(wav, 50))
		case "/slow":
			<-r.Context().Done()
		case "/moved":
			http.Redirect(w, r, "/w.wav", http.StatusMovedPermanently)
		default:
			http.NotFound(w, r)
		}
	})
	fetcher := origin.fetcher(t, func(o *whisper.FetchOptions) {
		o.MaxDuration, o.MaxBytes, o.Timeout = time.Second, int64(40*len(wav)), time.Second
	})
	metrics := NewMetrics(prometheus.NewRegistry())
	h := start(t, 202, func(o *Options) {
		withInvite(func(o *InviteOptions) { o.WhisperURLs = fetcher })(o)
		o.Metrics = metrics
	})
	caller := startCallerSBC(t, 0)
	cases := []struct{ whisper, detail string }{
		{whisper: "https://cdn.example/w.wav", detail: "host cdn.example is not in invite.whisper.allow_hosts"},
		{whisper: origin.URL + "/missing", detail: "HTTP status 404 Not Found"},
		{whisper: origin.URL + "/moved", detail: "HTTP status 301 Moved Permanently: redirects are not followed"},
		{whisper: origin.URL + "/mp3", detail: "not a RIFF/WAVE file"},
		{whisper: origin.URL + "/long", detail: "more than invite.whisper.max_duration 1s"},
		{whisper: origin.URL + "/big", detail: "more than invite.whisper.max_bytes"},
		{whisper: origin.URL + "/slow", detail: "no whole answer within invite.whisper.timeout 1s"},
	}
	for i, tc := range cases {
		cmd := inviteCommand(caller, fmt.Sprintf("whisper-url-refused-%d", i), "sip:queue@127.0.0.1:5999")
		cmd.Whisper = tc.whisper
		h.command(t, cmd)
		o := h.outcome(t, cmd.CommandId)
		require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED.String(), o.GetStatus().String())
		require.True(t, strings.HasPrefix(o.GetDetail(), "INVITE not sent: unusable whisper: "), o.GetDetail())
		require.Contains(t, o.GetDetail(), tc.detail)
	}
	require.Zero(t, caller.count(sip.INVITE))
	require.InDelta(t, len(cases), testutil.ToFloat64(metrics.Refused.WithLabelValues("invite", RefusedInvalidWhisper)), 0)
	require.Equal(t, len(cases)-1, origin.requests(), "no request to the host not allowed")
}

// TestWarmTransferThroughTrunk: tel: routes and extensions go to
// invite.trunk_host, the number kept as configured.
func TestWarmTransferThroughTrunk(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ route, want string }{
		{route: "tel:+15551234567", want: "sip:+15551234567@%s;user=phone"},
		{route: "1234", want: "sip:1234@%s"},
	} {
		t.Run(tc.route, func(t *testing.T) {
			t.Parallel()
			dest := startDestination(t, destOptions{})
			h := start(t, 202, withInvite(func(o *InviteOptions) { o.TrunkHost = dest.addr.String() }))
			caller := startCallerSBC(t, 0)
			cmd := inviteCommand(caller, "trunk", tc.route)
			h.command(t, cmd)
			h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
			inv := dest.invite(t)
			require.Equal(t, fmt.Sprintf(tc.want, dest.addr.String()), inv.Recipient.String())
			require.Equal(t, "UDP", inv.Via().Transport)
			h.fact(t, cmd.CallId, &batonv1.CallEnded{CallId: cmd.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
			require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), h.outcome(t, cmd.CommandId).GetStatus().String())
		})
	}
}

func TestWarmTransferCallerHangsUpDuringTheWhisper(t *testing.T) {
	t.Parallel()
	h := start(t, 202, withInvite(nil))
	caller := startCallerSBC(t, 0)
	dest := startDestination(t, destOptions{noEcho: true})
	cmd := inviteCommand(caller, "whisper-hangup", "sip:queue@"+dest.addr.String())
	cmd.Whisper = writeWAV(t, make([]int16, 8000*10)) // 10 s
	h.command(t, cmd)
	h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED)
	require.Eventually(t, func() bool { return len(dest.media()) > 0 }, 5*time.Second, time.Millisecond, "the whisper started")
	h.fact(t, cmd.CallId, &batonv1.CallEnded{CallId: cmd.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
	o := h.outcome(t, cmd.CommandId)
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED.String(), o.GetStatus().String())
	require.Equal(t, "caller hung up during the whisper", o.GetDetail())
	require.Equal(t, int64(1), dest.byes.Load(), "the destination was BYEd")
	require.Less(t, len(dest.media()), 8000*10/160, "the whisper stopped")
	require.Zero(t, caller.count(sip.INVITE), "the caller was never moved")
}

// bound reports whether a socket of network (udp, or tcp listening) is
// on port on this machine, from /proc/net/<network> (the local address
// column is HEXIP:HEXPORT).
func bound(t *testing.T, network string, port int) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/net/" + network)
	require.NoError(t, err)
	suffix := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(data), "\n")[1:] {
		fields := strings.Fields(line)
		// A TCP socket must be listening (state 0A).
		if len(fields) > 3 && strings.HasSuffix(fields[1], suffix) && (network == "udp" || fields[3] == "0A") {
			return true
		}
	}
	return false
}
