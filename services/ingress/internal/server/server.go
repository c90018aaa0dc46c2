// Package server is ingress's SIP edge: it answers inbound INVITEs once
// Kafka holds their CallStarted, keeps a table of the calls it answered, and
// turns the in-dialog requests the far end sends (ACK, BYE, NOTIFY, CANCEL)
// into facts. The only request it sends itself is the BYE of a dead
// dialog: a 2xx never ACKed, or no media for rtp.media_timeout
// (docs/decisions/0009); every other request is transfer's.
//
// The Server keeps the listeners (listeners.go), the read filter and
// admission of new INVITEs (gate.go, handshake.go, invite.go), the call
// table (table.go) and publishing (publish.go, restart.go). Each call it
// admits is an inboundCall (call.go) that owns its dialog from the 200 OK
// to its end: the ACK wait, re-INVITEs (reinvite.go), the far end's
// in-dialog requests (indialog.go), its media session and media timeout
// (mediawatch.go, dtmf.go), and the one way it ends, with ingress's own
// BYE when ingress ends it (hangup.go).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/baton-voice/baton/pkg/connguard"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/ingress/internal/audio"
	"github.com/baton-voice/baton/services/ingress/internal/config"
	"github.com/baton-voice/baton/services/ingress/internal/rtp"
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
	tracer       trace.Tracer
	pub          *publisher // the calls topic
	ua           *sipgo.UserAgent
	sip          *sipgo.Server
	byes         *byeClient // sends the BYE of a dead dialog; see filter
	env          *callEnv   // what every call reaches of the server
	orphans      sync.Map   // Call-IDs EndOrphans ended, see restart.go
	udp          []*net.UDPConn
	streams      []stream
	contacts     map[string]string // by transport and address family, see contactFor
	localContact string            // the first listener's
	rtp          *rtp.Allocator
	clip         rtp.Clip               // played after the ACK: the greeting, silence or nothing
	agents       map[string]*agentRoute // by name: the calls' voice-AI agents
	trunks       *trunks.Table
	policy       sipcheck.Policy
	admit        *admission
	retryAfter   string
	stats        Stats
	conns        connguard.Stats // of the TCP and TLS listeners
	handshakes   *handshakes
	rejectLog    *observability.RateLog
	draining     atomic.Bool
	stopped      atomic.Bool   // the read filter drops everything
	active       atomic.Int64  // calls in the table, pending ones included
	drained      chan struct{} // gets a value when the last call ends while draining

	mu       sync.Mutex
	calls    map[string]*inboundCall // see table.go
	closing  bool
	inflight sync.WaitGroup
	// background holds what calls run beside their requests (the agent
	// stream's goroutine): shutdown waits for it after dropping the calls.
	background sync.WaitGroup
}

// stream is a TCP or TLS listener.
type stream struct {
	transport string // config.TCP or config.TLS
	ln        net.Listener
}

// Options are Listen's settings beyond the configuration.
type Options struct {
	// Tracer traces each INVITE; its span's traceparent rides in
	// CallStarted so router, transfer and analytics continue the trace.
	// Nil traces nothing.
	Tracer trace.Tracer
	// T1 is RFC 3261's T1 for the 2xx retransmission (and the 64*T1 after
	// which an unacknowledged call is ended); 0 is sip.T1.
	T1 time.Duration
}

// Listen binds the SIP sockets (so their addresses are known before Serve)
// and prepares the server. cl publishes to cfg.Kafka.Topics.Calls.
func Listen(cfg config.Config, cl *kgo.Client, logger *slog.Logger, o Options) (*Server, error) {
	s := &Server{cfg: cfg, log: logger, contacts: map[string]string{}, drained: make(chan struct{}, 1),
		tracer: noop.NewTracerProvider().Tracer("")}
	s.pub = &publisher{cl: cl, topic: cfg.Kafka.Topics.Calls, timeout: cfg.PublishTimeout, log: logger}
	s.byes = &byeClient{}
	s.retryAfter = retryAfterSeconds(cfg.Limits.RetryAfter)
	s.env = &callEnv{
		log: logger, remove: s.remove, facts: s.pub, byes: s.byes, foreignRTP: &s.stats.ForeignRTP, stats: &s.stats,
		background: &s.background,
		t1:         sip.T1, sdpHost: cfg.ContactHost(), viaHost: cfg.ExternalHost, retryAfter: s.retryAfter,
	}
	if o.Tracer != nil {
		s.tracer = o.Tracer
	}
	if o.T1 > 0 {
		s.env.t1 = o.T1
	}
	table, err := trunks.New(cfg.EffectiveTrunks())
	if err != nil {
		return nil, err
	}
	s.trunks = table
	s.rejectLog = observability.NewRateLog(10)
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
	var reuse []rtp.Option
	if cfg.RTP.Reuse {
		// At most max_calls idle sockets: as many as the calls the range
		// carries at once (Validate), so the pool never outgrows it.
		reuse = append(reuse, rtp.WithReuse(cfg.Limits.MaxCalls, cfg.RTP.Quarantine))
	}
	s.rtp = rtp.NewAllocator(cfg.RTPHost(), cfg.RTP.PortMin, cfg.RTP.PortMax, reuse...)
	s.clip = clip
	if s.agents, err = agentRoutes(cfg); err != nil {
		return nil, errors.Join(fmt.Errorf("agents: %w", err), s.closeListeners())
	}
	s.policy = sipcheck.DefaultPolicy()
	s.calls = map[string]*inboundCall{}
	s.admit = newAdmission(cfg.Limits.MaxCalls, cfg.Limits.MaxCPS, &s.active)
	// sipgo logs unparsable packets at ERROR with the packet attached:
	// its logger drops the packet and is rate-limited.
	sipLog := slog.New(observability.QuietSIP(logger.Handler(), observability.NewRateLog(10))).With("component", "sip")
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
	s.ua, s.sip, s.byes.client = ua, srv, client
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
	m["rtp_idle_dropped"] = s.rtp.DroppedIdle()
	m["rtp_sockets_idle"] = uint64(s.rtp.Idle())
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
				reply(s.log, req, tx, sip.StatusServiceUnavailable, "Service Unavailable", sip.NewHeader("Retry-After", s.retryAfter))
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
	// An ACK that matches no dialog is dropped.
	s.sip.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		if !s.checkStream(req, tx) {
			return
		}
		if c := s.lookup(req); c != nil {
			c.onAck(req)
		}
	})
	s.sip.OnBye(handle(s.inDialog((*inboundCall).onBye)))
	s.sip.OnCancel(handle(s.onCancel))
	s.sip.OnNotify(handle(s.inDialog((*inboundCall).onNotify)))
	s.sip.OnOptions(handle(s.onOptions))
	s.sip.OnInfo(handle(s.inDialog((*inboundCall).onInfo)))
	s.sip.OnRefer(handle(s.onRefer))
	s.sip.OnNoRoute(handle(s.onOther))

	var watchers sync.WaitGroup
	defer func() {
		stopRun()
		watchers.Wait()
	}()
	if s.cfg.RTP.MediaTimeout > 0 {
		watchers.Go(func() { s.watchMedia(runCtx, s.cfg.RTP.MediaTimeout) })
	}
	// Always: transfer's BYE ends calls through it, media timeout or not.
	watchers.Go(func() { s.follow(runCtx) })
	// Outbound calls agents ask for (outbound.go); none without trunks.
	watchers.Go(func() { s.runOutbound(runCtx) })

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
	s.shutdown(ctx)
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

func (s *Server) shutdown(ctx context.Context) {
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
	s.calls = map[string]*inboundCall{}
	s.active.Store(0)
	s.mu.Unlock()
	for _, c := range calls {
		c.drop(ctx)
	}
	// The dropped calls gave their sockets back: release every port.
	if err := s.rtp.Close(); err != nil {
		s.log.Warn("close rtp sockets", "err", err)
	}
	// Dropped calls end their agent streams; nothing of theirs may
	// publish once Serve has returned.
	s.background.Wait()
}

// inDialog routes a request to the call whose dialog it belongs to, and
// answers 481 when there is none (RFC 3261 12.2.2).
func (s *Server) inDialog(h func(*inboundCall, context.Context, *sip.Request, sip.ServerTransaction)) func(context.Context, *sip.Request, sip.ServerTransaction) {
	return func(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
		c := s.lookup(req)
		if c == nil {
			reply(s.log, req, tx, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
			return
		}
		h(c, ctx, req, tx)
	}
}

// onCancel sees only CANCELs that match no pending INVITE: sipgo answers
// the others itself (200, then 487 on the INVITE) and calls OnCancel.
func (s *Server) onCancel(_ context.Context, req *sip.Request, tx sip.ServerTransaction) {
	reply(s.log, req, tx, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
}

func (s *Server) onOptions(_ context.Context, req *sip.Request, tx sip.ServerTransaction) {
	reply(s.log, req, tx, sip.StatusOK, "OK", sip.NewHeader("Allow", allow), sip.NewHeader("Accept", "application/sdp"))
}

// onOther answers methods ingress does not serve: 405 for the ones SIP
// defines (RFC 3261 8.2.1), 501 for unknown ones; both carry Allow.
func (s *Server) onOther(_ context.Context, req *sip.Request, tx sip.ServerTransaction) {
	code, reason := sipx.Refusal(string(req.Method))
	reply(s.log, req, tx, code, reason, sip.NewHeader("Allow", allow))
}

// reply answers req with code, reason and extra headers.
func reply(log *slog.Logger, req *sip.Request, tx sip.ServerTransaction, code int, reason string, extra ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range extra {
		res.AppendHeader(h)
	}
	if err := tx.Respond(res); err != nil {
		callID := ""
		if h := req.CallID(); h != nil {
			callID = h.Value()
		}
		log.Warn("send response", "call_id", callID, "status", code, "err", err)
	}
}
