// Package server is ingress's SIP edge: it answers inbound INVITEs once
// Kafka holds their CallStarted, keeps a table of the calls it answered, and
// turns the in-dialog requests the far end sends (ACK, BYE, NOTIFY, CANCEL)
// into facts. The only request it sends itself is the BYE of a dead
// dialog: a 2xx never ACKed, or no media for rtp.media_timeout
// (docs/decisions/0009); every other request is transfer's.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/baton-voice/baton/pkg/connguard"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/ingress/internal/audio"
	"github.com/baton-voice/baton/services/ingress/internal/config"
	"github.com/baton-voice/baton/services/ingress/internal/headers"
	"github.com/baton-voice/baton/services/ingress/internal/rtp"
	"github.com/baton-voice/baton/services/ingress/internal/sdp"
	"github.com/baton-voice/baton/services/ingress/internal/sipcheck"
	"github.com/baton-voice/baton/services/ingress/internal/trunks"
)

// Source is the CloudEvents source of ingress's events.
const Source = "baton/ingress"

// allow lists the methods ingress answers.
const allow = "INVITE, ACK, BYE, CANCEL, NOTIFY, OPTIONS, INFO"

// Server is the SIP edge. Build it with Listen, run it with Serve.
type Server struct {
	cfg          config.Config
	log          *slog.Logger
	pub          *publisher // the calls topic
	tracer       trace.Tracer
	ua           *sipgo.UserAgent
	sip          *sipgo.Server
	client       *sipgo.Client // sends the BYE of a dead dialog
	byes         sync.Map      // Via branches of the BYEs in flight, see filter
	orphans      sync.Map      // Call-IDs EndOrphans ended, see restart.go
	t1           time.Duration // RFC 3261 T1 of the 2xx retransmission; sip.T1
	udp          []*net.UDPConn
	streams      []stream
	contacts     map[string]string // by transport and address family, see contactFor
	localContact string            // the first listener's
	rtp          *rtp.Allocator
	clip         rtp.Clip // played after the ACK: the greeting, silence or nothing
	trunks       *trunks.Table
	policy       sipcheck.Policy
	admit        *admission
	retryAfter   string
	stats        Stats
	conns        connguard.Stats // of the TCP and TLS listeners
	handshakes   *handshakes
	rejectLog    *rateLog
	draining     atomic.Bool
	stopped      atomic.Bool   // the read filter drops everything
	active       atomic.Int64  // calls in the table, pending ones included
	drained      chan struct{} // gets a value when the last call ends while draining

	mu       sync.Mutex
	calls    map[string]*call
	closing  bool
	inflight sync.WaitGroup
}

// stream is a TCP or TLS listener.
type stream struct {
	transport string // config.TCP or config.TLS
	ln        net.Listener
}

// Option changes how Listen builds the server.
type Option func(*Server)

// WithTracer traces each INVITE; its span's traceparent rides in
// CallStarted so router, transfer and analytics continue the trace. The
// default traces nothing.
func WithTracer(t trace.Tracer) Option {
	return func(s *Server) { s.tracer = t }
}

// Listen binds the SIP sockets (so their addresses are known before Serve)
// and prepares the server. cl publishes to cfg.Kafka.Topics.Calls.
func Listen(cfg config.Config, cl *kgo.Client, logger *slog.Logger, opts ...Option) (*Server, error) {
	s := &Server{cfg: cfg, log: logger, contacts: map[string]string{}, drained: make(chan struct{}, 1),
		tracer: noop.NewTracerProvider().Tracer(""), t1: sip.T1}
	s.pub = &publisher{cl: cl, topic: cfg.Kafka.Topics.Calls, timeout: cfg.PublishTimeout, log: logger}
	for _, o := range opts {
		o(s)
	}
	table, err := trunks.New(cfg.EffectiveTrunks())
	if err != nil {
		return nil, err
	}
	s.trunks = table
	s.rejectLog = &rateLog{perSecond: 10}
	s.handshakes = newHandshakes(cfg.Limits.MaxUnackedPerSource, cfg.Limits.MaxUnackedUnverified)
	if err := s.bind(); err != nil {
		return nil, errors.Join(err, s.closeListeners())
	}
	clip := rtp.Silence(cfg.Media.Silence)
	if cfg.Media.Greeting != "" {
		if clip, err = audio.Load(cfg.Media.Greeting); err != nil {
			return nil, errors.Join(err, s.closeListeners())
		}
	}
	s.rtp = rtp.NewAllocator(cfg.RTPHost(), cfg.RTP.PortMin, cfg.RTP.PortMax)
	s.clip = clip
	s.policy = sipcheck.DefaultPolicy()
	s.retryAfter = retryAfterSeconds(cfg.Limits.RetryAfter)
	s.calls = map[string]*call{}
	s.admit = newAdmission(cfg.Limits.MaxCalls, cfg.Limits.MaxCPS, &s.active)
	// sipgo logs unparsable packets at ERROR with the packet attached:
	// its logger drops the packet and is rate-limited.
	sipLog := slog.New(quietHandler{next: logger.Handler(), lim: &rateLog{perSecond: 10}}).With("component", "sip")
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent("baton-ingress"),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(sipLog)),
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerLogger(sipLog),
			sip.WithTransportLayerReadFilter(s.filter),
		),
	)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("sip user agent: %w", err), s.closeListeners())
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(sipLog))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("sip server: %w", err), ua.Close(), s.closeListeners())
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientLogger(sipLog))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("sip client: %w", err), ua.Close(), s.closeListeners())
	}
	s.ua, s.sip, s.client = ua, srv, client
	return s, nil
}

// Stats returns the server's counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Counters is Stats.Snapshot with the stream listeners' connection
// counters added (connections_*).
func (s *Server) Counters() map[string]uint64 {
	m := s.stats.Snapshot()
	m["connections_refused_acl"] = s.conns.RefusedACL.Load()
	m["connections_refused_full"] = s.conns.RefusedFull.Load()
	m["connections_refused_source"] = s.conns.RefusedSource.Load()
	m["connections_timed_out"] = s.conns.TimedOut.Load()
	m["connections_open"] = uint64(max(s.conns.Open.Load(), 0))
	return m
}

// Addr is the first bound UDP address (the real port when the config
// asked for 0); nil when there is no UDP listener.
func (s *Server) Addr() *net.UDPAddr {
	if len(s.udp) == 0 {
		return nil
	}
	return s.udp[0].LocalAddr().(*net.UDPAddr)
}

// Addrs are the bound addresses of every listener, in config order of
// transport: UDP ones first, then TCP and TLS.
func (s *Server) Addrs() []net.Addr {
	var out []net.Addr
	for _, c := range s.udp {
		out = append(out, c.LocalAddr())
	}
	for _, st := range s.streams {
		out = append(out, st.ln.Addr())
	}
	return out
}

// LocalContact is the Contact ingress gives in its answers.
func (s *Server) LocalContact() string { return s.localContact }

// Serve answers SIP until ctx ends, then shuts down: new requests get 503,
// requests in flight finish (their publishes are bounded by
// publish_timeout), the listener closes and every RTP socket is released.
// Flushing and closing the Kafka client is the caller's job.
func (s *Server) Serve(ctx context.Context) error {
	// Handlers outlive ctx by the drain: live dialogs are served until
	// they end or drain_timeout passes.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	handle := func(h func(context.Context, *sip.Request, sip.ServerTransaction)) sipgo.RequestHandler {
		return func(req *sip.Request, tx sip.ServerTransaction) {
			if !s.enter() {
				s.reply(req, tx, sip.StatusServiceUnavailable, "Service Unavailable", sip.NewHeader("Retry-After", s.retryAfter))
				return
			}
			defer s.inflight.Done()
			if !s.checkStream(req, tx) {
				return
			}
			h(runCtx, req, tx)
		}
	}
	s.sip.OnInvite(handle(s.onInvite))
	// ACK gets no answer, so it is not refused at shutdown.
	s.sip.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		if s.checkStream(req, tx) {
			s.onAck(req, tx)
		}
	})
	s.sip.OnBye(handle(s.onBye))
	s.sip.OnCancel(handle(s.onCancel))
	s.sip.OnNotify(handle(s.onNotify))
	s.sip.OnOptions(handle(s.onOptions))
	s.sip.OnInfo(handle(s.onInfo))
	s.sip.OnNoRoute(handle(s.onOther))

	if s.cfg.RTP.MediaTimeout > 0 {
		var watchers sync.WaitGroup
		defer func() {
			stopRun()
			watchers.Wait()
		}()
		watchers.Go(func() { s.watchMedia(runCtx, s.cfg.RTP.MediaTimeout) })
		watchers.Go(func() { s.followTransfers(runCtx) })
	}

	n := len(s.udp) + len(s.streams)
	served := make(chan error, n)
	for _, c := range s.udp {
		s.log.InfoContext(ctx, "sip listening", "transport", "udp", "addr", c.LocalAddr().String())
		go func() { served <- s.sip.ServeUDP(c) }()
	}
	for _, st := range s.streams {
		s.log.InfoContext(ctx, "sip listening", "transport", st.transport, "addr", st.ln.Addr().String())
		if st.transport == config.TLS {
			go func() { served <- s.sip.ServeTLS(st.ln) }()
		} else {
			go func() { served <- s.sip.ServeTCP(st.ln) }()
		}
	}

	var serveErr error
	select {
	case <-ctx.Done():
		s.drain(runCtx)
	case err := <-served:
		n--
		serveErr = fmt.Errorf("serve sip: %w", err)
	}
	stopRun()
	s.shutdown()
	s.log.Info("sip counters", "counters", s.Counters())
	for range n {
		if err := <-served; err != nil && !errors.Is(err, net.ErrClosed) && serveErr == nil {
			serveErr = fmt.Errorf("serve sip: %w", err)
		}
	}
	return serveErr
}

// drain refuses new INVITEs (503, counted as draining) and serves the
// calls up until none is left or drain_timeout passes.
func (s *Server) drain(ctx context.Context) {
	s.draining.Store(true)
	calls := s.active.Load()
	if calls == 0 {
		return
	}
	s.log.InfoContext(ctx, "draining", "calls", calls, "drain_timeout", s.cfg.DrainTimeout.String())
	deadline := time.NewTimer(s.cfg.DrainTimeout)
	defer deadline.Stop()
	for s.active.Load() > 0 {
		select {
		case <-s.drained:
		case <-deadline.C:
			s.log.WarnContext(ctx, "drain timeout; dropping calls", "calls", s.active.Load())
			return
		}
	}
	s.log.InfoContext(ctx, "drained")
}

func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.inflight.Add(1)
	return true
}

func (s *Server) shutdown() {
	s.draining.Store(true)
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.inflight.Wait()

	// From here the read filter drops everything, so sipgo starts no
	// transaction whose answer would look for a closed socket (sipgo then
	// opens a new one nobody closes). The user agent closes first, the
	// listeners it does not own after it.
	s.stopped.Store(true)
	if err := s.ua.Close(); err != nil {
		s.log.Warn("close sip user agent", "err", err)
	}
	if err := s.closeListeners(); err != nil {
		s.log.Warn("close sip listener", "err", err)
	}
	s.mu.Lock()
	calls := s.calls
	s.calls = map[string]*call{}
	s.active.Store(0)
	s.mu.Unlock()
	for _, c := range calls {
		c.end()
		st, err := c.media.Close()
		if err != nil {
			s.log.Warn("close rtp", "call_id", c.id, "err", err)
		}
		s.log.Info("call dropped at shutdown", "call_id", c.id, "rtp_packets", st.Packets)
	}
}

// callState is where an answered call stands.
type callState int

const (
	statePending   callState = iota // CallStarted being published
	stateAnswered                   // 200 OK sent, waiting for ACK
	stateConfirmed                  // ACK received
)

type call struct {
	id        string
	localTag  string
	remoteTag string
	start     time.Time
	media     *rtp.Session
	trunk     *trunks.Trunk
	// dialog is the dialog as CallStarted told it, transport and udp
	// where the INVITE came: what ingress's own BYE needs.
	dialog    *batonv1.Dialog
	transport string
	udp       *net.UDPConn

	mu           sync.Mutex
	state        callState
	cancelled    bool
	cancelReason string
	acked        chan struct{}
	ended        chan struct{}
	// The media session's offer/answer state: the o= line ingress
	// numbers (RFC 3264 8), the SDP it last sent, the codec in force.
	sdpSession uint64
	sdpVersion uint64
	localSDP   []byte
	codec      string
	// remoteCSeq is the CSeq of the last INVITE the far end sent in the
	// dialog; a re-INVITE must be above it (RFC 3261 12.2.2).
	remoteCSeq uint32
	// reinvite is the re-INVITE answered 200 and waiting for its ACK.
	reinvite *reinvite
	// remoteSends is whether the last offer/answer lets the caller send
	// RTP (its direction sendrecv or sendonly); mediaSince is when that
	// answer took effect. The media timeout counts from the later of it
	// and the last packet, and only while remoteSends.
	remoteSends bool
	mediaSince  time.Time
	hangingUp   bool // the media watch picked it
	mediaMoved  bool // transfer bridged the caller's media elsewhere
}

// reinvite is a re-INVITE whose 200 OK waits for the ACK; the ACK carries
// the answer when ingress made the offer.
type reinvite struct {
	cseq uint32
	acks chan *sip.Request
	done chan struct{} // closed when the re-INVITE is through
}

// awaitReinvite lets a BYE that follows an ACK wait, briefly, for the
// re-INVITE the ACK completes, so its CallUpdated is published before the
// CallEnded (sipgo runs each request on its own goroutine, and an ACK gets
// no answer the far end could wait for).
func awaitReinvite(c *call) {
	c.mu.Lock()
	ri := c.reinvite
	c.mu.Unlock()
	if ri == nil {
		return
	}
	t := time.NewTimer(sip.T1)
	defer t.Stop()
	select {
	case <-ri.done:
	case <-t.C:
	}
}

func (c *call) ack() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateConfirmed {
		c.state = stateConfirmed
		close(c.acked)
	}
}

func (c *call) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.ended:
	default:
		close(c.ended)
	}
}

func (c *call) setState(st callState) {
	c.mu.Lock()
	c.state = st
	c.mu.Unlock()
}

// wasCancelled reports whether the INVITE was cancelled (sipgo then
// answered 487) and the CANCEL's Reason.
func (c *call) wasCancelled() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cancelled, c.cancelReason
}

// Reasons add refuses a call.
var (
	errCallExists     = errors.New("a call with this Call-ID exists")
	errOverCalls      = errors.New("max_calls reached")
	errOverTrunkCalls = errors.New("trunk max_calls reached")
)

// add registers c unless a call with its Call-ID exists, max_calls calls
// are up, or its trunk's max_calls are.
func (s *Server) add(c *call) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.calls[c.id]; ok {
		return errCallExists
	}
	if len(s.calls) >= s.cfg.Limits.MaxCalls {
		return errOverCalls
	}
	if !s.admit.enter(c.trunk) {
		return errOverTrunkCalls
	}
	s.calls[c.id] = c
	s.active.Add(1)
	return nil
}

// remove drops c; only the first caller gets true, so a call ends once.
func (s *Server) remove(c *call) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls[c.id] != c {
		return false
	}
	delete(s.calls, c.id)
	s.admit.leave(c.trunk)
	if s.active.Add(-1) == 0 && s.draining.Load() {
		select {
		case s.drained <- struct{}{}:
		default:
		}
	}
	return true
}

// lookup finds the call whose dialog req belongs to (Call-ID, our tag in
// To, theirs in From).
func (s *Server) lookup(req *sip.Request) *call {
	callID, from, to := req.CallID(), req.From(), req.To()
	if callID == nil || from == nil || to == nil {
		return nil
	}
	s.mu.Lock()
	c := s.calls[callID.Value()]
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	toTag, _ := to.Params.Get("tag")
	fromTag, _ := from.Params.Get("tag")
	if toTag != c.localTag || fromTag != c.remoteTag {
		return nil
	}
	return c
}

func (s *Server) onInvite(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
	callID := ""
	if h := req.CallID(); h != nil {
		callID = h.Value()
	}
	log := s.log.With("call_id", callID)
	ctx, span := s.tracer.Start(ctx, "ingress invite", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("call_id", callID)))
	defer span.End()
	if to := req.To(); to != nil && to.Params.Has("tag") {
		c := s.lookup(req)
		if c == nil {
			s.reply(req, tx, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
			return
		}
		s.onReInvite(ctx, c, req, tx)
		return
	}
	if s.refuseOrphan(callID, func() { s.reply(req, tx, sip.StatusInternalServerError, "Server Internal Error") }) {
		return
	}
	src := sourceAddr(req)
	handshakeDone, refused := s.handshakes.begin(src, req.Transport() != "UDP", time.Now())
	if refused != notRefused {
		s.stats.UnackedSource.Add(1)
		s.rejectLog.log(s.log, "invite refused: too many calls from this source without an ack", "source", src.String(),
			"verified", refused == overUnackedVerified, "call_id", callID)
		s.reply(req, tx, sip.StatusServiceUnavailable, "Service Unavailable", sip.NewHeader("Retry-After", s.retryAfter))
		return
	}
	defer handshakeDone()
	// The CANCEL callback goes in before the 100: a CANCEL may follow the
	// first provisional answer at once (RFC 3261 9.1), and sipgo answers
	// it 487 whether or not anyone listens.
	c := &call{id: callID, acked: make(chan struct{}), ended: make(chan struct{})}
	tx.OnCancel(func(cancel *sip.Request) {
		c.mu.Lock()
		c.cancelled = true
		c.cancelReason = headers.Value(cancel.Headers(), "Reason")
		c.mu.Unlock()
	})
	s.reply(req, tx, sip.StatusTrying, "Trying")

	if ct := req.ContentType(); len(req.Body()) == 0 || ct == nil || !strings.EqualFold(mediaType(ct.Value()), "application/sdp") {
		log.InfoContext(ctx, "invite without sdp offer")
		s.reply(req, tx, sip.StatusNotAcceptableHere, "Not Acceptable Here")
		return
	}
	media, err := s.rtp.Open(s.onRTPDigit(ctx, callID), s.mediaSources(req))
	if err != nil {
		log.ErrorContext(ctx, "allocate rtp port", "err", err)
		s.reply(req, tx, sip.StatusServiceUnavailable, "Service Unavailable", sip.NewHeader("Retry-After", s.retryAfter))
		return
	}
	closeMedia := func() {
		if _, err := media.Close(); err != nil {
			log.WarnContext(ctx, "close rtp", "err", err)
		}
	}
	start := time.Now()
	sessionID := uint64(start.Unix())
	answer, err := sdp.Negotiate(req.Body(), sdp.Params{Host: s.cfg.ContactHost(), Port: media.Port(), SessionID: sessionID})
	if err != nil {
		closeMedia()
		log.InfoContext(ctx, "offer refused", "err", err)
		s.reply(req, tx, sip.StatusNotAcceptableHere, "Not Acceptable Here")
		return
	}
	localTag := sip.GenerateTagN(16)
	trunk := s.trunkOf(req)
	if trunk == nil {
		// The filter let it through, so the ACL changed or the source
		// is not what it was; never answer an unknown source.
		closeMedia()
		s.stats.ACLDropped.Add(1)
		return
	}
	facts, err := readInvite(req, dialogParams{localTag: localTag, localContact: s.contactFor(req), trunk: trunk, localSDP: answer.SDP})
	if err != nil {
		closeMedia()
		log.InfoContext(ctx, "invite refused", "err", err)
		s.reply(req, tx, sip.StatusBadRequest, "Bad Request")
		return
	}
	if hop, transport, signalled := nextHop(facts.started.Dialog, s.trunks, trunk); hop != "" {
		facts.started.Dialog.NextHop, facts.started.Dialog.NextHopTransport = hop, transport
		if !signalled {
			s.stats.NextHopToSource.Add(1)
			s.rejectLog.log(s.log, "the caller's contact or record-route names a destination outside its trunk; in-dialog requests go to the invite's source",
				"call_id", callID, "source", req.Source())
		}
	}
	for _, sk := range facts.skipped {
		log.WarnContext(ctx, "custom header not made a variable", "header", sk.Name, "err", sk.Err)
	}
	if n := len(facts.callerRefused) + len(facts.calleeRefused); n > 0 {
		// The value is not logged: it is what must not reach a terminal.
		s.stats.RefusedNumbers.Add(uint64(n))
		log.WarnContext(ctx, "number refused: control characters or not UTF-8 after decoding",
			"caller_sources", facts.callerRefused, "callee_sources", facts.calleeRefused)
	}

	c.mu.Lock()
	c.localTag, c.remoteTag, c.start, c.media = localTag, facts.started.Dialog.RemoteTag, start, media
	c.sdpSession, c.sdpVersion, c.localSDP, c.codec = sessionID, sessionID, answer.SDP, answer.Codec.Name
	c.trunk, c.dialog, c.transport, c.udp = trunk, facts.started.Dialog, req.Transport(), s.udpFor(req)
	c.remoteSends, c.mediaSince = remoteSends(answer), start
	c.mu.Unlock()
	if cseq := req.CSeq(); cseq != nil {
		c.remoteCSeq = cseq.SeqNo
	}
	media.SetMedia(mediaOf(answer))
	if err := s.add(c); errors.Is(err, errOverCalls) || errors.Is(err, errOverTrunkCalls) {
		closeMedia()
		if errors.Is(err, errOverCalls) {
			s.stats.OverloadCalls.Add(1)
		} else {
			s.stats.TrunkOverloadCalls.Add(1)
		}
		log.WarnContext(ctx, "call refused", "err", err)
		s.reply(req, tx, sip.StatusServiceUnavailable, "Service Unavailable", sip.NewHeader("Retry-After", s.retryAfter))
		return
	} else if err != nil {
		// Same Call-ID, no To tag, another transaction: a merged request
		// (RFC 3261 8.2.2.2), never a second call.
		closeMedia()
		log.WarnContext(ctx, "invite for a call that exists")
		s.reply(req, tx, sip.StatusLoopDetected, "Loop Detected")
		return
	}
	if err := s.pub.publish(ctx, callID, facts.started); err != nil {
		s.remove(c)
		closeMedia()
		log.ErrorContext(ctx, "call refused: publish call started", "err", err)
		s.reply(req, tx, sip.StatusServiceUnavailable, "Service Unavailable", sip.NewHeader("Retry-After", s.retryAfter))
		return
	}
	if cancelled, reason := c.wasCancelled(); cancelled {
		s.endCall(ctx, c, sip.CANCEL, reason)
		return
	}

	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", answer.SDP)
	res.To().Params.Add("tag", localTag)
	res.AppendHeader(sip.NewHeader("Contact", s.contactFor(req)))
	res.AppendHeader(sip.NewHeader("Allow", allow))
	ct := sip.ContentTypeHeader("application/sdp")
	res.AppendHeader(&ct)
	c.setState(stateAnswered)
	if err := tx.Respond(res); err != nil {
		log.WarnContext(ctx, "send 200 ok", "err", err)
	}
	// A CANCEL that crossed the 200 was answered 487 before it, so the
	// flag is set exactly when the caller saw the call cancelled.
	if cancelled, reason := c.wasCancelled(); cancelled {
		s.endCall(ctx, c, sip.CANCEL, reason)
		return
	}
	log.InfoContext(ctx, "call answered", "codec", answer.Codec.Name, "rtp_port", media.Port(), "remote_rtp", answer.RemoteAddr)
	acked := s.awaitAck(ctx, c, tx, res)
	handshakeDone()
	if acked {
		s.handshakes.acked(src, time.Now())
		if s.clip.Frames() > 0 {
			media.Play(s.clip)
		}
	}
}

// sourceAddr is the address req came from (zero when unknown).
func sourceAddr(req *sip.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// awaitAck retransmits the 200 OK until the ACK arrives (RFC 3261 13.3.1.4;
// sipgo's transaction leaves 2xx retransmission to the UAS core). It
// reports whether the ACK came.
func (s *Server) awaitAck(ctx context.Context, c *call, tx sip.ServerTransaction, res *sip.Response) bool {
	interval := s.t1
	retransmit := time.NewTimer(interval)
	defer retransmit.Stop()
	giveUp := time.NewTimer(64 * s.t1)
	defer giveUp.Stop()
	for {
		select {
		case <-c.acked:
			return true
		case <-tx.Acks(): // an ACK sent in the INVITE's transaction
			c.ack()
			return true
		case <-c.ended:
			return false
		case <-ctx.Done():
			return false
		case <-giveUp.C:
			// RFC 3261 13.3.1.4: the session is over; BYE ends it for
			// the far end too (docs/decisions/0009).
			s.log.WarnContext(ctx, "no ack for 200 ok; ending the call", "call_id", c.id)
			s.hangUp(ctx, c, reasonAckTimeout)
			return false
		case <-retransmit.C:
			if err := tx.Respond(res); err != nil {
				s.log.WarnContext(ctx, "retransmit 200 ok", "call_id", c.id, "err", err)
			}
			interval = min(2*interval, sip.T2)
			retransmit.Reset(interval)
		}
	}
}

// endCall removes c, releases its media and publishes CallEnded: the far
// end ended the call with method.
func (s *Server) endCall(ctx context.Context, c *call, method sip.RequestMethod, reason string) {
	if !s.remove(c) {
		return
	}
	s.ended(ctx, c, batonv1.Party_PARTY_REMOTE, method, reason)
}

// ended releases the media of c, which remove took out of the table, and
// publishes its CallEnded.
func (s *Server) ended(ctx context.Context, c *call, by batonv1.Party, method sip.RequestMethod, reason string) {
	c.end()
	st, err := c.media.Close()
	if err != nil {
		s.log.WarnContext(ctx, "close rtp", "call_id", c.id, "err", err)
	}
	d := time.Since(c.start)
	s.log.InfoContext(ctx, "call ended", "call_id", c.id, "ended_by", by.String(), "method", string(method), "reason", reason,
		"duration", d.String(), "rtp_packets", st.Packets, "rtp_bytes", st.Bytes, "rtp_lost", st.Lost, "jitter_ms", st.JitterMS,
		"rtp_foreign", st.Foreign)
	s.stats.ForeignRTP.Add(st.Foreign)
	c.mu.Lock()
	codec := c.codec
	c.mu.Unlock()
	ended := &batonv1.CallEnded{
		CallId:   c.id,
		EndedBy:  by,
		Method:   string(method),
		Reason:   reason,
		Duration: durationpb.New(d),
		Media: &batonv1.MediaStats{
			Packets: st.Packets, Bytes: st.Bytes, Lost: st.Lost, JitterMs: st.JitterMS, Codec: codec,
		},
	}
	s.pub.publishEnded(ctx, c.id, ended) // retried until Kafka takes it
}

func (s *Server) onAck(req *sip.Request, _ sip.ServerTransaction) {
	c := s.lookup(req)
	if c == nil {
		return
	}
	c.mu.Lock()
	ri := c.reinvite
	c.mu.Unlock()
	if ri != nil && req.CSeq() != nil && req.CSeq().SeqNo == ri.cseq {
		select {
		case ri.acks <- req:
		default: // a retransmitted ACK; the first is being handled
		}
		return
	}
	c.ack()
}

func (s *Server) onBye(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
	c := s.lookup(req)
	if c == nil {
		s.reply(req, tx, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
		return
	}
	// The far end considers the call over whatever we answer, so BYE is
	// answered 200 even when the CallEnded publish fails (it is logged).
	awaitReinvite(c)
	s.endCall(ctx, c, sip.BYE, headers.Value(req.Headers(), "Reason"))
	s.reply(req, tx, sip.StatusOK, "OK")
}

// onCancel sees only CANCELs that match no pending INVITE: sipgo answers
// the others itself (200, then 487 on the INVITE) and calls OnCancel.
func (s *Server) onCancel(_ context.Context, req *sip.Request, tx sip.ServerTransaction) {
	s.reply(req, tx, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
}

func (s *Server) onNotify(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
	c := s.lookup(req)
	if c == nil {
		s.reply(req, tx, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
		return
	}
	hs := req.Headers()
	n := &batonv1.NotifyReceived{
		CallId:            c.id,
		Event:             headers.Value(hs, "Event"),
		SubscriptionState: headers.Value(hs, "Subscription-State"),
	}
	if cseq := req.CSeq(); cseq != nil {
		n.Cseq = cseq.SeqNo
	}
	if ct := req.ContentType(); ct != nil && strings.EqualFold(mediaType(ct.Value()), "message/sipfrag") {
		if frag, err := sipx.ParseSipfrag(req.Body()); err == nil {
			n.SipfragStatus = int32(frag.Status)
			n.SipfragReason = frag.Reason
		} else {
			s.log.WarnContext(ctx, "notify body", "call_id", c.id, "err", err)
		}
	}
	if err := s.pub.publish(ctx, c.id, n); err != nil {
		s.log.ErrorContext(ctx, "publish notify", "call_id", c.id, "err", err)
		s.reply(req, tx, sip.StatusServiceUnavailable, "Service Unavailable", sip.NewHeader("Retry-After", s.retryAfter))
		return
	}
	s.reply(req, tx, sip.StatusOK, "OK")
}

func (s *Server) onOptions(_ context.Context, req *sip.Request, tx sip.ServerTransaction) {
	s.reply(req, tx, sip.StatusOK, "OK", sip.NewHeader("Allow", allow), sip.NewHeader("Accept", "application/sdp"))
}

// onInfo accepts INFO in a known dialog: a DTMF relay body becomes a
// DtmfReceived fact; an empty INFO (a keepalive) is just answered.
func (s *Server) onInfo(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
	c := s.lookup(req)
	if c == nil {
		s.reply(req, tx, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
		return
	}
	if len(req.Body()) == 0 {
		s.reply(req, tx, sip.StatusOK, "OK")
		return
	}
	ct := ""
	if h := req.ContentType(); h != nil {
		ct = mediaType(h.Value())
	}
	d, err := parseInfoDTMF(ct, req.Body())
	if err != nil {
		s.log.InfoContext(ctx, "info refused", "call_id", c.id, "err", err)
		s.reply(req, tx, sip.StatusBadRequest, "Bad Request")
		return
	}
	// Queued before the answer, so it precedes what the far end does next.
	s.pub.publishAsync(ctx, c.id, &batonv1.DtmfReceived{CallId: c.id, Digit: d.Digit, DurationMs: d.DurationMS, Source: "info"})
	s.reply(req, tx, sip.StatusOK, "OK")
}

// onOther answers methods ingress does not serve: 405 for the ones SIP
// defines (RFC 3261 8.2.1), 501 for unknown ones; both carry Allow.
func (s *Server) onOther(_ context.Context, req *sip.Request, tx sip.ServerTransaction) {
	code, reason := sipx.Refusal(string(req.Method))
	s.reply(req, tx, code, reason, sip.NewHeader("Allow", allow))
}

// trunkOf returns the trunk of req's source address, nil when none.
// mediaSources says which addresses, besides the SDP's, may send a call's
// RTP: those of the INVITE's trunk (an SBC whose media leaves from another
// address of its range). Anyone else's packets are dropped and counted.
func (s *Server) mediaSources(req *sip.Request) func(netip.Addr) bool {
	t := s.trunkOf(req)
	return func(a netip.Addr) bool { return t != nil && s.trunks.Lookup(a) == t }
}

func (s *Server) trunkOf(req *sip.Request) *trunks.Trunk {
	src := sourceAddr(req)
	if !src.IsValid() {
		return nil
	}
	return s.trunks.Lookup(src)
}

func (s *Server) reply(req *sip.Request, tx sip.ServerTransaction, code int, reason string, extra ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range extra {
		res.AppendHeader(h)
	}
	if err := tx.Respond(res); err != nil {
		callID := ""
		if h := req.CallID(); h != nil {
			callID = h.Value()
		}
		s.log.Warn("send response", "call_id", callID, "status", code, "err", err)
	}
}

// mediaType is the type/subtype of a Content-Type value, without parameters.
func mediaType(v string) string {
	t, _, _ := strings.Cut(v, ";")
	return strings.TrimSpace(t)
}
