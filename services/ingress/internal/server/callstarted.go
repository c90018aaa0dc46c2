package server

import (
	"errors"
	"fmt"

	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/ingress/internal/headers"
	"github.com/baton-voice/baton/services/ingress/internal/numbers"
	"github.com/baton-voice/baton/services/ingress/internal/trunks"
)

// errBadRequest marks an INVITE that lacks what a dialog needs; it gets 400.
var errBadRequest = errors.New("bad request")

// callFacts is what an inbound INVITE tells about its call.
type callFacts struct {
	started *batonv1.CallStarted
	skipped []headers.Skipped
	// callerRefused and calleeRefused are the sources whose user part
	// numbers.Pick refused (control characters); never published.
	callerRefused, calleeRefused []numbers.Source
}

// dialogParams are the parts of the dialog ingress chose itself.
type dialogParams struct {
	localTag     string
	localContact string
	trunk        *trunks.Trunk
	localSDP     []byte
}

// readInvite builds the CallStarted of an initial INVITE.
func readInvite(req *sip.Request, p dialogParams) (callFacts, error) {
	callID := req.CallID()
	from, to, contact := req.From(), req.To(), req.Contact()
	if callID == nil || from == nil || to == nil {
		return callFacts{}, fmt.Errorf("%w: Call-ID, From and To are required", errBadRequest)
	}
	remoteTag, ok := from.Params.Get("tag")
	if !ok || remoteTag == "" {
		return callFacts{}, fmt.Errorf("%w: From has no tag", errBadRequest)
	}
	if contact == nil || contact.Address.Wildcard || contact.Address.Host == "" {
		return callFacts{}, fmt.Errorf("%w: INVITE needs a Contact URI", errBadRequest)
	}

	hs := req.Headers()
	ex := headers.Extract(hs)
	var routeSet []string
	for _, h := range hs {
		if headers.LongName(h.Name()) == "Record-Route" {
			routeSet = append(routeSet, h.Value())
		}
	}
	caller := numbers.Pick(req, p.trunk.CallerFrom, p.trunk.Region)
	callee := numbers.Pick(req, p.trunk.CalleeFrom, p.trunk.Region)
	source := req.Source()

	return callFacts{
		started: &batonv1.CallStarted{
			Dialog: &batonv1.Dialog{
				CallId:        callID.Value(),
				LocalTag:      p.localTag,
				RemoteTag:     remoteTag,
				LocalUri:      to.Address.String(),
				RemoteUri:     from.Address.String(),
				RemoteTarget:  contact.Address.String(),
				RouteSet:      routeSet,
				Transport:     transportOf(req),
				NextLocalCseq: 1,
				LocalContact:  p.localContact,
				RemoteAddress: source,
			},
			SipHeaders:       ex.Headers,
			Variables:        ex.Variables,
			CallerNumber:     caller.E164,
			CallerNumberRaw:  caller.Raw,
			CalleeNumber:     callee.E164,
			CalleeNumberRaw:  callee.Raw,
			SourceAddress:    source,
			Trunk:            p.trunk.Name,
			RequestUri:       req.Recipient.String(),
			OversizedHeaders: ex.Oversized,
			LocalSdp:         string(p.localSDP),
			RemoteSdp:        string(req.Body()),
			Direction:        batonv1.CallDirection_CALL_DIRECTION_INBOUND,
		},
		skipped:       ex.Skipped,
		callerRefused: caller.Refused,
		calleeRefused: callee.Refused,
	}, nil
}

// transportOf is the transport req arrived on.
func transportOf(req *sip.Request) batonv1.Transport {
	switch req.Transport() {
	case "TCP":
		return batonv1.Transport_TRANSPORT_TCP
	case "TLS":
		return batonv1.Transport_TRANSPORT_TLS
	default:
		return batonv1.Transport_TRANSPORT_UDP
	}
}
