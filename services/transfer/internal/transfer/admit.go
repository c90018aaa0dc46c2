package transfer

import (
	"context"
	"errors"
	"strings"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/transfer/internal/request"
)

// admit checks, before any SIP, what a command read from Kafka could
// make transfer do beyond what it was configured for: the route of a
// REFER or INVITE must match the route allowlist (Options.Routes), and
// the caller's dialog, which a REFER, a BYE and a warm transfer's
// re-INVITE are sent in, must lead to an allowed peer (Peers.Check).
// A refused command gets its FAILED outcome and a counted reason.
func (e *execution) admit(ctx context.Context) bool {
	method := e.cmd.GetMethod()
	what := strings.TrimPrefix(method.String(), "METHOD_")
	switch method {
	case batonv1.Method_METHOD_REFER, batonv1.Method_METHOD_INVITE:
		if err := e.routes.Check(e.cmd.GetRoute()); err != nil {
			e.notSent(ctx, what, RefusedRouteNotAllowed, err)
			return false
		}
	case batonv1.Method_METHOD_BYE:
	default:
		return true // refused by run
	}
	if method == batonv1.Method_METHOD_INVITE && (e.inviteOpts.Ports == nil || e.legs == nil) {
		return true // not configured: refused by warmRun
	}
	hop, err := e.peers.Check(e.cmd.GetDialog())
	if err != nil {
		e.notSent(ctx, what, requestReason(err), err)
		return false
	}
	e.log.DebugContext(ctx, "next hop allowed", "next_hop", hop.String())
	return true
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
func (e *execution) notSent(ctx context.Context, what, reason string, err error) {
	e.metrics.refused(e.cmd.GetMethod(), reason)
	e.log.WarnContext(ctx, "command refused before any SIP", "reason", reason, "err", err)
	e.publish(ctx, failed(0, "", what+" not sent: "+err.Error()))
}
