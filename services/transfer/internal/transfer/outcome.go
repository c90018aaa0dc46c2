package transfer

import (
	"context"
	"log/slog"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// Outcome statuses, short.
const (
	accepted  = batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED
	progress  = batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS
	succeeded = batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED
	// succeededStatus is succeeded where a local name shadows it.
	succeededStatus = succeeded
	ringing         = batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING
	answered        = batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED
	bridged         = batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED
	ended           = batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED
)

// End reasons: the reason of an ENDED outcome, why the bridged call ended.
const (
	EndMediaTimeout      = "media_timeout"
	EndDestinationHangup = "destination_hangup"
	EndCallerHangup      = "caller_hangup"
	EndShutdown          = "shutdown"
	// EndAgentLegBye: after a successful REFER, transfer's BYE ended the
	// caller's dialog with Baton (the far end sent none).
	EndAgentLegBye = "agent_leg_bye"
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
	// release is what became of a bridge release (release.go).
	release *batonv1.BridgeRelease
}

func failed(code int, reason, detail string) step {
	return step{status: batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, code: code, reason: reason, detail: detail}
}

// publish writes one TransferOutcome. It is bounded by ProduceTimeout and
// not by ctx, so an outcome decided at shutdown is still written.
func (e *execution) publish(ctx context.Context, o step) {
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
		Method:      e.method,
		Destination: printable(e.cmd.GetDestination()),
		SipCode:     int32(o.code),
		SipReason:   printable(o.reason),
		Detail:      printable(o.detail),
		Reason:      printable(reason),
		Elapsed:     durationpb.New(e.now().Sub(e.start)),
		Bridge:      o.bridge,
		Release:     o.release,
	}
	if o.status == bridged {
		out.CallerSdp = e.callerSDP
	}
	attrs := []any{"status", o.status.String(), "sip_code", o.code, "sip_reason", out.GetSipReason(), "detail", out.GetDetail()}
	ev, err := events.New(Source, e.callID, out, e.now())
	if err != nil {
		e.log.ErrorContext(ctx, "build outcome", append(attrs, "err", err)...)
		return
	}
	ev.TraceParent = e.traceParent
	rec, err := events.Encode(e.transfers, ev)
	if err != nil {
		e.log.ErrorContext(ctx, "encode outcome", append(attrs, "err", err)...)
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.produceTimeout)
	defer cancel()
	if err := e.out.ProduceSync(pctx, rec).FirstErr(); err != nil {
		e.log.ErrorContext(ctx, "publish outcome", append(attrs, "err", err)...)
		return
	}
	e.metrics.outcome(out)
	level := slog.LevelInfo
	if o.status == batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED {
		level = slog.LevelWarn
	}
	e.log.Log(ctx, level, "transfer outcome", append(attrs, "topic", rec.Topic, "partition", rec.Partition)...)
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
