package transfer

// One handoff, top to bottom:
//
//  1. Taken: Service.handle decodes the command from the handoffs topic.
//     Service.skip drops a redelivery this process knows and reports, with
//     a single FAILED outcome (Service.detached), one the attempt log
//     knows or one older than MaxCommandAge.
//  2. Attempt recorded: the batch's new commands are written to the
//     attempt log before any of them runs, so none is executed twice.
//  3. Started: Service.dispatch registers the execution, so its call's
//     facts reach it from now on, and runs it in its own goroutine.
//  4. Admitted: execution.admit checks the route allowlist and the next
//     hop; a command refused gets one FAILED outcome (execution.notSent).
//  5. SIP: referRun.run, execution.bye or warmRun.run builds the request
//     and sends it (execution.send).
//  6. Facts awaited: the NOTIFYs and the CallEnded of the call arrive on
//     execution.facts (referRun.awaitFinalNotify, execution.waitCallEnded,
//     warmRun.ring, warmRun.whisper, warmRun.bridged).
//  7. Outcome: every step is published on the transfers topic
//     (execution.publish).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/hops"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/services/transfer/internal/request"
	"github.com/baton-voice/baton/services/transfer/internal/uac"
)

// deps is what an execution takes from its Service: the SIP client, where
// outcomes go and the settings of one handoff. New builds it once; nothing
// writes it after.
type deps struct {
	sip Sender
	// legs is sip when it can start new legs (warm transfers); nil when it
	// cannot.
	legs legSender
	// out publishes the outcomes on the transfers topic, each within
	// produceTimeout.
	out            producer
	transfers      string
	produceTimeout time.Duration
	// notifyTimeout and byeAfterRefer are Options.NotifyTimeout and
	// Options.ByeAfterRefer.
	notifyTimeout time.Duration
	byeAfterRefer time.Duration
	inviteOpts    InviteOptions
	// routes and peers admit a command: Options.Routes, and
	// Options.Peers with the trunk host.
	routes  *request.Allowlist
	peers   request.Peers
	metrics *Metrics
	tracer  trace.Tracer
	now     func() time.Time
	hops    *hops.Log
	// trunks, destinations and refusals are Options.Trunks,
	// Options.Destinations and Options.Refusals (or memory).
	trunks       []Trunk
	destinations map[string]Destination
	refusals     RefusalLog
	// bridges and bridgeLease hold bridges on the log (lost.go); nil when
	// off.
	bridges     BridgeLog
	bridgeLease time.Duration
}

// producer publishes records; *kgo.Client is the real one.
type producer interface {
	ProduceSync(ctx context.Context, rs ...*kgo.Record) kgo.ProduceResults
}

// factBuffer is how many undelivered facts an execution holds; a REFER
// sees a handful of NOTIFYs and at most one CallEnded.
const factBuffer = 32

// execution is one command being carried out.
type execution struct {
	*deps
	// log carries the call and command ids.
	log    *slog.Logger
	cmd    *batonv1.HandoffCommand
	callID string
	start  time.Time
	// age is how old the command was when this process took it: start
	// minus its event time (the time of the fact that triggered it, a
	// CallStarted for a handoff decided at the call's start, never before
	// the call started); 0 when the event time is unknown or ahead of
	// this clock.
	// It is taken once, so that deadlines after start run on the
	// monotonic clock and a step of the wall clock (NTP correcting a
	// freshly booted machine) cannot move them.
	age time.Duration
	// facts receives NotifyReceived, CallUpdated and CallEnded of the
	// call, in order.
	facts chan proto.Message
	// traceParent is the execution's span, carried by its outcomes.
	traceParent string
	// callerSDP is the SDP a warm transfer's re-INVITE gave the caller;
	// its BRIDGED outcome carries it (TransferOutcome.caller_sdp).
	callerSDP string
	// method is the method being carried out: the command's, or its
	// REFER's fallback (outcomes name it).
	method batonv1.Method
	// cseqFloor, when set, is the lowest CSeq the next request in the
	// caller's dialog may take: a fallback follows the REFERs sent.
	cseqFloor uint32
}

// run carries out a command whose attempt is recorded: admitted, then the
// SIP of its method, the facts it waits for and its outcomes, in the
// execution's span.
func (e *execution) run(ctx context.Context) {
	end := e.startSpan(ctx)
	defer end()
	if !e.admit(ctx) {
		return
	}
	switch e.cmd.GetMethod() {
	case batonv1.Method_METHOD_REFER:
		(&referRun{execution: e}).run(ctx)
	case batonv1.Method_METHOD_BYE:
		e.bye(ctx)
	case batonv1.Method_METHOD_INVITE:
		(&warmRun{execution: e}).run(ctx)
	default:
		e.notSent(ctx, "command", RefusedUnknownMethod, fmt.Errorf("unknown method %s", e.cmd.GetMethod()))
	}
}

// startSpan starts the execution's span, a child of the command's, and
// points e's traceParent at it; end ends it. Without a tracer or a valid
// traceparent on the command, outcomes carry the command's traceparent.
func (e *execution) startSpan(ctx context.Context) (end func()) {
	if e.tracer == nil {
		return func() {}
	}
	pctx := tracing.Extract(ctx, e.traceParent)
	if !trace.SpanContextFromContext(pctx).IsValid() {
		return func() {}
	}
	sctx, span := e.tracer.Start(pctx, "transfer "+label(e.cmd.GetMethod().String(), "METHOD_"),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("call_id", e.callID), attribute.String("command_id", e.cmd.GetCommandId()),
			attribute.String("destination", e.cmd.GetDestination())))
	e.traceParent = tracing.Inject(sctx)
	return func() { span.End() }
}

// send runs the request's client transaction. When it returns false the
// outcome is already published (or the process is shutting down).
func (e *execution) send(ctx context.Context, req *sip.Request) (*sip.Response, bool) {
	e.log.InfoContext(ctx, "sending request", "method", req.Method.String(), "request_uri", req.Recipient.String(),
		"destination", req.Destination(), "cseq", req.CSeq().SeqNo)
	if e.hops.On() {
		e.hops.Mark(hops.TransferSending, e.callID, time.Now())
	}
	res, err := e.do(ctx, req)
	switch {
	case err == nil:
		return res, true
	case errors.Is(err, uac.ErrTimeout):
		e.publish(ctx, failed(0, "", strings.ToLower(req.Method.String())+" timed out"))
	case ctx.Err() != nil:
		e.log.WarnContext(ctx, "transfer abandoned at shutdown: no final response yet", "method", req.Method.String())
	default:
		e.publish(ctx, failed(0, "", fmt.Sprintf("send %s: %v", req.Method, err)))
	}
	return nil, false
}

// waitCallEnded waits up to d for the call's CallEnded fact; other facts
// are dropped. It returns nil when none came in time, and ctx's error when
// the execution is abandoned.
func (e *execution) waitCallEnded(ctx context.Context, d time.Duration) (*batonv1.CallEnded, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case fact := <-e.facts:
			if f, ok := fact.(*batonv1.CallEnded); ok {
				return f, nil
			}
		case <-timer.C:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
