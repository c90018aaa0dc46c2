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
//
// Where things are: the Service (this file) consumes and shuts down;
// handle.go takes the commands and routes the facts; execute.go is one
// handoff, top to bottom, as an execution: admitted (admit.go), its SIP
// (refer.go, bye.go, and for a warm transfer invite.go, ring.go,
// whisper.go, reinvite.go, bridged.go) and its outcomes (outcome.go).
package transfer

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/hops"
	"github.com/baton-voice/baton/pkg/kafka"
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
	// Hops, when set, records when each command and NOTIFY fact was
	// polled and when each request was handed to the SIP client
	// (bench/handoff); nil records nothing.
	Hops *hops.Log
	// Trunks are the SBCs and carriers requests go to, matched by next
	// hop: their digest credentials and how long a REFER refusal is
	// remembered.
	Trunks []Trunk
	// Destinations are transfer's settings of the router's destinations,
	// by lowercased name: the REFER fallback and the new leg's
	// credentials.
	Destinations map[string]Destination
	// Refusals remembers the trunks that refuse REFER across restarts;
	// nil takes the AttemptLog when it is one (attempts.Log is), else
	// remembers them in this process only.
	Refusals RefusalLog
	// BridgeLease, when positive, holds every bridge on the log with this
	// lease, and ends the calls of bridges whose instance stopped renewing
	// theirs (lost.go); 0 turns it off.
	BridgeLease time.Duration
	// Bridges is where bridges are held; nil takes the AttemptLog when it
	// is one (attempts.Log is).
	Bridges BridgeLog
}

// RefusalLog is the durable memory of the trunks that refuse REFER
// (attempts.Log is the real one).
type RefusalLog interface {
	// ReferRefused returns until when trunk is known to refuse REFER.
	ReferRefused(trunk string) (time.Time, bool)
	// LearnReferRefusal makes the refusal durable.
	LearnReferRefusal(ctx context.Context, m *batonv1.ReferRefusalLearned) error
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
	attempts AttemptLog
	opts     Options
	logger   *slog.Logger
	reg      *registry
	// deps is what every execution takes from the Service.
	deps *deps
	wg   sync.WaitGroup
}

// New builds a Service. cl must be a group consumer of the handoffs and
// calls topics (kafka.ConsumerOpts); it also publishes the outcomes.
func New(cl *kgo.Client, sender Sender, log AttemptLog, opts Options, logger *slog.Logger) *Service {
	legs, _ := sender.(legSender)
	return &Service{
		cl:       cl,
		attempts: log,
		opts:     opts,
		logger:   logger,
		reg:      newRegistry(opts.MaxInFlight),
		deps: &deps{
			sip:            sender,
			legs:           legs,
			out:            cl,
			transfers:      opts.Topics.Transfers,
			produceTimeout: opts.ProduceTimeout,
			notifyTimeout:  opts.NotifyTimeout,
			byeAfterRefer:  opts.ByeAfterRefer,
			inviteOpts:     opts.Invite,
			routes:         opts.Routes,
			peers:          peersOf(opts),
			trunks:         opts.Trunks,
			destinations:   opts.Destinations,
			refusals:       refusalsOf(opts.Refusals, log),
			bridges:        bridgesOf(opts.Bridges, log, opts.BridgeLease),
			bridgeLease:    opts.BridgeLease,
			metrics:        opts.Metrics,
			tracer:         opts.Tracer,
			now:            time.Now,
			hops:           opts.Hops,
		},
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
	if s.deps.bridges != nil {
		swept := make(chan struct{})
		defer func() { <-swept }()
		go func() {
			defer close(swept)
			s.sweepLostBridges(ctx, work)
		}()
	}
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
