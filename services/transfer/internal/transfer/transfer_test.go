package transfer

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/transfer/internal/attempts"
	"github.com/baton-voice/baton/services/transfer/internal/request"
	"github.com/baton-voice/baton/services/transfer/internal/uac"
)

func TestMain(m *testing.M) {
	// Short SIP timers so an unanswered request times out in about a
	// second (Timer F = 64*T1) instead of 32 s. Responses on loopback take
	// well under T1, so nothing else changes.
	sip.SetTimers(20*time.Millisecond, 160*time.Millisecond, 100*time.Millisecond)
	goleak.VerifyTestMain(m)
}

// sbc is a sipgo UAS on loopback playing the carrier SBC.
type sbc struct {
	addr *net.UDPAddr
	// tlsPort is its TLS listener's port; 0 without TLS.
	tlsPort int
	// answer is the status the next requests get; 0 means no answer.
	mu       sync.Mutex
	answer   int
	received []received
	got      chan received
	// script, when set, decides the answers instead: the status of the
	// n-th request (from 1); it may block (the far end thinking).
	script func(n int, req *sip.Request) int
	// closing is set (under mu) when the SBC stops: requests that arrive
	// from then on are not handled. handlers counts the handlers that
	// began before, which the SBC lets answer before it closes its
	// sockets.
	closing  bool
	handlers sync.WaitGroup
}

// received is a request as the SBC saw it.
type received struct {
	req    *sip.Request
	source string
}

// startSBC starts the SBC on one loopback port for UDP and TCP and, with
// a TLS configuration, on a TLS port too.
func startSBC(t *testing.T, answer int, tlsConf ...*tls.Config) *sbc {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("test-sbc"))
	require.NoError(t, err)
	srv, err := sipgo.NewServer(ua)
	require.NoError(t, err)
	conn, ln := listenUDPAndTCP(t)
	s := &sbc{addr: conn.LocalAddr().(*net.UDPAddr), answer: answer, got: make(chan received, 64)}
	handle := func(req *sip.Request, tx sip.ServerTransaction) {
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			return
		}
		s.handlers.Add(1)
		defer s.handlers.Done()
		r := received{req: req, source: req.Source()}
		s.received = append(s.received, r)
		code, script, n := s.answer, s.script, len(s.received)
		s.mu.Unlock()
		if req.Method == sip.BYE && code == 202 {
			code = 200
		}
		s.got <- r
		if script != nil {
			code = script(n, req)
		}
		if code == 0 {
			return
		}
		res := sip.NewResponseFromRequest(req, code, reasonOf(code), nil)
		if err := tx.Respond(res); err != nil && !s.isClosing() {
			// When closing, the SBC gave up waiting for this handler.
			t.Errorf("sbc respond %d: %v", code, err)
		}
	}
	srv.OnRefer(handle)
	srv.OnBye(handle)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.ServeUDP(conn) })
	wg.Go(func() { _ = srv.ServeTCP(ln) })
	var tlsLn net.Listener
	if len(tlsConf) > 0 {
		var lc net.ListenConfig
		l, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
		require.NoError(t, err)
		tlsLn = tls.NewListener(l, tlsConf[0])
		s.tlsPort = l.Addr().(*net.TCPAddr).Port
		wg.Go(func() { _ = srv.ServeTLS(tlsLn) })
	}
	t.Cleanup(func() {
		// A test may end as soon as it has seen a request, before the
		// handler has answered it: the handlers that began answer on open
		// sockets first (a script that still blocks is given up on).
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		s.waitHandlers(t, 5*time.Second)
		require.NoError(t, ua.Close())
		_ = conn.Close()
		_ = ln.Close()
		if tlsLn != nil {
			_ = tlsLn.Close()
		}
		wg.Wait()
	})
	return s
}

// listenUDPAndTCP binds one loopback port for both UDP and TCP, as an SBC
// listens.
func listenUDPAndTCP(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	var lc net.ListenConfig
	for range 20 {
		conn, err := lc.ListenPacket(t.Context(), "udp", "127.0.0.1:0")
		require.NoError(t, err)
		ln, err := lc.Listen(t.Context(), "tcp", conn.LocalAddr().String())
		if err == nil {
			return conn, ln
		}
		require.NoError(t, conn.Close())
	}
	t.Fatal("no port free for both UDP and TCP")
	return nil, nil
}

func reasonOf(code int) string {
	switch code {
	case 200:
		return "OK"
	case 202:
		return "Accepted"
	case 405:
		return "Method Not Allowed"
	case 481:
		return "Call/Transaction Does Not Exist"
	case 603:
		return "Decline"
	}
	return "Status"
}

func (s *sbc) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// waitHandlers waits up to d for the handlers that began to return.
func (s *sbc) waitHandlers(t *testing.T, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		s.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Logf("test SBC: a handler still runs after %v; closing anyway", d)
	}
}

func (s *sbc) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.received)
}

// next waits for the next request the SBC received.
func (s *sbc) next(t *testing.T) received {
	t.Helper()
	select {
	case r := <-s.got:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("the SBC received no request")
		return received{}
	}
}

// harness is a running transfer service against kfake and a test SBC.
type harness struct {
	sipOptions uac.Options
	topics     kafka.Topics
	cfg        kafka.Config
	// cluster is the Kafka cluster: a test can hold or drop requests to it
	// (ControlKey), as a broker or a network would.
	cluster *kfake.Cluster
	logger  *slog.Logger
	sip     *uac.Client
	sbc     *sbc
	pub     *kgo.Client
	out     *kgo.Client
	pending []*batonv1.TransferOutcome
	// learned are the ReferRefusalLearned read from the transfers topic.
	learned []*batonv1.ReferRefusalLearned
	// logs holds the log lines of the instances, info and above.
	logs *lockedBuffer
	// draining closes when shutdown has stopped taking commands.
	draining <-chan struct{}
	// stop ends Run (as SIGTERM would) and returns its error and how long
	// it took to return.
	stop func() (time.Duration, error)
	// in is the instance start launched.
	in *instance
}

// instance is one transfer process: its SIP socket, attempt log, Kafka
// client and Service.
type instance struct {
	sip *uac.Client
	cl  *kgo.Client
	svc *Service
	// draining closes when the Service logs that shutdown stopped taking
	// commands (Run, once the handoffs topic is paused).
	draining <-chan struct{}
	done     chan error
	cancel   context.CancelFunc
}

// transferGroup is the consumer group of the tests' instances.
const transferGroup = "baton-transfer"

// drainingLog is what Run logs once it paused the handoffs topic.
const drainingLog = "stopped taking commands; finishing transfers"

// logWatch is a slog.Handler that passes records on to next, at next's
// levels, and closes seen when a record with the message msg is logged,
// at any level.
type logWatch struct {
	next slog.Handler
	msg  string
	once *sync.Once
	seen chan struct{}
}

// watchLog is a logger that writes through next and a channel that
// closes once msg is logged.
func watchLog(next slog.Handler, msg string) (*slog.Logger, <-chan struct{}) {
	w := &logWatch{next: next, msg: msg, once: new(sync.Once), seen: make(chan struct{})}
	return slog.New(w), w.seen
}

func (w *logWatch) Enabled(context.Context, slog.Level) bool { return true }

func (w *logWatch) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == w.msg {
		w.once.Do(func() { close(w.seen) })
	}
	if !w.next.Enabled(ctx, r.Level) {
		return nil
	}
	return w.next.Handle(ctx, r)
}

func (w *logWatch) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *w
	c.next = w.next.WithAttrs(attrs)
	return &c
}

func (w *logWatch) WithGroup(name string) slog.Handler {
	c := *w
	c.next = w.next.WithGroup(name)
	return &c
}

// testPeers is where the tests' SBCs listen.
var testPeers = netip.MustParsePrefix("127.0.0.1/32")

// attemptTopic is the attempt log of the tests.
const attemptTopic = "baton.transfer-attempts"

func start(t *testing.T, answer int, tune func(*Options), sip ...uac.Options) *harness {
	t.Helper()
	cfg := kafka.DefaultConfig()
	cluster := kafkatest.Start(t, 3, cfg.Topics.All()...)
	brokers := cluster.ListenAddrs()
	cfg.Brokers = brokers
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewMultiHandler(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}),
		slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	h := &harness{topics: cfg.Topics, cfg: cfg, cluster: cluster, logger: logger, logs: logs}
	if len(sip) > 0 {
		h.sipOptions = sip[0]
	}

	in := h.launch(t, tune)
	var once sync.Once
	var runErr error
	var took time.Duration
	stop := func() (time.Duration, error) {
		once.Do(func() {
			began := time.Now()
			in.cancel()
			runErr = <-in.done
			took = time.Since(began)
		})
		return took, runErr
	}
	t.Cleanup(func() {
		_, err := stop()
		require.NoError(t, err)
	})

	pub, err := kgo.NewClient(kafka.ClientOpts(cfg, logger)...)
	require.NoError(t, err)
	t.Cleanup(pub.Close)
	out, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(cfg.Topics.Transfers),
		// As kafka.ClientOpts does: a 5 s fetch hold would outlast the waits.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(kafka.FetchMaxWait))
	require.NoError(t, err)
	t.Cleanup(out.Close)

	h.in = in
	h.sip, h.sbc, h.pub, h.out, h.stop, h.draining = in.sip, startSBC(t, answer), pub, out, stop, in.draining
	return h
}

// launch starts one more transfer instance in the group. Its cleanup is
// the caller's (cancel, then read done).
func (h *harness) launch(t *testing.T, tune func(*Options)) *instance {
	t.Helper()
	sipClient, err := uac.Listen(t.Context(), "127.0.0.1:0", "127.0.0.1", h.logger, h.sipOptions)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, sipClient.Close()) })

	alog, err := attempts.Open(t.Context(), kafka.ClientOpts(h.cfg, h.logger), attempts.Options{
		Topic: attemptTopic, Partitions: 3, ReplicationFactor: -1, Retention: time.Hour, Instance: t.Name(),
	}, h.logger)
	require.NoError(t, err)
	t.Cleanup(alog.Close)

	opts := append(kafka.ClientOpts(h.cfg, h.logger), kafka.ConsumerOpts(transferGroup, h.cfg.Topics.Handoffs, h.cfg.Topics.Calls)...)
	opts = append(opts, kgo.OnPartitionsAssigned(alog.OnAssigned))
	cl, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)

	o := Options{
		Topics:          h.cfg.Topics,
		NotifyTimeout:   10 * time.Second,
		MaxInFlight:     16,
		MaxCommandAge:   time.Minute,
		ProduceTimeout:  5 * time.Second,
		ShutdownTimeout: 5 * time.Second,
		// The test SBCs and callers listen on 127.0.0.1: the peer
		// network transfer is configured to reach, as an operator lists
		// its SBCs' range.
		Peers: request.Peers{Networks: []netip.Prefix{testPeers}},
	}
	if tune != nil {
		tune(&o)
	}
	logger, draining := watchLog(h.logger.Handler(), drainingLog)
	svc := New(cl, sipClient, alog, o, logger)
	in := &instance{sip: sipClient, cl: cl, svc: svc, draining: draining, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	in.cancel = cancel
	go func() { in.done <- svc.Run(ctx) }()
	return in
}

func (h *harness) publish(t *testing.T, topic, callID string, msg proto.Message, at time.Time) {
	t.Helper()
	ev, err := events.New("test", callID, msg, at)
	require.NoError(t, err)
	rec, err := events.Encode(topic, ev)
	require.NoError(t, err)
	require.NoError(t, h.pub.ProduceSync(t.Context(), rec).FirstErr())
}

func (h *harness) command(t *testing.T, cmd *batonv1.HandoffCommand) {
	t.Helper()
	h.publish(t, h.topics.Handoffs, cmd.GetCallId(), cmd, time.Now())
}

func (h *harness) fact(t *testing.T, callID string, msg proto.Message) {
	t.Helper()
	h.publish(t, h.topics.Calls, callID, msg, time.Now())
}

// outcome returns the next outcome of the command.
func (h *harness) outcome(t *testing.T, commandID string) *batonv1.TransferOutcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for {
		for i, o := range h.pending {
			if o.GetCommandId() == commandID {
				h.pending = append(h.pending[:i], h.pending[i+1:]...)
				return o
			}
		}
		fetches := h.out.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "no outcome for command %s", commandID)
		for _, rec := range fetches.Records() {
			ev, err := events.Decode(rec)
			require.NoError(t, err)
			require.Equal(t, Source, ev.Source)
			if l, ok := ev.Data.(*batonv1.ReferRefusalLearned); ok {
				require.Equal(t, l.GetCallId(), string(rec.Key), "keyed by call id")
				h.learned = append(h.learned, l)
				continue
			}
			o, ok := ev.Data.(*batonv1.TransferOutcome)
			require.True(t, ok, "unexpected %T on the transfers topic", ev.Data)
			require.Equal(t, o.GetCallId(), string(rec.Key), "outcomes are keyed by call id")
			h.pending = append(h.pending, o)
		}
	}
}

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// dialogTo is the snapshot of a call with the SBC at addr.
func dialogTo(addr *net.UDPAddr, callID string) *batonv1.Dialog {
	hostport := net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port))
	return &batonv1.Dialog{
		CallId:        callID,
		LocalTag:      "ingress-" + callID,
		RemoteTag:     "sbc-" + callID,
		LocalUri:      "sip:agent@127.0.0.1:5060",
		RemoteUri:     "sip:sbc@" + hostport,
		RemoteTarget:  "sip:sbc@" + hostport,
		Transport:     batonv1.Transport_TRANSPORT_UDP,
		NextLocalCseq: 1,
		LocalContact:  "<sip:baton@127.0.0.1:5060>",
	}
}

func referCommand(h *harness, id string) *batonv1.HandoffCommand {
	return &batonv1.HandoffCommand{
		CommandId:   "cmd-" + id,
		CallId:      "call-" + id,
		Method:      batonv1.Method_METHOD_REFER,
		Destination: "support",
		Route:       "sip:+4930123456@agents.example.com",
		Headers: []*batonv1.SipHeader{
			{Name: "X-Customer-Id", Value: "CUST-10042"},
			{Name: "X-Intent", Value: "billing dispute & more"},
		},
		Dialog:  dialogTo(h.sbc.addr, "call-"+id),
		Reason:  "billing_dispute",
		Attempt: 1,
	}
}

func requireOutcome(t *testing.T, o *batonv1.TransferOutcome, status batonv1.OutcomeStatus, code int32) {
	t.Helper()
	require.Equal(t, status.String(), o.GetStatus().String(), "detail: %s", o.GetDetail())
	require.Equal(t, code, o.GetSipCode(), "detail: %s", o.GetDetail())
}

func TestReferAcceptedThenSucceeds(t *testing.T) {
	t.Parallel()
	h := start(t, 202, nil)
	cmd := referCommand(h, "a")
	sbcHost := net.JoinHostPort("127.0.0.1", strconv.Itoa(h.sbc.addr.Port))
	cmd.Dialog.RouteSet = []string{"<sip:" + sbcHost + ";lr>", "<sip:edge.example.com;lr>"}
	cmd.Dialog.NextLocalCseq = 5
	cmd.Attempt = 2
	h.command(t, cmd)

	r := h.sbc.next(t)
	req := r.req
	require.Equal(t, sip.REFER, req.Method)
	require.Equal(t, "sip:sbc@"+sbcHost, req.Recipient.String())
	fromTag, _ := req.From().Params.Get("tag")
	toTag, _ := req.To().Params.Get("tag")
	require.Equal(t, "ingress-call-a", fromTag)
	require.Equal(t, "sbc-call-a", toTag)
	require.Equal(t, "call-a", req.CallID().Value())
	require.Equal(t, uint32(5+request.CSeqsPerAttempt), req.CSeq().SeqNo, "next_local_cseq 5, attempt 2: past the first attempt's block")
	var routes []string
	for _, h := range req.GetHeaders("Route") {
		routes = append(routes, h.Value())
	}
	require.Equal(t, []string{"<sip:" + sbcHost + ";lr>", "<sip:edge.example.com;lr>"}, routes)
	require.Equal(t, "<sip:agent@127.0.0.1:5060>", req.GetHeader("Referred-By").Value())
	require.Equal(t, "sip:baton@127.0.0.1:5060", req.Contact().Address.String())
	require.Equal(t, "70", req.GetHeader("Max-Forwards").Value())
	// The Via names the transfer socket with its port, and the request
	// really left from it, so a peer answering the Via reaches us.
	transferAddr := h.sip.Addr().String()
	via := req.Via()
	require.Equal(t, transferAddr, net.JoinHostPort(via.Host, strconv.Itoa(via.Port)))
	require.Equal(t, transferAddr, r.source)
	embedded, err := sipx.ReferToHeaders(req.GetHeader("Refer-To").Value())
	require.NoError(t, err)
	require.Equal(t, []sipx.Header{{Name: "X-Customer-Id", Value: "CUST-10042"}, {Name: "X-Intent", Value: "billing dispute & more"}}, embedded)

	o := h.outcome(t, cmd.CommandId)
	requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
	require.Equal(t, "call-a", o.GetCallId())
	require.Equal(t, batonv1.Method_METHOD_REFER, o.GetMethod())
	require.Equal(t, "support", o.GetDestination())
	require.Equal(t, "billing_dispute", o.GetReason())

	h.fact(t, cmd.CallId, &batonv1.NotifyReceived{CallId: cmd.CallId, Event: "refer", SubscriptionState: "active",
		SipfragStatus: 100, SipfragReason: "Trying"})
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS, 100)

	h.fact(t, cmd.CallId, &batonv1.NotifyReceived{CallId: cmd.CallId, Event: "refer",
		SubscriptionState: "terminated;reason=noresource", SipfragStatus: 200, SipfragReason: "OK"})
	o = h.outcome(t, cmd.CommandId)
	requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)
	require.Equal(t, "OK", o.GetSipReason())
	require.Positive(t, o.GetElapsed().AsDuration())
	require.Equal(t, 1, h.sbc.count(), "exactly one REFER")
}

// TestReferOutcomes runs each case against its own SBC and cluster.
func TestReferOutcomes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		answer int
		tune   func(cmd *batonv1.HandoffCommand)
		facts  []proto.Message
		want   []batonv1.OutcomeStatus
		code   int32
		detail string
		sent   int
	}{
		{
			name: "REFER rejected 405", answer: 405,
			want: []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED}, code: 405, detail: "REFER rejected", sent: 1,
		},
		{
			name: "REFER declined 603", answer: 603,
			want: []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED}, code: 603, detail: "REFER rejected", sent: 1,
		},
		{
			name: "target busy: sipfrag 486", answer: 202,
			facts: []proto.Message{&batonv1.NotifyReceived{Event: "refer", SipfragStatus: 486, SipfragReason: "Busy Here"}},
			want:  []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED},
			code:  486, detail: "486", sent: 1,
		},
		{
			name: "no final NOTIFY within the answer timeout", answer: 202,
			tune:  func(cmd *batonv1.HandoffCommand) { cmd.AnswerTimeout = durationpb.New(300 * time.Millisecond) },
			facts: []proto.Message{&batonv1.NotifyReceived{Event: "refer", SipfragStatus: 100}},
			want: []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS,
				batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED},
			detail: "no final NOTIFY within 300ms", sent: 1,
		},
		{
			name: "call ended before the final NOTIFY", answer: 202,
			facts:  []proto.Message{&batonv1.CallEnded{EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"}},
			want:   []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED},
			detail: "call ended before the transfer completed", sent: 1,
		},
		{
			name: "call ends after the 200 sipfrag: still succeeded", answer: 202,
			facts: []proto.Message{
				&batonv1.NotifyReceived{Event: "refer", SipfragStatus: 200, SipfragReason: "OK"},
				&batonv1.CallEnded{EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"},
			},
			want: []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED},
			code: 200, sent: 1,
		},
		{
			name: "NOTIFY of another REFER is ignored", answer: 202,
			tune:   func(cmd *batonv1.HandoffCommand) { cmd.AnswerTimeout = durationpb.New(300 * time.Millisecond) },
			facts:  []proto.Message{&batonv1.NotifyReceived{Event: "refer;id=99", SipfragStatus: 200}},
			want:   []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED},
			detail: "no final NOTIFY", sent: 1,
		},
		{
			name: "SBC never answers", answer: 0,
			want:   []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED},
			detail: "refer timed out", sent: 1,
		},
		{
			name: "CR/LF in a header value: nothing is sent", answer: 202,
			tune: func(cmd *batonv1.HandoffCommand) {
				cmd.Headers = append(cmd.Headers, &batonv1.SipHeader{Name: "X-Evil", Value: "a\r\nRoute: <sip:evil>"})
			},
			want:   []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED},
			detail: "control character", sent: 0,
		},
		{
			name: "tel: route cannot carry a REFER", answer: 202,
			tune:   func(cmd *batonv1.HandoffCommand) { cmd.Route = "tel:+15551234567" },
			want:   []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED},
			detail: "want sip or sips", sent: 0,
		},
		{
			name: "command without a dialog", answer: 202,
			tune:   func(cmd *batonv1.HandoffCommand) { cmd.Dialog = nil },
			want:   []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED},
			detail: "the command has no dialog", sent: 0,
		},
		{
			name: "warm transfer without media config", answer: 202,
			tune:   func(cmd *batonv1.HandoffCommand) { cmd.Method = batonv1.Method_METHOD_INVITE },
			want:   []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED},
			detail: "warm transfer (INVITE) is not configured", sent: 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, tc.answer, nil)
			cmd := referCommand(h, "x")
			if tc.tune != nil {
				tc.tune(cmd)
			}
			h.command(t, cmd)
			for i, want := range tc.want {
				if i == 1 {
					for _, f := range tc.facts {
						h.fact(t, cmd.CallId, f)
					}
				}
				o := h.outcome(t, cmd.CommandId)
				require.Equal(t, want.String(), o.GetStatus().String(), "outcome %d, detail %q", i, o.GetDetail())
				if i == len(tc.want)-1 {
					require.Equal(t, tc.code, o.GetSipCode(), "detail %q", o.GetDetail())
					require.Contains(t, o.GetDetail(), tc.detail)
				}
			}
			if tc.answer == 0 {
				// Unanswered over UDP: the REFER is retransmitted.
				require.GreaterOrEqual(t, h.sbc.count(), tc.sent, "requests the SBC received")
				return
			}
			require.Equal(t, tc.sent, h.sbc.count(), "requests the SBC received")
		})
	}
}

func TestByeCarriesTheHeaders(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		answer int
		want   batonv1.OutcomeStatus
		code   int32
	}{
		{name: "accepted", answer: 200, want: batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, code: 200},
		{name: "unknown dialog", answer: 481, want: batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, code: 481},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, tc.answer, nil)
			cmd := referCommand(h, "bye")
			cmd.Method = batonv1.Method_METHOD_BYE
			cmd.Route = ""
			cmd.Dialog.NextLocalCseq = 3
			cmd.Headers = []*batonv1.SipHeader{{Name: "X-Handback", Value: "queue=7; reason=agent"}}
			h.command(t, cmd)

			req := h.sbc.next(t).req
			require.Equal(t, sip.BYE, req.Method)
			require.Equal(t, "call-bye", req.CallID().Value())
			require.Equal(t, uint32(3), req.CSeq().SeqNo)
			require.Equal(t, sip.BYE, req.CSeq().MethodName)
			fromTag, _ := req.From().Params.Get("tag")
			require.Equal(t, "ingress-call-bye", fromTag)
			require.Equal(t, "queue=7; reason=agent", req.GetHeader("X-Handback").Value())
			require.Nil(t, req.GetHeader("Refer-To"))

			o := h.outcome(t, cmd.CommandId)
			requireOutcome(t, o, tc.want, tc.code)
			require.Equal(t, batonv1.Method_METHOD_BYE, o.GetMethod())
		})
	}
}

func TestByeWithAnInvalidHeaderIsNeverSent(t *testing.T) {
	t.Parallel()
	metrics := NewMetrics(prometheus.NewRegistry())
	h := start(t, 200, func(o *Options) { o.Metrics = metrics })
	cmd := referCommand(h, "badbye")
	cmd.Method = batonv1.Method_METHOD_BYE
	cmd.Headers = []*batonv1.SipHeader{{Name: "X-Ok", Value: "1"}, {Name: "X-Bad", Value: "line\nbreak"}}
	h.command(t, cmd)
	o := h.outcome(t, cmd.CommandId)
	requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, 0)
	require.Contains(t, o.GetDetail(), "BYE not sent")
	require.Zero(t, h.sbc.count())
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.Refused.WithLabelValues("bye", RefusedInvalidHeader)))

	// A route with URI headers of its own, and a reason with a line
	// break: nothing sent, and the outcome's texts carry no control
	// character.
	cmd = referCommand(h, "badroute")
	cmd.Route = "sip:a@b?Refer-To=sip:evil@x"
	cmd.Reason = "billing\r\ndispute"
	h.command(t, cmd)
	o = h.outcome(t, cmd.CommandId)
	requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, 0)
	require.Contains(t, o.GetDetail(), "REFER not sent")
	require.Equal(t, "billing\uFFFD\uFFFDdispute", o.GetReason())
	require.Zero(t, h.sbc.count())
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.Refused.WithLabelValues("refer", RefusedInvalidRoute)))
}

func TestStaleAndDuplicateCommandsSendNothingMore(t *testing.T) {
	t.Parallel()
	h := start(t, 200, nil)

	stale := referCommand(h, "stale")
	stale.Method = batonv1.Method_METHOD_BYE
	h.publish(t, h.topics.Handoffs, stale.CallId, stale, time.Now().Add(-time.Hour))
	o := h.outcome(t, stale.CommandId)
	requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, 0)
	require.Contains(t, o.GetDetail(), "max_command_age")

	dup := referCommand(h, "dup")
	dup.Method = batonv1.Method_METHOD_BYE
	h.command(t, dup)
	requireOutcome(t, h.outcome(t, dup.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)
	h.command(t, dup) // redelivered: same command id
	// A marker command after the duplicate: once its BYE arrives, the
	// duplicate (earlier in the same partition) was handled and skipped.
	marker := referCommand(h, "dup")
	marker.CommandId = "cmd-marker"
	marker.Method = batonv1.Method_METHOD_BYE
	h.command(t, marker)
	requireOutcome(t, h.outcome(t, marker.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)
	require.Equal(t, 2, h.sbc.count(), "the duplicate sent no BYE")
}

func TestShutdownLetsAnAcceptedReferFinish(t *testing.T) {
	t.Parallel()
	h := start(t, 202, nil)
	cmd := referCommand(h, "drain")
	h.command(t, cmd)
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)

	stopped := make(chan error, 1)
	go func() {
		_, err := h.stop()
		stopped <- err
	}()
	select {
	case <-h.draining:
	case <-time.After(5 * time.Second):
		t.Fatalf("Run never logged %q", drainingLog)
	}
	// Shutdown has begun; the NOTIFY still gets through, and a command
	// published now is not started.
	late := referCommand(h, "too-late")
	h.command(t, late)
	h.fact(t, cmd.CallId, &batonv1.NotifyReceived{Event: "refer", SipfragStatus: 200, SipfragReason: "OK"})
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return once the transfer finished")
	}
	require.Equal(t, 1, h.sbc.count(), "no REFER for the command published during shutdown")
}

func TestShutdownAbandonsTransfersAtTheDeadline(t *testing.T) {
	t.Parallel()
	h := start(t, 202, func(o *Options) { o.ShutdownTimeout = 200 * time.Millisecond })
	cmd := referCommand(h, "late")
	h.command(t, cmd)
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
	took, err := h.stop()
	require.NoError(t, err)
	require.GreaterOrEqual(t, took, 200*time.Millisecond, "in-flight transfer was given the shutdown timeout")
	require.Less(t, took, 5*time.Second, "and no more than that (notify_timeout is 10s)")
}

// TestCrashAfterReferBeforeCommitSendsNoSecondRefer: an instance records
// the attempt, sends the REFER and dies before committing the command's
// offset. The command is redelivered to the next instance, which finds the
// attempt in the log, reports it and sends nothing.
func TestCrashAfterReferBeforeCommitSendsNoSecondRefer(t *testing.T) {
	t.Parallel()
	h := start(t, 202, nil)
	// The first instance of start() must not take the command: stop it
	// before it is published.
	_, err := h.stop()
	require.NoError(t, err)
	h.in.cl.Close() // leave the group

	// Until the next instance is dead, no offset commit reaches the
	// cluster: it drops the connection each one came on, as if the
	// process had died before the commit was written.
	var dropping, crashed atomic.Bool
	lost := make(chan struct{})
	var once sync.Once
	kafkatest.DropRequests(h.cluster, kmsg.OffsetCommit, func() bool {
		if !dropping.Load() {
			return false
		}
		crashed.Store(true)
		once.Do(func() { close(lost) })
		return true
	})
	dropping.Store(true)
	first := h.launch(t, func(o *Options) { o.ShutdownTimeout = 100 * time.Millisecond })
	cmd := referCommand(h, "crash")
	h.command(t, cmd)
	// The batch's attempt is recorded and its REFER is on its way; die
	// once the SBC has it and the commit after the batch was lost.
	h.sbc.next(t)
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
	}
	first.cl.Close() // no commit, no graceful drain
	select {
	case <-first.done: // Run fails: its client is gone
	case <-time.After(10 * time.Second):
		t.Fatal("the crashed instance did not stop")
	}
	first.cancel()
	dropping.Store(false)
	require.True(t, crashed.Load())
	require.Equal(t, 1, h.sbc.count(), "the first instance sent the REFER")

	second := h.launch(t, func(o *Options) { o.ShutdownTimeout = 100 * time.Millisecond })
	t.Cleanup(func() {
		second.cancel()
		require.NoError(t, <-second.done)
	})
	var o *batonv1.TransferOutcome
	for o = h.outcome(t, cmd.CommandId); o.GetStatus() != batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED; o = h.outcome(t, cmd.CommandId) {
		// The first instance may have published ACCEPTED before dying.
		require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED.String(), o.GetStatus().String())
	}
	require.Contains(t, o.GetDetail(), "already attempted")
	require.Contains(t, o.GetDetail(), t.Name(), "names the instance that attempted it")

	// The second instance works: a new command is executed.
	next := referCommand(h, "after-crash")
	h.command(t, next)
	requireOutcome(t, h.outcome(t, next.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
	require.Equal(t, 2, h.sbc.count(), "one REFER per command: the redelivered one sent nothing")
}

// TestReferSuccessEndsTheAgentLeg: after the final 2xx NOTIFY, transfer
// waits bye_after_refer for the far end's BYE and sends its own only when
// none came; its BYE's answer is an ENDED outcome (agent_leg_bye).
func TestReferSuccessEndsTheAgentLeg(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		farEnd   bool
		requests int
	}{
		{name: "far end hangs up first: no BYE", farEnd: true, requests: 1},
		{name: "far end silent: transfer sends BYE", requests: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wait := 300 * time.Millisecond
			if tc.farEnd {
				wait = 10 * time.Second // the far end's BYE ends the wait long before
			}
			h := start(t, 202, func(o *Options) { o.ByeAfterRefer = wait })
			cmd := referCommand(h, "bye-after")
			cmd.Dialog.NextLocalCseq = 7
			h.command(t, cmd)
			require.Equal(t, sip.REFER, h.sbc.next(t).req.Method)
			requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
			h.fact(t, cmd.CallId, &batonv1.NotifyReceived{Event: "refer", SipfragStatus: 200, SipfragReason: "OK"})
			if tc.farEnd {
				h.fact(t, cmd.CallId, &batonv1.CallEnded{CallId: cmd.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
			}
			requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)
			if !tc.farEnd {
				bye := h.sbc.next(t).req
				require.Equal(t, sip.BYE, bye.Method)
				require.Equal(t, uint32(8), bye.CSeq().SeqNo, "the REFER's CSeq + 1")
				require.Equal(t, cmd.Dialog.CallId, bye.CallID().Value())
				// The dialog's end is a fact: ingress ends the call on it.
				o := h.outcome(t, cmd.CommandId)
				requireOutcome(t, o, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED, 200)
				require.Equal(t, EndAgentLegBye, o.GetReason())
			}
			require.Eventually(t, func() bool { return h.in.svc.reg.inFlight() == 0 }, 5*time.Second, time.Millisecond,
				"the execution ends")
			require.Equal(t, tc.requests, h.sbc.count())
		})
	}
}
