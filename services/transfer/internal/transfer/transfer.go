// Package transfer executes handoff commands: it consumes HandoffCommand
// from the handoffs topic and the call facts transfer depends on
// (NotifyReceived, CallEnded) from the calls topic in one group consumer,
// sends the in-dialog SIP request the command asks for, and publishes
// every step as a TransferOutcome on the transfers topic.
//
// Transfer is the only Baton process that sends SIP requests; the far
// end's NOTIFY and BYE reach ingress, which publishes them as facts, so a
// REFER's progress arrives here through Kafka, through the same consumer
// that delivered the command. The consume handler therefore never waits on
// a transfer: each command runs in its own goroutine, and facts are routed
// to it by call id through a small registry.
package transfer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/services/transfer/internal/attempts"
	"github.com/baton-voice/baton/services/transfer/internal/request"
)

// Source is the ce_source of transfer's records.
const Source = "baton/transfer"

// retryPause is ConsumeLoop's pause before a failed batch is retried.
const retryPause = 500 * time.Millisecond

// Sender sends one request in a client transaction and returns its final
// response; uac.Client is the real one.
type Sender interface {
	Do(ctx context.Context, req *sip.Request) (*sip.Response, error)
}

// Options configures a Service.
type Options struct {
	Topics kafka.Topics
	// NotifyTimeout bounds the wait for the final NOTIFY when the command
	// has no answer_timeout.
	NotifyTimeout time.Duration
	// ByeAfterRefer is how long, after a successful REFER, transfer waits
	// for the far end's BYE (a CallEnded fact) before it ends the agent
	// leg with its own BYE; 0 never sends that BYE.
	ByeAfterRefer time.Duration
	// MaxInFlight bounds the executions at once.
	MaxInFlight int
	// MaxCommandAge fails commands older than this without sending SIP;
	// 0 disables the check.
	MaxCommandAge time.Duration
	// ProduceTimeout bounds publishing one outcome.
	ProduceTimeout time.Duration
	// ShutdownTimeout bounds how long in-flight executions run on once Run's
	// context ends.
	ShutdownTimeout time.Duration
	// Invite configures warm transfers; without Invite.Ports an INVITE
	// command fails.
	Invite InviteOptions
	// Metrics, when set, counts commands, outcomes and bridge media.
	Metrics *Metrics
	// Tracer, when set, makes each execution a child span of its command's
	// trace; its outcomes carry that span.
	Tracer trace.Tracer
	// Peers is where in-dialog requests (REFER, BYE, re-INVITE) may go
	// beside public addresses and the address the INVITE came from
	// (request.Peers.Check); Invite.TrunkHost, when it is an IP address,
	// is added. A command whose dialog points elsewhere fails before any
	// SIP is sent (next_hop_not_allowed).
	Peers request.Peers
	// Routes, when set, is the route allowlist every REFER and INVITE
	// command is checked against again before any SIP is sent
	// (route_not_allowed); nil checks nothing (the router's allowlist
	// alone decides).
	Routes *request.Allowlist
}

// AttemptLog is the durable record of the commands attempted
// (attempts.Log is the real one).
type AttemptLog interface {
	// EnsureSynced returns once attempts other instances recorded for this
	// process's partitions are known.
	EnsureSynced(ctx context.Context) error
	Lookup(commandID string) (attempts.Attempt, bool)
	// Record makes the attempts durable; one error per command.
	Record(ctx context.Context, cmds []*batonv1.HandoffCommand, callIDs []string) []error
}

// Service consumes commands and facts and executes the commands.
type Service struct {
	cl       *kgo.Client
	sip      Sender
	attempts AttemptLog
	opts     Options
	logger   *slog.Logger
	reg      *registry
	// peers is opts.Peers with the trunk host added.
	peers request.Peers
	wg    sync.WaitGroup
	now   func() time.Time
}

// New builds a Service. cl must be a group consumer of the handoffs and
// calls topics (kafka.ConsumerOpts); it also publishes the outcomes.
func New(cl *kgo.Client, sender Sender, log AttemptLog, opts Options, logger *slog.Logger) *Service {
	return &Service{
		cl:       cl,
		sip:      sender,
		attempts: log,
		opts:     opts,
		logger:   logger,
		reg:      newRegistry(opts.MaxInFlight),
		peers:    peersOf(opts),
		now:      time.Now,
	}
}

// peersOf is opts.Peers and the trunk host new legs are dialled through,
// when it is an IP address: transfer is configured to reach it.
func peersOf(opts Options) request.Peers {
	p := request.Peers{
		Networks: slices.Clone(opts.Peers.Networks),
		Hosts:    slices.Clone(opts.Peers.Hosts),
	}
	if trunk, ok := request.PeerHost(opts.Invite.TrunkHost); ok {
		p.Hosts = append(p.Hosts, trunk)
	}
	return p
}

// Run consumes until ctx ends, then shuts down in two stages: the handoffs
// topic is paused (no new command starts) while the calls topic is still
// read, so in-flight transfers get their NOTIFY and finish, for up to
// ShutdownTimeout; then what is left is abandoned (logged, no outcome).
// Flushing and closing the client is the caller's job.
//
// At most once: a batch's new commands have their attempt recorded in the
// attempt log before any SIP is sent, and the batch's offsets are committed
// (kafka.ConsumeLoop, after the handler returns) only once those attempts
// are durable. A command redelivered after a crash or a rebalance finds its
// attempt and is reported, not executed again. A crash after the commit
// loses the transfers under way (no final outcome); never a second one.
func (s *Service) Run(ctx context.Context) error {
	// Executions outlive ctx: they stop at the shutdown deadline.
	work, abandon := context.WithCancel(context.WithoutCancel(ctx))
	defer abandon()
	err := kafka.ConsumeLoop(ctx, s.cl, s.logger, retryPause, func(ctx context.Context, records []*kgo.Record) error {
		return s.handle(ctx, work, records)
	})

	s.cl.PauseFetchTopics(s.opts.Topics.Handoffs)
	pending := s.reg.inFlight()
	s.logger.InfoContext(ctx, "stopped taking commands; finishing transfers", "in_flight", pending)
	drain, stop := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ShutdownTimeout)
	defer stop()
	finished := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(finished)
		stop()
	}()
	if pending > 0 {
		// Keep reading facts until the executions are done.
		derr := kafka.ConsumeLoop(drain, s.cl, s.logger, retryPause, s.routeFacts)
		err = errors.Join(err, derr)
	}
	select {
	case <-finished:
	case <-drain.Done():
		select {
		case <-finished:
		default:
			s.logger.WarnContext(ctx, "shutdown deadline: abandoning transfers", "in_flight", s.reg.inFlight())
			abandon()
			<-finished
		}
	}
	return err
}

// handle records the attempts of a batch's new commands, then dispatches
// them and routes the batch's facts, in order. It never waits on a
// transfer. An error leaves the batch uncommitted (it is retried): the
// offsets of a command are committed only after its attempt is durable.
func (s *Service) handle(ctx, work context.Context, records []*kgo.Record) error {
	type item struct {
		ev  events.Event
		cmd *batonv1.HandoffCommand
		run bool
	}
	items := make([]item, 0, len(records))
	var fresh []*batonv1.HandoffCommand
	var freshCalls []string
	var freshIdx []int
	synced := false
	for _, rec := range records {
		ev, ok := s.decode(ctx, rec)
		if !ok {
			continue
		}
		cmd, isCmd := ev.Data.(*batonv1.HandoffCommand)
		items = append(items, item{ev: ev, cmd: cmd})
		if !isCmd {
			continue
		}
		if !synced {
			// This process may just have been given partitions whose
			// commands another instance attempted: read its attempts first.
			if err := s.attempts.EnsureSynced(ctx); err != nil {
				return err
			}
			synced = true
		}
		if s.skip(ctx, work, ev, cmd) {
			continue
		}
		items[len(items)-1].run = true
		fresh = append(fresh, cmd)
		freshCalls = append(freshCalls, callIDOf(ev, cmd))
		freshIdx = append(freshIdx, len(items)-1)
	}
	var errs []error
	if len(fresh) > 0 {
		for j, err := range s.attempts.Record(ctx, fresh, freshCalls) {
			if err != nil {
				// Not durable: not executed now; the batch is retried.
				items[freshIdx[j]].run = false
				errs = append(errs, err)
			}
		}
	}
	for _, it := range items {
		switch {
		case it.cmd == nil:
			s.route(ctx, it.ev)
		case it.run:
			s.dispatch(ctx, work, it.ev, it.cmd)
		}
	}
	return errors.Join(errs...)
}

func callIDOf(ev events.Event, cmd *batonv1.HandoffCommand) string {
	if id := cmd.GetCallId(); id != "" {
		return id
	}
	return ev.Subject
}

// skip decides, before any attempt is recorded, that a command does not
// run: this process already runs or ran it (a redelivery; silently), its
// attempt is in the log (a redelivery after a crash or a rebalance;
// reported, never executed again), or it is too old (reported).
func (s *Service) skip(ctx, work context.Context, ev events.Event, cmd *batonv1.HandoffCommand) bool {
	id := cmd.GetCommandId()
	e := &execution{cmd: cmd, callID: callIDOf(ev, cmd), start: s.now(), traceParent: ev.TraceParent}
	log := s.logger.With("call_id", e.callID, "command_id", id)
	if s.reg.known(id) {
		log.InfoContext(ctx, "command already executed by this process; skipped")
		return true
	}
	if a, ok := s.attempts.Lookup(id); ok && id != "" {
		s.opts.Metrics.refused(cmd.GetMethod(), RefusedAlreadyAttempted)
		s.detached(ctx, work, e, log, failed(0, "", fmt.Sprintf("already attempted at %s by %s: not executed again",
			a.AttemptedAt.UTC().Format(time.RFC3339Nano), a.Instance)))
		return true
	}
	if age := s.now().Sub(ev.Time); s.opts.MaxCommandAge > 0 && age > s.opts.MaxCommandAge {
		s.opts.Metrics.refused(cmd.GetMethod(), RefusedTooOld)
		s.detached(ctx, work, e, log, failed(0, "", fmt.Sprintf("command is %v old, more than max_command_age %v: not executed",
			age.Round(time.Second), s.opts.MaxCommandAge)))
		return true
	}
	return false
}

// errCommandWhileDraining keeps a batch uncommitted: a command fetched
// after shutdown began is left to the next owner of its partition.
var errCommandWhileDraining = errors.New("handoff command while draining; left uncommitted")

// routeFacts is the handler while draining: facts only, no new command.
// Pausing the handoffs topic strips its buffered records from polls, so a
// command should never show up here.
func (s *Service) routeFacts(ctx context.Context, records []*kgo.Record) error {
	var err error
	for _, rec := range records {
		if rec.Topic == s.opts.Topics.Handoffs {
			err = errCommandWhileDraining
			continue
		}
		if ev, ok := s.decode(ctx, rec); ok {
			s.route(ctx, ev)
		}
	}
	return err
}

func (s *Service) decode(ctx context.Context, rec *kgo.Record) (events.Event, bool) {
	ev, err := events.Decode(rec)
	if err != nil {
		// A record that cannot be decoded never will be: skip it rather
		// than block its partition.
		s.logger.WarnContext(ctx, "undecodable record skipped", "call_id", string(rec.Key), "topic", rec.Topic,
			"partition", rec.Partition, "offset", rec.Offset, "err", err)
		return events.Event{}, false
	}
	return ev, true
}

// route hands NotifyReceived and CallEnded to the executions of their
// call; other facts are not transfer's business.
func (s *Service) route(ctx context.Context, ev events.Event) {
	switch ev.Data.(type) {
	case *batonv1.NotifyReceived, *batonv1.CallEnded:
	default:
		return
	}
	delivered, dropped := s.reg.deliver(ev.Subject, ev.Data)
	if dropped > 0 {
		s.logger.WarnContext(ctx, "fact dropped: execution not reading", "call_id", ev.Subject, "type", ev.Type)
	}
	if delivered > 0 {
		s.logger.DebugContext(ctx, "fact routed", "call_id", ev.Subject, "type", ev.Type, "executions", delivered)
	}
}

// commandAge is how long before start a command's event happened: 0 when
// its time is unknown or ahead of this clock.
func commandAge(start, at time.Time) time.Duration {
	if at.IsZero() || at.After(start) {
		return 0
	}
	return start.Sub(at)
}

// dispatch registers the command's execution and starts it.
func (s *Service) dispatch(ctx, work context.Context, ev events.Event, cmd *batonv1.HandoffCommand) {
	start := s.now()
	e := &execution{cmd: cmd, callID: callIDOf(ev, cmd), start: start, age: commandAge(start, ev.Time),
		facts: make(chan proto.Message, factBuffer), traceParent: ev.TraceParent}
	log := s.logger.With("call_id", e.callID, "command_id", cmd.GetCommandId())
	switch s.reg.add(e) {
	case duplicate:
		log.InfoContext(ctx, "command already executed by this process; skipped")
		return
	case full:
		s.opts.Metrics.refused(cmd.GetMethod(), RefusedMaxInFlight)
		s.detached(ctx, work, e, log, failed(0, "", fmt.Sprintf("too many transfers in flight (max_in_flight %d)", s.opts.MaxInFlight)))
		return
	}
	log.InfoContext(ctx, "handoff command received", "method", cmd.GetMethod().String(), "destination", cmd.GetDestination(),
		"attempt", cmd.GetAttempt())
	s.opts.Metrics.command(cmd.GetMethod())
	s.wg.Go(func() {
		defer s.reg.remove(e)
		end := s.startSpan(work, e)
		defer end()
		s.execute(work, e, log)
	})
}

// startSpan starts the execution's span, a child of the command's, and
// points e's traceParent at it; end ends it. Without a tracer or a valid
// traceparent on the command, outcomes carry the command's traceparent.
func (s *Service) startSpan(ctx context.Context, e *execution) (end func()) {
	if s.opts.Tracer == nil {
		return func() {}
	}
	pctx := tracing.Extract(ctx, e.traceParent)
	if !trace.SpanContextFromContext(pctx).IsValid() {
		return func() {}
	}
	sctx, span := s.opts.Tracer.Start(pctx, "transfer "+label(e.cmd.GetMethod().String(), "METHOD_"),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("call_id", e.callID), attribute.String("command_id", e.cmd.GetCommandId()),
			attribute.String("destination", e.cmd.GetDestination())))
	e.traceParent = tracing.Inject(sctx)
	return func() { span.End() }
}

// detached publishes a single outcome for a command that does not run,
// off the consume loop.
func (s *Service) detached(ctx, work context.Context, e *execution, log *slog.Logger, o step) {
	log.WarnContext(ctx, "command not executed", "detail", o.detail)
	s.opts.Metrics.command(e.cmd.GetMethod())
	s.wg.Go(func() {
		end := s.startSpan(work, e)
		defer end()
		s.publish(work, e, log, o)
	})
}

// execute carries out one command and publishes its outcomes.
func (s *Service) execute(ctx context.Context, e *execution, log *slog.Logger) {
	if !s.admit(ctx, e, log) {
		return
	}
	switch e.cmd.GetMethod() {
	case batonv1.Method_METHOD_REFER:
		s.refer(ctx, e, log)
	case batonv1.Method_METHOD_BYE:
		s.bye(ctx, e, log)
	case batonv1.Method_METHOD_INVITE:
		s.invite(ctx, e, log)
	default:
		s.notSent(ctx, e, log, "command", RefusedUnknownMethod, fmt.Errorf("unknown method %s", e.cmd.GetMethod()))
	}
}

// admit checks, before any SIP, what a command read from Kafka could
// make transfer do beyond what it was configured for: the route of a
// REFER or INVITE must match the route allowlist (Options.Routes), and
// the caller's dialog, which a REFER, a BYE and a warm transfer's
// re-INVITE are sent in, must lead to an allowed peer (Peers.Check).
// A refused command gets its FAILED outcome and a counted reason.
func (s *Service) admit(ctx context.Context, e *execution, log *slog.Logger) bool {
	method := e.cmd.GetMethod()
	what := strings.TrimPrefix(method.String(), "METHOD_")
	switch method {
	case batonv1.Method_METHOD_REFER, batonv1.Method_METHOD_INVITE:
		if err := s.opts.Routes.Check(e.cmd.GetRoute()); err != nil {
			s.notSent(ctx, e, log, what, RefusedRouteNotAllowed, err)
			return false
		}
	case batonv1.Method_METHOD_BYE:
	default:
		return true // refused by execute
	}
	if method == batonv1.Method_METHOD_INVITE && (s.opts.Invite.Ports == nil || !s.hasLegs()) {
		return true // not configured: refused by invite
	}
	hop, err := s.peers.Check(e.cmd.GetDialog())
	if err != nil {
		s.notSent(ctx, e, log, what, requestReason(err), err)
		return false
	}
	log.DebugContext(ctx, "next hop allowed", "next_hop", hop.String())
	return true
}

// hasLegs reports whether the SIP client can start new legs.
func (s *Service) hasLegs() bool {
	_, ok := s.sip.(legSender)
	return ok
}

// Why a command failed before any SIP was sent: the reason label of
// baton_transfer_refused_total.
const (
	RefusedInvalidHeader     = "invalid_header"
	RefusedInvalidRoute      = "invalid_route"
	RefusedInvalidDialog     = "invalid_dialog"
	RefusedInvalidEncryption = "invalid_encryption"
	RefusedInvalidWhisper    = "invalid_whisper"
	RefusedNoMediaPort       = "no_media_port"
	RefusedNotConfigured     = "not_configured"
	RefusedUnknownMethod     = "unknown_method"
	RefusedAlreadyAttempted  = "already_attempted"
	RefusedTooOld            = "too_old"
	RefusedMaxInFlight       = "max_in_flight"
	// RefusedRouteNotAllowed: the route matches no pattern of transfer's
	// route allowlist (Options.Routes).
	RefusedRouteNotAllowed = "route_not_allowed"
	// RefusedNextHopNotAllowed: the caller's dialog leads to a host name
	// or to a non-public address outside Options.Peers.
	RefusedNextHopNotAllowed = "next_hop_not_allowed"
	RefusedOther             = "other"
)

// requestReason classifies why package request refused to build a
// request.
func requestReason(err error) string {
	// Most specific first: a bad route or dialog field wraps the header
	// value error that found it.
	switch {
	case errors.Is(err, request.ErrNextHop):
		return RefusedNextHopNotAllowed
	case errors.Is(err, request.ErrRoute), errors.Is(err, sipx.ErrReferTarget):
		return RefusedInvalidRoute
	case errors.Is(err, request.ErrDialog):
		return RefusedInvalidDialog
	case errors.Is(err, sipx.ErrHeaderName), errors.Is(err, sipx.ErrHeaderValue), errors.Is(err, sipx.ErrHeaderLine):
		return RefusedInvalidHeader
	}
	return RefusedOther
}

// notSent publishes the FAILED outcome of a command that sent no SIP
// ("<what> not sent: <err>") and counts why.
func (s *Service) notSent(ctx context.Context, e *execution, log *slog.Logger, what, reason string, err error) {
	s.opts.Metrics.refused(e.cmd.GetMethod(), reason)
	log.WarnContext(ctx, "command refused before any SIP", "reason", reason, "err", err)
	s.publish(ctx, e, log, failed(0, "", what+" not sent: "+err.Error()))
}

// End reasons: the reason of an ENDED outcome, why the bridged call ended.
const (
	EndMediaTimeout      = "media_timeout"
	EndDestinationHangup = "destination_hangup"
	EndCallerHangup      = "caller_hangup"
	EndShutdown          = "shutdown"
)

// step is one outcome to publish.
type step struct {
	status batonv1.OutcomeStatus
	code   int
	reason string
	detail string
	bridge *batonv1.BridgeStats
	// ended, on an ENDED outcome, is the end reason; it replaces the
	// command's reason in the outcome.
	ended string
}

func failed(code int, reason, detail string) step {
	return step{status: batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, code: code, reason: reason, detail: detail}
}

// publish writes one TransferOutcome. It is bounded by ProduceTimeout and
// not by ctx, so an outcome decided at shutdown is still written.
func (s *Service) publish(ctx context.Context, e *execution, log *slog.Logger, o step) {
	reason := e.cmd.GetReason()
	if o.ended != "" {
		reason = o.ended
	}
	// Every text comes from elsewhere (the command, a far end's reason
	// phrase, an error quoting either): no control character may reach
	// the event.
	out := &batonv1.TransferOutcome{
		CommandId:   printable(e.cmd.GetCommandId()),
		CallId:      printable(e.callID),
		Status:      o.status,
		Method:      e.cmd.GetMethod(),
		Destination: printable(e.cmd.GetDestination()),
		SipCode:     int32(o.code),
		SipReason:   printable(o.reason),
		Detail:      printable(o.detail),
		Reason:      printable(reason),
		Elapsed:     durationpb.New(s.now().Sub(e.start)),
		Bridge:      o.bridge,
	}
	attrs := []any{"status", o.status.String(), "sip_code", o.code, "sip_reason", out.GetSipReason(), "detail", out.GetDetail()}
	ev, err := events.New(Source, e.callID, out, s.now())
	if err != nil {
		log.ErrorContext(ctx, "build outcome", append(attrs, "err", err)...)
		return
	}
	ev.TraceParent = e.traceParent
	rec, err := events.Encode(s.opts.Topics.Transfers, ev)
	if err != nil {
		log.ErrorContext(ctx, "encode outcome", append(attrs, "err", err)...)
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.ProduceTimeout)
	defer cancel()
	if err := s.cl.ProduceSync(pctx, rec).FirstErr(); err != nil {
		log.ErrorContext(ctx, "publish outcome", append(attrs, "err", err)...)
		return
	}
	s.opts.Metrics.outcome(out)
	level := slog.LevelInfo
	if o.status == batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED {
		level = slog.LevelWarn
	}
	log.Log(ctx, level, "transfer outcome", append(attrs, "topic", rec.Topic, "partition", rec.Partition)...)
}

// printable replaces the control characters of s (CR, LF, NUL and the
// rest) with U+FFFD.
func printable(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if isControl(r) {
			return '\uFFFD'
		}
		return r
	}, s)
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
