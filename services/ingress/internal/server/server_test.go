package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
)

func TestMain(m *testing.M) {
	// The SBC's INVITE carries an 1100-byte header, so it is larger than
	// the 1300 bytes sipgo's client sends over UDP (RFC 3261 18.1.1 wants
	// TCP there); carriers do send such datagrams, so the test SBC does too.
	sip.UDPMTUSize = 9000
	goleak.VerifyTestMain(m)
}

const offer = "v=0\r\n" +
	"o=sbc 1 1 IN IP4 127.0.0.1\r\n" +
	"s=-\r\n" +
	"c=IN IP4 127.0.0.1\r\n" +
	"t=0 0\r\n" +
	"m=audio 40000 RTP/AVP 8 0 101\r\n" +
	"a=rtpmap:8 PCMA/8000\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"a=fmtp:101 0-15\r\n" +
	"a=sendrecv\r\n"

// ingress is a running server under test.
type ingress struct {
	srv  *Server
	cfg  config.Config
	port int
	// stop shuts the server down and waits for Serve; it runs at cleanup
	// too, and only once.
	stop func()
	// cancel is the SIGTERM: Serve starts draining; done closes when it
	// returns.
	cancel func()
	done   <-chan struct{}
}

// startIngress runs a server on 127.0.0.1:0 against brokers until the test ends.
func startIngress(t *testing.T, brokers []string, tune func(*config.Config), opts ...Options) *ingress {
	t.Helper()
	return startIngressLogging(t, brokers, tune, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})), opts...)
}

// startIngressLogging is startIngress with the server logging to logger.
func startIngressLogging(t *testing.T, brokers []string, tune func(*config.Config), logger *slog.Logger, opts ...Options) *ingress {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Kafka.Brokers = brokers
	cfg.PublishTimeout = 5 * time.Second
	cfg.DrainTimeout = 0 // calls left up at the end of a test are dropped at once
	if tune != nil {
		tune(&cfg)
	}
	require.NoError(t, cfg.Validate())
	cl, err := kgo.NewClient(kafka.ClientOpts(cfg.Kafka, logger)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)

	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	srv, err := Listen(cfg, cl, logger, o)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan struct{})
	var serveErr error
	go func() {
		serveErr = srv.Serve(ctx)
		close(done)
	}()
	stop := sync.OnceFunc(func() {
		cancel()
		<-done
		require.NoError(t, serveErr)
	})
	t.Cleanup(stop)
	port := 0
	if a := srv.Addr(); a != nil {
		port = a.Port
	}
	return &ingress{srv: srv, cfg: cfg, port: port, stop: stop, cancel: cancel, done: done}
}

func newSBC(t *testing.T) *sipgo.Client {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("sbc"))
	require.NoError(t, err)
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, cli.Close())
		require.NoError(t, ua.Close())
	})
	return cli
}

// parseRequest turns SIP text (LF line ends allowed) into a request.
func parseRequest(t *testing.T, text string, body string) *sip.Request {
	t.Helper()
	if !strings.Contains(text, "Max-Forwards:") {
		// RFC 3261 8.1.1: every request has one; sipgo's client adds none.
		first, rest, _ := strings.Cut(text, "\n")
		text = first + "\nMax-Forwards: 70\n" + rest
	}
	text = strings.ReplaceAll(text, "\n", "\r\n")
	raw := fmt.Sprintf("%sContent-Length: %d\r\n\r\n%s", text, len(body), body)
	msg, err := sip.NewParser().ParseSIP([]byte(raw))
	require.NoError(t, err)
	req, ok := msg.(*sip.Request)
	require.True(t, ok)
	return req
}

// calls reads the calls topic from the start.
type calls struct {
	cl      *kgo.Client
	pending []*kgo.Record
}

func newCalls(t *testing.T, brokers []string, topic string) *calls {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return &calls{cl: cl}
}

func (c *calls) next(t *testing.T) events.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for len(c.pending) == 0 {
		fs := c.cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "no event on the calls topic")
		require.NoError(t, fs.Err0())
		c.pending = append(c.pending, fs.Records()...)
	}
	rec := c.pending[0]
	c.pending = c.pending[1:]
	ev, err := events.Decode(rec)
	require.NoError(t, err)
	require.Equal(t, string(rec.Key), ev.Subject)
	require.Equal(t, Source, ev.Source)
	return ev
}

func TestCallLifecycle(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, nil)
	sbc := newSBC(t)
	consumer := newCalls(t, brokers, topics.Calls)
	ctx := t.Context()

	callID := "lifecycle-" + sip.GenerateTagN(8)
	long := strings.Repeat("a", 1100)
	invite := parseRequest(t, fmt.Sprintf(`INVITE sip:+15550200@127.0.0.1:%d SIP/2.0
Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK-upstream
Record-Route: <sip:rr1.example.com;lr>, <sip:rr2.example.com;lr>
Record-Route: <sip:rr3.example.com;lr>
Max-Forwards: 69
From: "Caller" <sip:+15550100@carrier.example.com>;tag=sbc-tag
To: <sip:+15550200@baton.example.com>
Call-ID: %s
CSeq: 1 INVITE
Contact: <sip:sbc@127.0.0.1:5999>
X-Customer-Id: C-1001
x-intent: billing
X-Customer-Id: second-ignored
X-Long: %s
Content-Type: application/sdp
`, in.port, callID, long), offer)

	res, err := sbc.Do(ctx, invite, sipgo.ClientRequestAddVia)
	require.NoError(t, err)
	require.Equal(t, sip.StatusOK, res.StatusCode, res.Short())
	require.Equal(t, "application/sdp", res.ContentType().Value())
	body := string(res.Body())
	require.Contains(t, body, "c=IN IP4 127.0.0.1\r\n")
	require.Contains(t, body, "a=rtpmap:0 PCMU/8000\r\n")
	require.Contains(t, body, "a=rtpmap:101 telephone-event/8000\r\n")
	contact := res.Contact()
	require.NotNil(t, contact)
	require.Equal(t, "baton", contact.Address.User)
	require.Equal(t, in.port, contact.Address.Port)
	localTag, ok := res.To().Params.Get("tag")
	require.True(t, ok)

	ev := consumer.next(t)
	require.Equal(t, events.TypeCallStarted, ev.Type)
	require.Equal(t, callID, ev.Subject)
	started := ev.Data.(*batonv1.CallStarted)
	d := started.GetDialog()
	require.Equal(t, callID, d.GetCallId())
	require.Equal(t, localTag, d.GetLocalTag())
	require.Equal(t, "sbc-tag", d.GetRemoteTag())
	require.Equal(t, "sip:+15550200@baton.example.com", d.GetLocalUri())
	require.Equal(t, "sip:+15550100@carrier.example.com", d.GetRemoteUri())
	require.Equal(t, "sip:sbc@127.0.0.1:5999", d.GetRemoteTarget())
	require.Equal(t, []string{"<sip:rr1.example.com;lr>", "<sip:rr2.example.com;lr>", "<sip:rr3.example.com;lr>"}, d.GetRouteSet())
	require.Equal(t, batonv1.Transport_TRANSPORT_UDP, d.GetTransport())
	require.EqualValues(t, 1, d.GetNextLocalCseq())
	require.Equal(t, fmt.Sprintf("<sip:baton@127.0.0.1:%d>", in.port), d.GetLocalContact())
	require.Equal(t, d.GetRemoteAddress(), started.GetSourceAddress())
	require.True(t, strings.HasPrefix(started.GetSourceAddress(), "127.0.0.1:"), started.GetSourceAddress())

	require.Equal(t, map[string]string{"Customer-Id": "C-1001", "intent": "billing", "Long": long}, started.GetVariables())
	require.Equal(t, "+15550100", started.GetCallerNumber())
	require.Equal(t, "+15550100", started.GetCallerNumberRaw())
	require.Equal(t, "+15550200", started.GetCalleeNumber())
	require.Equal(t, "+15550200", started.GetCalleeNumberRaw())
	require.Equal(t, "default", started.GetTrunk())
	require.Equal(t, fmt.Sprintf("sip:+15550200@127.0.0.1:%d", in.port), started.GetRequestUri())
	require.Equal(t, offer, started.GetRemoteSdp())
	require.Equal(t, body, started.GetLocalSdp())
	require.EqualValues(t, 1, started.GetOversizedHeaders())

	var vias, rrs []string
	for _, h := range started.GetSipHeaders() {
		switch h.GetName() {
		case "Via":
			vias = append(vias, h.GetValue())
		case "Record-Route":
			rrs = append(rrs, h.GetValue())
		case "X-Long":
			require.True(t, h.GetOversized())
			continue
		}
		require.False(t, h.GetOversized(), h.GetName())
	}
	require.Len(t, vias, 2)
	require.Contains(t, vias[1], "10.9.9.9:5060;branch=z9hG4bK-upstream")
	require.Len(t, rrs, 3)
	require.Equal(t, "Via", started.GetSipHeaders()[0].GetName())

	// The rest of the dialog comes to the Contact ingress gave.
	dialog := func(method sip.RequestMethod, cseq int, extra, body string) *sip.Request {
		return parseRequest(t, fmt.Sprintf(`%s sip:baton@127.0.0.1:%d SIP/2.0
Max-Forwards: 70
From: <sip:+15550100@carrier.example.com>;tag=sbc-tag
To: <sip:+15550200@baton.example.com>;tag=%s
Call-ID: %s
CSeq: %d %s
%s`, method, in.port, localTag, callID, cseq, method, extra), body)
	}
	require.NoError(t, sbc.WriteRequest(dialog(sip.ACK, 1, "", ""), sipgo.ClientRequestAddVia))
	require.Eventually(t, func() bool {
		in.srv.mu.Lock()
		defer in.srv.mu.Unlock()
		c := in.srv.calls[callID]
		if c == nil {
			return false
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.state == stateConfirmed
	}, 5*time.Second, 10*time.Millisecond)

	res, err = sbc.Do(ctx, dialog(sip.NOTIFY, 2, "Event: refer;id=7\nSubscription-State: terminated;reason=noresource\nContent-Type: message/sipfrag;version=2.0\n", "SIP/2.0 200 OK\r\n"), sipgo.ClientRequestAddVia)
	require.NoError(t, err)
	require.Equal(t, sip.StatusOK, res.StatusCode)
	ev = consumer.next(t)
	require.Equal(t, events.TypeNotifyReceived, ev.Type)
	n := ev.Data.(*batonv1.NotifyReceived)
	require.Equal(t, callID, n.GetCallId())
	require.Equal(t, "refer;id=7", n.GetEvent())
	require.Equal(t, "terminated;reason=noresource", n.GetSubscriptionState())
	require.EqualValues(t, 200, n.GetSipfragStatus())
	require.Equal(t, "OK", n.GetSipfragReason())
	require.EqualValues(t, 2, n.GetCseq())

	res, err = sbc.Do(ctx, dialog(sip.BYE, 3, "Reason: Q.850;cause=16;text=\"Normal call clearing\"\n", ""), sipgo.ClientRequestAddVia)
	require.NoError(t, err)
	require.Equal(t, sip.StatusOK, res.StatusCode)
	ev = consumer.next(t)
	require.Equal(t, events.TypeCallEnded, ev.Type)
	ended := ev.Data.(*batonv1.CallEnded)
	require.Equal(t, callID, ended.GetCallId())
	require.Equal(t, batonv1.Party_PARTY_REMOTE, ended.GetEndedBy())
	require.Equal(t, "BYE", ended.GetMethod())
	require.Equal(t, `Q.850;cause=16;text="Normal call clearing"`, ended.GetReason())
	require.Positive(t, ended.GetDuration().AsDuration())

	// The dialog is gone: a second BYE and a NOTIFY get 481.
	for i, m := range []sip.RequestMethod{sip.BYE, sip.NOTIFY} {
		res, err = sbc.Do(ctx, dialog(m, 4+i, "Event: refer\n", ""), sipgo.ClientRequestAddVia)
		require.NoError(t, err)
		require.Equal(t, sip.StatusCallTransactionDoesNotExists, res.StatusCode, m)
	}
}

func TestKafkaDownRefusesCall(t *testing.T) {
	t.Parallel()
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := l.Addr().String()
	require.NoError(t, l.Close())

	in := startIngress(t, []string{dead}, func(c *config.Config) { c.PublishTimeout = 300 * time.Millisecond })
	// A raw socket, not sipgo's client: its ACK for the 503 would race the
	// server's shutdown at the end of the test.
	sbc := newRawSBC(t)
	began := time.Now()
	sbc.send(t, in.srv.Addr(), rawRequest(sip.INVITE, in.port, sbc.port, "kafka-down", "z9hG4bK-down", "", offer, 1))
	var res *sip.Response
	for res == nil || res.StatusCode < 200 {
		res = sbc.read(t, 10*time.Second)
		require.NotNil(t, res)
	}
	require.Equal(t, sip.StatusServiceUnavailable, res.StatusCode, res.Short())
	ra := res.GetHeader("Retry-After")
	require.NotNil(t, ra)
	require.Equal(t, "5", ra.Value())
	require.Less(t, time.Since(began), 3*time.Second, "the publish must be bounded by publish_timeout")
	in.srv.mu.Lock()
	require.Empty(t, in.srv.calls, "a refused call must not stay in the table")
	in.srv.mu.Unlock()
}

func TestRefusedInvites(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, nil)
	sbc := newSBC(t)
	g729 := strings.NewReplacer("RTP/AVP 8 0 101", "RTP/AVP 18", "a=rtpmap:8 PCMA/8000\r\n", "", "a=rtpmap:0 PCMU/8000\r\n", "").Replace(offer)
	cases := []struct {
		name, extra, body string
		want              int
	}{
		{"no sdp", "", "", sip.StatusNotAcceptableHere},
		{"no g711", "Content-Type: application/sdp\n", g729, sip.StatusNotAcceptableHere},
		{"unknown dialog", "Content-Type: application/sdp\n", offer, sip.StatusCallTransactionDoesNotExists},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			toTag := ""
			if tc.want == sip.StatusCallTransactionDoesNotExists {
				toTag = ";tag=nope"
			}
			req := parseRequest(t, fmt.Sprintf(`INVITE sip:+15550200@127.0.0.1:%d SIP/2.0
From: <sip:+15550100@carrier.example.com>;tag=r%d
To: <sip:+15550200@baton.example.com>%s
Call-ID: refused-%d
CSeq: 1 INVITE
Contact: <sip:sbc@127.0.0.1:5999>
%s`, in.port, i, toTag, i, tc.extra), tc.body)
			res, err := sbc.Do(t.Context(), req, sipgo.ClientRequestAddVia)
			require.NoError(t, err)
			require.Equal(t, tc.want, res.StatusCode, res.Short())
		})
	}

	opts := parseRequest(t, fmt.Sprintf("OPTIONS sip:baton@127.0.0.1:%d SIP/2.0\nFrom: <sip:sbc@127.0.0.1>;tag=o\nTo: <sip:baton@127.0.0.1>\nCall-ID: options-1\nCSeq: 1 OPTIONS\n", in.port), "")
	res, err := sbc.Do(t.Context(), opts, sipgo.ClientRequestAddVia)
	require.NoError(t, err)
	require.Equal(t, sip.StatusOK, res.StatusCode)

	in.srv.mu.Lock()
	require.Empty(t, in.srv.calls)
	in.srv.mu.Unlock()
}

// TestRetransmittedInviteIsOneCall sends the same INVITE datagram three
// times over a raw socket: twice before the answer and once after it. The
// transaction layer absorbs the copies; one CallStarted is published and no
// copy is treated as a new request (which would get 482).
func TestRetransmittedInviteIsOneCall(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, nil)
	consumer := newCalls(t, brokers, topics.Calls)

	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, conn.Close()) })
	me := conn.LocalAddr().(*net.UDPAddr).Port
	dst := in.srv.Addr()

	msg := func(method sip.RequestMethod, branch, toTag, body string, cseq int) []byte {
		return rawRequest(method, in.port, me, "retransmitted", branch, toTag, body, cseq)
	}
	invite := msg(sip.INVITE, "z9hG4bK-retx-1", "", offer, 1)
	for range 2 {
		_, err = conn.WriteToUDP(invite, dst)
		require.NoError(t, err)
	}

	statuses := map[int]int{}
	var ok *sip.Response
	buf := make([]byte, 65535)
	for ok == nil {
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
		n, _, err := conn.ReadFromUDP(buf)
		require.NoError(t, err)
		m, err := sip.NewParser().ParseSIP(buf[:n])
		require.NoError(t, err)
		res := m.(*sip.Response)
		statuses[res.StatusCode]++
		if res.StatusCode == sip.StatusOK {
			ok = res
		}
	}
	_, err = conn.WriteToUDP(invite, dst) // after the answer: absorbed too
	require.NoError(t, err)

	tag, _ := ok.To().Params.Get("tag")
	_, err = conn.WriteToUDP(msg(sip.ACK, "z9hG4bK-retx-ack", ";tag="+tag, "", 1), dst)
	require.NoError(t, err)
	_, err = conn.WriteToUDP(msg(sip.BYE, "z9hG4bK-retx-bye", ";tag="+tag, "", 2), dst)
	require.NoError(t, err)

	// Responses until the BYE's 200.
	for {
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
		n, _, err := conn.ReadFromUDP(buf)
		require.NoError(t, err)
		m, err := sip.NewParser().ParseSIP(buf[:n])
		require.NoError(t, err)
		res := m.(*sip.Response)
		statuses[res.StatusCode]++
		if res.CSeq().MethodName == sip.BYE {
			require.Equal(t, sip.StatusOK, res.StatusCode)
			break
		}
	}
	require.Zero(t, statuses[sip.StatusLoopDetected], "a retransmission was taken for a new request: %v", statuses)

	require.Equal(t, events.TypeCallStarted, consumer.next(t).Type)
	require.Equal(t, events.TypeCallEnded, consumer.next(t).Type, "exactly one CallStarted precedes CallEnded")
}

// rawRequest renders a request from the SBC at 127.0.0.1:me to ingress on port.
func rawRequest(method sip.RequestMethod, port, me int, callID, branch, toTag, body string, cseq int, extra ...string) []byte {
	ct := ""
	if body != "" {
		ct = "Content-Type: application/sdp\r\n"
	}
	return fmt.Appendf(nil, "%s sip:+15550200@127.0.0.1:%d SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=%s\r\n"+
		"From: <sip:+15550100@127.0.0.1>;tag=raw\r\n"+
		"To: <sip:+15550200@127.0.0.1>%s\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: %d %s\r\n"+
		"Contact: <sip:sbc@127.0.0.1:%d>\r\n"+
		"Max-Forwards: 70\r\n"+
		"%s%sContent-Length: %d\r\n\r\n%s",
		method, port, me, branch, toTag, callID, cseq, method, me, strings.Join(extra, ""), ct, len(body), body)
}

// rawSBC is a bare UDP socket playing the SBC.
type rawSBC struct {
	conn *net.UDPConn
	port int
	buf  []byte
}

func newRawSBC(t *testing.T) *rawSBC {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, conn.Close()) })
	return &rawSBC{conn: conn, port: conn.LocalAddr().(*net.UDPAddr).Port, buf: make([]byte, 65535)}
}

func (r *rawSBC) send(t *testing.T, to *net.UDPAddr, msg []byte) {
	t.Helper()
	_, err := r.conn.WriteToUDP(msg, to)
	require.NoError(t, err)
}

// read returns the next response, or nil when none comes within wait.
func (r *rawSBC) read(t *testing.T, wait time.Duration) *sip.Response {
	t.Helper()
	require.NoError(t, r.conn.SetReadDeadline(time.Now().Add(wait)))
	n, _, err := r.conn.ReadFromUDP(r.buf)
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	require.NoError(t, err)
	m, err := sip.NewParser().ParseSIP(r.buf[:n])
	require.NoError(t, err)
	res, ok := m.(*sip.Response)
	require.True(t, ok)
	return res
}

// TestCancelWhilePublishing holds the CallStarted produce in the broker,
// cancels the INVITE meanwhile, and expects 200 to the CANCEL, 487 to the
// INVITE, no 200, and a CallEnded with method CANCEL after CallStarted.
func TestCancelWhilePublishing(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topics.All()...))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	held := make(chan struct{})
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce)
	var holding atomic.Bool
	cluster.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		// While the first produce sleeps, others may run this function too.
		if holding.CompareAndSwap(false, true) {
			cluster.SleepControl(func() {
				close(held)
				<-release
			})
		}
		return nil, nil, false
	})
	brokers := cluster.ListenAddrs()
	in := startIngress(t, brokers, nil)
	consumer := newCalls(t, brokers, topics.Calls)
	sbc := newRawSBC(t)
	dst := in.srv.Addr()

	sbc.send(t, dst, rawRequest(sip.INVITE, in.port, sbc.port, "cancelled", "z9hG4bK-cancel-1", "", offer, 1))
	select {
	case <-held:
	case <-t.Context().Done():
		t.Fatal("CallStarted was never produced")
	}
	sbc.send(t, dst, rawRequest(sip.CANCEL, in.port, sbc.port, "cancelled", "z9hG4bK-cancel-1", "", "", 1,
		"Reason: SIP;cause=487;text=\"caller hung up\"\r\n"))

	got := map[string]int{}
	for got["CANCEL"] == 0 || got["INVITE"] < 400 {
		res := sbc.read(t, 10*time.Second)
		require.NotNil(t, res, "responses so far: %v", got)
		if res.StatusCode >= 200 {
			got[string(res.CSeq().MethodName)] = res.StatusCode
		}
	}
	require.Equal(t, sip.StatusOK, got["CANCEL"])
	require.Equal(t, sip.StatusRequestTerminated, got["INVITE"])
	releaseOnce()

	require.Equal(t, events.TypeCallStarted, consumer.next(t).Type)
	ev := consumer.next(t)
	require.Equal(t, events.TypeCallEnded, ev.Type)
	ended := ev.Data.(*batonv1.CallEnded)
	require.Equal(t, "CANCEL", ended.GetMethod())
	require.Equal(t, `SIP;cause=487;text="caller hung up"`, ended.GetReason())
	require.Equal(t, batonv1.Party_PARTY_REMOTE, ended.GetEndedBy())

	// CallEnded is published after the handler decided; no 200 follows.
	for res := sbc.read(t, 300*time.Millisecond); res != nil; res = sbc.read(t, 300*time.Millisecond) {
		require.NotEqual(t, sip.StatusOK, res.StatusCode, "cancelled INVITE answered 200")
	}
	in.srv.mu.Lock()
	require.Empty(t, in.srv.calls)
	in.srv.mu.Unlock()
}

// TestShutdownReleasesCalls stops the server with a call up: Serve returns,
// the call's RTP port and the SIP port are free again.
func TestShutdownReleasesCalls(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, nil)
	sbc := newRawSBC(t)
	sbc.send(t, in.srv.Addr(), rawRequest(sip.INVITE, in.port, sbc.port, "shutdown", "z9hG4bK-shut-1", "", offer, 1))
	var ok *sip.Response
	for ok == nil {
		res := sbc.read(t, 10*time.Second)
		require.NotNil(t, res)
		if res.StatusCode == sip.StatusOK {
			ok = res
		}
	}
	tag, _ := ok.To().Params.Get("tag")
	sbc.send(t, in.srv.Addr(), rawRequest(sip.ACK, in.port, sbc.port, "shutdown", "z9hG4bK-shut-ack", ";tag="+tag, "", 1))
	// Stop only once the ACK is through: a request still inside sipgo when
	// its socket closes makes sipgo open a new one (a goroutine leak in
	// the test, harmless in a process that is exiting).
	require.Eventually(t, func() bool {
		in.srv.mu.Lock()
		c := in.srv.calls["shutdown"]
		in.srv.mu.Unlock()
		if c == nil {
			return false
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.state == stateConfirmed
	}, 5*time.Second, 5*time.Millisecond)
	var rtpPort int
	for line := range strings.SplitSeq(string(ok.Body()), "\r\n") {
		if rest, found := strings.CutPrefix(line, "m=audio "); found {
			p, _, _ := strings.Cut(rest, " ")
			var err error
			rtpPort, err = strconv.Atoi(p)
			require.NoError(t, err)
		}
	}
	require.NotZero(t, rtpPort)
	_, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: rtpPort})
	require.Error(t, err, "the call's RTP port is open while the call is up")

	in.stop()
	for _, port := range []int{rtpPort, in.port} {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		require.NoError(t, err, "port %d still bound after shutdown", port)
		require.NoError(t, c.Close())
	}
	in.srv.mu.Lock()
	require.Empty(t, in.srv.calls)
	in.srv.mu.Unlock()
}

func TestLocalContactUsesExternalHost(t *testing.T) {
	t.Parallel()
	in := startIngress(t, []string{"127.0.0.1:1"}, func(c *config.Config) { c.ExternalHost = "sbc-facing.example.com" })
	require.Equal(t, "<sip:baton@sbc-facing.example.com:"+strconv.Itoa(in.port)+">", in.srv.LocalContact())
}
