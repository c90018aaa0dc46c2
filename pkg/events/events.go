// Package events encodes Baton's events and commands as Kafka records that
// follow the CloudEvents Kafka protocol binding in binary mode: the payload is
// the Protobuf message, the attributes travel as ce_* record headers, the
// record key is the call id, and a W3C traceparent header rides along.
package events

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// CloudEvents type attributes, one per message of the contract.
const (
	TypeCallStarted       = "baton.call.started.v1"
	TypeCallEnded         = "baton.call.ended.v1"
	TypeNotifyReceived    = "baton.call.notify.v1"
	TypeHandoffRequested  = "baton.handoff.requested.v1"
	TypeHandoffCommand    = "baton.handoff.command.v1"
	TypeTransferOutcome   = "baton.transfer.outcome.v1"
	TypeTransferAttempt   = "baton.transfer.attempt.v1"
	TypeCallStateChanged  = "baton.call.state.v1"
	TypeAgentMetric       = "baton.agent.metric.v1"
	TypeHandoffRefused    = "baton.handoff.refused.v1"
	TypePreCallData       = "baton.call.precall.v1"
	TypeCallUpdated       = "baton.call.updated.v1"
	TypeDtmfReceived      = "baton.call.dtmf.v1"
	TypeCallEvicted       = "baton.call.evicted.v1"
	TypeAgentConnected    = "baton.agent.connected.v1"
	TypeAgentDisconnected = "baton.agent.disconnected.v1"
	TypeAgentMarkPlayed   = "baton.agent.mark.v1"
	TypeAgentSelected     = "baton.agent.selected.v1"
	// TypeOutboundRequested and TypeOutboundProgress are an outbound
	// call's request (agent API) and its steps (ingress).
	TypeOutboundRequested = "baton.outbound.requested.v1"
	TypeOutboundProgress  = "baton.outbound.progress.v1"
	// TypeDestinationHealth is transfer's health check of a destination
	// (a change of state), copied to every partition of the transfers
	// topic.
	TypeDestinationHealth = "baton.destination.health.v1"
	// TypeReferRefusalLearned: transfer learned that a trunk refuses REFER.
	TypeReferRefusalLearned = "baton.transfer.refer_refusal.v1"
	// TypeInboundRefer: the far end REFERred a call and ingress's
	// refer.policy handed it to the router (docs/decisions/0019).
	TypeInboundRefer = "baton.call.refer.v1"
	// TypeBridgeHeld: a transfer instance holds a warm transfer's bridge
	// (its lease on the attempt log), or claims a lost one.
	TypeBridgeHeld = "baton.transfer.bridge_held.v1"
)

// ContentType is the content-type header of every Baton record.
const ContentType = "application/protobuf"

// SpecVersion is the CloudEvents version Baton writes and accepts.
const SpecVersion = "1.0"

// Sentinel errors returned (wrapped) by Decode and New.
var (
	ErrUnknownType    = errors.New("unknown event type")
	ErrMissingHeader  = errors.New("missing CloudEvents header")
	ErrInvalidHeader  = errors.New("invalid CloudEvents header")
	ErrInvalidPayload = errors.New("invalid payload")
)

// Event is one CloudEvent: its attributes and its Protobuf data.
type Event struct {
	// ID is unique per event (ce_id); analytics deduplicates on it.
	ID string
	// Type is the CloudEvents type, one of the Type* constants.
	Type string
	// Source names the producer, for example baton/ingress/host-1.
	Source string
	// Subject is the call id; it is also the record key.
	Subject string
	// Time is when the fact happened; replays use it as the clock.
	Time time.Time
	// TraceParent is the W3C traceparent, empty when untraced.
	TraceParent string
	// Data is the payload message.
	Data proto.Message
}

// New builds an event for msg about callID with a fresh time-ordered id.
func New(source, callID string, msg proto.Message, at time.Time) (Event, error) {
	typ, err := TypeOf(msg)
	if err != nil {
		return Event{}, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Event{}, fmt.Errorf("new event id: %w", err)
	}
	return Event{
		ID:      id.String(),
		Type:    typ,
		Source:  source,
		Subject: callID,
		Time:    at.UTC(),
		Data:    msg,
	}, nil
}

// TypeOf returns the CloudEvents type of a contract message.
func TypeOf(msg proto.Message) (string, error) {
	switch msg.(type) {
	case *batonv1.CallStarted:
		return TypeCallStarted, nil
	case *batonv1.CallEnded:
		return TypeCallEnded, nil
	case *batonv1.NotifyReceived:
		return TypeNotifyReceived, nil
	case *batonv1.HandoffRequested:
		return TypeHandoffRequested, nil
	case *batonv1.HandoffCommand:
		return TypeHandoffCommand, nil
	case *batonv1.TransferOutcome:
		return TypeTransferOutcome, nil
	case *batonv1.TransferAttempt:
		return TypeTransferAttempt, nil
	case *batonv1.CallStateChanged:
		return TypeCallStateChanged, nil
	case *batonv1.AgentMetric:
		return TypeAgentMetric, nil
	case *batonv1.HandoffRefused:
		return TypeHandoffRefused, nil
	case *batonv1.PreCallData:
		return TypePreCallData, nil
	case *batonv1.CallUpdated:
		return TypeCallUpdated, nil
	case *batonv1.DtmfReceived:
		return TypeDtmfReceived, nil
	case *batonv1.CallEvicted:
		return TypeCallEvicted, nil
	case *batonv1.AgentConnected:
		return TypeAgentConnected, nil
	case *batonv1.AgentDisconnected:
		return TypeAgentDisconnected, nil
	case *batonv1.AgentMarkPlayed:
		return TypeAgentMarkPlayed, nil
	case *batonv1.AgentSelected:
		return TypeAgentSelected, nil
	case *batonv1.OutboundCallRequested:
		return TypeOutboundRequested, nil
	case *batonv1.OutboundCallProgress:
		return TypeOutboundProgress, nil
	case *batonv1.DestinationHealth:
		return TypeDestinationHealth, nil
	case *batonv1.ReferRefusalLearned:
		return TypeReferRefusalLearned, nil
	case *batonv1.InboundReferReceived:
		return TypeInboundRefer, nil
	case *batonv1.BridgeHeld:
		return TypeBridgeHeld, nil
	default:
		return "", fmt.Errorf("%w: message %T", ErrUnknownType, msg)
	}
}

// newMessage returns an empty message for a CloudEvents type.
func newMessage(typ string) (proto.Message, error) {
	switch typ {
	case TypeCallStarted:
		return &batonv1.CallStarted{}, nil
	case TypeCallEnded:
		return &batonv1.CallEnded{}, nil
	case TypeNotifyReceived:
		return &batonv1.NotifyReceived{}, nil
	case TypeHandoffRequested:
		return &batonv1.HandoffRequested{}, nil
	case TypeHandoffCommand:
		return &batonv1.HandoffCommand{}, nil
	case TypeTransferOutcome:
		return &batonv1.TransferOutcome{}, nil
	case TypeTransferAttempt:
		return &batonv1.TransferAttempt{}, nil
	case TypeCallStateChanged:
		return &batonv1.CallStateChanged{}, nil
	case TypeAgentMetric:
		return &batonv1.AgentMetric{}, nil
	case TypeHandoffRefused:
		return &batonv1.HandoffRefused{}, nil
	case TypePreCallData:
		return &batonv1.PreCallData{}, nil
	case TypeCallUpdated:
		return &batonv1.CallUpdated{}, nil
	case TypeDtmfReceived:
		return &batonv1.DtmfReceived{}, nil
	case TypeCallEvicted:
		return &batonv1.CallEvicted{}, nil
	case TypeAgentConnected:
		return &batonv1.AgentConnected{}, nil
	case TypeAgentDisconnected:
		return &batonv1.AgentDisconnected{}, nil
	case TypeAgentMarkPlayed:
		return &batonv1.AgentMarkPlayed{}, nil
	case TypeAgentSelected:
		return &batonv1.AgentSelected{}, nil
	case TypeOutboundRequested:
		return &batonv1.OutboundCallRequested{}, nil
	case TypeOutboundProgress:
		return &batonv1.OutboundCallProgress{}, nil
	case TypeDestinationHealth:
		return &batonv1.DestinationHealth{}, nil
	case TypeReferRefusalLearned:
		return &batonv1.ReferRefusalLearned{}, nil
	case TypeInboundRefer:
		return &batonv1.InboundReferReceived{}, nil
	case TypeBridgeHeld:
		return &batonv1.BridgeHeld{}, nil
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownType, typ)
	}
}
