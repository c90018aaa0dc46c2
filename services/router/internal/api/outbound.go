package api

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/router/internal/handoff"
	"github.com/baton-voice/baton/services/router/internal/outbound"
)

// opOutbound is the operation label of POST /v1/calls's rejections.
const opOutbound = "outbound"

// Rejection reasons of POST /v1/calls beyond the policy's codes
// (outbound.Code*).
const (
	RejectInvalidAgent = "invalid_agent"
	RejectInvalidTrunk = "invalid_trunk"
)

// WithOutbound serves POST /v1/calls under policy (nil: every request is
// refused as an unknown trunk). It must be called before the server
// serves.
func (s *Server) WithOutbound(policy *outbound.Policy) *Server {
	s.outbound = policy
	return s
}

// OutboundRequest is the body of POST /v1/calls.
type OutboundRequest struct {
	// Trunk names an outbound trunk (outbound.trunks in the router's and
	// ingress's configs).
	Trunk string `json:"trunk"`
	// To is a number (+15551234567) or a sip:, sips: or tel: URI.
	To string `json:"to"`
	// From is one of the trunk's caller ids; empty is its first.
	From string `json:"from"`
	// Agent names the voice-AI agent the answered call streams to;
	// empty leaves the choice to ingress (number, trunk, default).
	Agent string `json:"agent"`
	// Variables fill the trunk's header templates and start the call's
	// variables.
	Variables map[string]string `json:"variables"`
	// AnswerTimeoutMS is how long the call may ring (0 or absent: the
	// trunk's answer_timeout, which is also the most).
	AnswerTimeoutMS int64 `json:"answer_timeout_ms"`
}

// OutboundAccepted is the answer to an admitted POST /v1/calls: the
// OutboundCallRequested is in Kafka. Its progress (ringing, answered,
// busy, no answer, failed) comes as OutboundCallProgress events; once
// answered, the call is GET /v1/calls/{call_id} like any other.
type OutboundAccepted struct {
	RequestID string `json:"request_id"`
	CallID    string `json:"call_id"`
	Trunk     string `json:"trunk"`
	To        string `json:"to"`
	From      string `json:"from"`
	// AnswerTimeoutMS is the answer timeout in force.
	AnswerTimeoutMS int64 `json:"answer_timeout_ms"`
}

func (s *Server) postOutbound(w http.ResponseWriter, r *http.Request) {
	var req OutboundRequest
	if !s.decode(w, r, opOutbound, &req) {
		return
	}
	switch {
	case len(req.Trunk) > 256 || sipx.HasControl(req.Trunk):
		s.reject(w, opOutbound, RejectInvalidTrunk, fmt.Errorf("trunk: at most 256 bytes, no control characters"))
		return
	case req.Agent != "" && !handoff.ValidAgentName(req.Agent):
		s.reject(w, opOutbound, RejectInvalidAgent, fmt.Errorf("agent %q: not an agent name", req.Agent))
		return
	case req.AnswerTimeoutMS < 0 || req.AnswerTimeoutMS > math.MaxInt64/int64(time.Millisecond):
		s.reject(w, opOutbound, outbound.CodeInvalidTimeout, fmt.Errorf("answer_timeout_ms: %d: want a positive number of milliseconds", req.AnswerTimeoutMS))
		return
	}
	if err := checkMap("variables", req.Variables); err != nil {
		s.reject(w, opOutbound, RejectInvalidVariable, err)
		return
	}
	callID := uuid.NewString()
	policy := s.outbound
	if policy == nil {
		policy, _ = outbound.New(nil) // no trunks: refuses every request
	}
	admitted, err := policy.Admit(outbound.Request{
		CallID: callID, Trunk: req.Trunk, To: req.To, From: req.From, Variables: req.Variables,
		AnswerTimeout: time.Duration(req.AnswerTimeoutMS) * time.Millisecond,
	}, s.now())
	if err != nil {
		refusal, ok := outbound.AsRefusal(err)
		if !ok {
			refusal = &outbound.Refusal{Status: http.StatusBadRequest, Code: "invalid_request", Detail: err.Error()}
		}
		s.metrics.reject(opOutbound, refusal.Code)
		s.logger.InfoContext(r.Context(), "outbound call refused", "trunk", req.Trunk, "code", refusal.Code, "detail", refusal.Detail)
		if refusal.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(refusal.RetryAfter.Seconds()))))
		}
		writeProblem(w, Problem{Type: "about:blank", Title: "outbound call refused", Status: refusal.Status,
			Detail: refusal.Detail, Code: refusal.Code})
		return
	}
	msg := &batonv1.OutboundCallRequested{
		CallId: callID, RequestId: uuid.NewString(), Trunk: req.Trunk, To: admitted.To, From: admitted.From,
		Headers: admitted.Headers, Variables: req.Variables, Agent: req.Agent,
		AnswerTimeout: durationpb.New(admitted.AnswerTimeout), RequestedBy: RequestedBy,
	}
	if !s.publish(w, r, callID, msg) {
		return
	}
	s.logger.InfoContext(r.Context(), "outbound call requested", "call_id", callID, "trunk", req.Trunk,
		"request_id", msg.GetRequestId())
	w.Header().Set("Location", "/v1/calls/"+callID)
	writeJSON(w, http.StatusAccepted, OutboundAccepted{
		RequestID: msg.GetRequestId(), CallID: callID, Trunk: req.Trunk, To: admitted.To, From: admitted.From,
		AnswerTimeoutMS: admitted.AnswerTimeout.Milliseconds(),
	})
}
