// Package api is the agent HTTP API: the conv object over HTTP/JSON. It
// reads a call from the router's committed fold and writes by publishing
// events to the calls topic (HandoffRequested, CallStateChanged,
// AgentMetric), which the fold applies like any other fact, so a call's
// state stays a fold over its events.
//
// Reads are served from a view of every partition that each router
// instance keeps (callview), so any instance serves any call, whichever
// owns its partition and through any rebalance. Until that view has caught
// up with the log after a start, an unknown call is answered 503 with
// Retry-After, never a wrong 404. A call whose CallStarted was published a
// moment ago may still read as unknown (404) for that moment.
//
// A handoff asked for after the agent's mark (after_mark) is answered at
// once and published when the view shows the mark played (Run holds the
// waits). GET /v1/calls/{id}/events streams the call's handoff
// transitions (server-sent events) from a push.Hub fed by the same view.
//
// The API is described by api/openapi.yaml; a test keeps the two equal.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/router/internal/handoff"
	"github.com/baton-voice/baton/services/router/internal/outbound"
	"github.com/baton-voice/baton/services/router/internal/push"
)

// Source is the ce_source of the events the API publishes.
const Source = "baton/router"

// RequestedBy is HandoffRequested.requested_by and CallStateChanged.set_by.
const RequestedBy = "agent-api"

// maxBody bounds a request body.
const maxBody = 64 << 10

// Limits on what an agent may write.
const (
	maxKeyLen   = 128
	maxValueLen = 4096
	maxEntries  = 64
)

// Calls reads the committed state of a call. MarkState and Changed serve
// a handoff asked for after a mark: it waits, without polling, for a
// Commit that shows the mark played.
type Calls interface {
	View(id string) (v handoff.CallView, found, ended bool)
	MarkState(id, mark string) handoff.MarkState
	Changed() <-chan struct{}
}

// Publisher writes an event to the calls topic and waits for the ack.
type Publisher interface {
	Publish(ctx context.Context, ev events.Event) error
}

// Route is one operation of the API.
type Route struct {
	Method  string
	Pattern string // a net/http pattern path: /v1/calls/{id}
}

// Server is the API's handler.
type Server struct {
	calls  Calls
	tables handoff.Source
	pub    Publisher
	tokens [][]byte
	logger *slog.Logger
	now    func() time.Time
	mux    *http.ServeMux
	// paths routes on the path alone, to tell 405 from 404.
	paths   *http.ServeMux
	metrics *Metrics
	// waits are the handoffs waiting for a mark (see Run).
	waits *markWaits
	// hub serves the event streams (nil: none); see WithStreams.
	hub       *push.Hub
	heartbeat time.Duration
	// outbound decides POST /v1/calls (nil: refuses all); see WithOutbound.
	outbound *outbound.Policy
}

// Metrics are the API's Prometheus metrics. A nil *Metrics counts
// nothing.
type Metrics struct {
	// Rejected counts the writes refused before anything was published
	// (400, or 422 for a per-call cap), by operation (handoff, state,
	// metrics) and reason (invalid_json, invalid_header, invalid_variable,
	// state_too_many_keys, …).
	Rejected *prometheus.CounterVec
	// MarkWaits counts the handoffs asked for after a mark, by how their
	// wait ended (played, already_played, timeout, no_stream, call_gone,
	// abandoned at shutdown, or full: refused 429).
	MarkWaits *prometheus.CounterVec
	// MarkWaiting is the handoffs waiting for a mark now.
	MarkWaiting prometheus.Gauge
}

// NewMetrics registers the API's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_router_api_rejected_total",
			Help: "Agent API writes refused before publishing (400, or 422 for a per-call cap), by operation and reason.",
		}, []string{"operation", "reason"}),
		MarkWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_router_api_mark_waits_total",
			Help: "Handoffs asked for after a mark, by how the wait ended (played, already_played, timeout, no_stream, call_gone, abandoned, full).",
		}, []string{"result"}),
		MarkWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_router_api_mark_waiting",
			Help: "Handoffs waiting for their mark to play on this instance.",
		}),
	}
	reg.MustRegister(m.Rejected, m.MarkWaits, m.MarkWaiting)
	return m
}

func (m *Metrics) markWait(result string) {
	if m != nil {
		m.MarkWaits.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) waiting(delta float64) {
	if m != nil {
		m.MarkWaiting.Add(delta)
	}
}

func (m *Metrics) reject(op, reason string) {
	if m != nil {
		m.Rejected.WithLabelValues(op, reason).Inc()
	}
}

// Rejection reasons (the reason label of baton_router_api_rejected_total).
const (
	RejectInvalidJSON        = "invalid_json"
	RejectInvalidDestination = "invalid_destination"
	RejectInvalidReason      = "invalid_reason"
	RejectInvalidUtterance   = "invalid_utterance"
	RejectInvalidVariable    = "invalid_variable"
	RejectInvalidHeader      = "invalid_header"
	RejectInvalidState       = "invalid_state"
	RejectInvalidMetric      = "invalid_metric"
	RejectInvalidMark        = "invalid_mark"
	RejectInvalidWhisper     = "invalid_whisper"
	// RejectStateTooManyKeys and RejectStateTooLarge: the write would grow
	// the call's state past max_state_keys_per_call or
	// max_state_bytes_per_call (422).
	RejectStateTooManyKeys = handoff.StateTooManyKeys
	RejectStateTooLarge    = handoff.StateTooLarge
)

// Operations (the operation label of baton_router_api_rejected_total).
const (
	opHandoff = "handoff"
	opState   = "state"
	opMetrics = "metrics"
)

// New returns the API. tokens are the accepted bearer tokens (from the
// environment); now stamps the events it publishes; metrics, when not nil,
// counts the API's rejections.
func New(calls Calls, tables handoff.Source, pub Publisher, tokens []string, logger *slog.Logger, now func() time.Time,
	metrics *Metrics) *Server {
	s := &Server{calls: calls, tables: tables, pub: pub, logger: logger, now: now, metrics: metrics,
		mux: http.NewServeMux(), paths: http.NewServeMux(), waits: newMarkWaits(DefaultMaxMarkWaits)}
	for _, t := range tokens {
		if t = strings.TrimSpace(t); t != "" {
			s.tokens = append(s.tokens, []byte(t))
		}
	}
	allow := map[string][]string{}
	for _, r := range s.routes() {
		s.mux.Handle(r.Method+" "+r.Pattern, r.handler)
		allow[r.Pattern] = append(allow[r.Pattern], r.Method)
	}
	for pattern, methods := range allow {
		s.paths.Handle(pattern, methodNotAllowed(methods))
	}
	return s
}

type route struct {
	Route
	handler http.HandlerFunc
}

func (s *Server) routes() []route {
	return []route{
		{Route{http.MethodGet, "/v1/calls/{id}"}, s.getCall},
		{Route{http.MethodPatch, "/v1/calls/{id}/state"}, s.patchState},
		{Route{http.MethodPost, "/v1/calls/{id}/handoff"}, s.postHandoff},
		{Route{http.MethodGet, "/v1/calls/{id}/handoff"}, s.getHandoff},
		{Route{http.MethodPost, "/v1/calls/{id}/metrics"}, s.postMetric},
		{Route{http.MethodGet, "/v1/calls/{id}/events"}, s.streamEvents},
		{Route{http.MethodPost, "/v1/calls"}, s.postOutbound},
	}
}

// Routes lists the API's operations.
func (s *Server) Routes() []Route {
	var out []Route
	for _, r := range s.routes() {
		out = append(out, r.Route)
	}
	return out
}

// ServeHTTP authenticates, then dispatches.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="baton"`)
		problem(w, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required")
		return
	}
	if _, pattern := s.mux.Handler(r); pattern == "" {
		if h, pattern := s.paths.Handler(r); pattern != "" {
			h.ServeHTTP(w, r)
			return
		}
		problem(w, http.StatusNotFound, "not found", "no such operation: "+r.Method+" "+r.URL.Path)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func methodNotAllowed(methods []string) http.HandlerFunc {
	allow := strings.Join(methods, ", ")
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		problem(w, http.StatusMethodNotAllowed, "method not allowed", r.Method+" is not allowed here; use "+allow)
	}
}

func (s *Server) authorized(r *http.Request) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return false
	}
	match := 0
	for _, t := range s.tokens {
		match |= subtle.ConstantTimeCompare([]byte(token), t)
	}
	return match == 1
}

// Problem is an RFC 9457 problem document.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// RequestID is set when the request was published anyway (a refused
	// handoff is recorded as an event).
	RequestID string `json:"request_id,omitempty"`
	Code      string `json:"code,omitempty"`
	// Limit is set when a write was refused (422) for a per-call cap.
	Limit *Limit `json:"limit,omitempty"`
}

// Limit is the per-call cap a refused write would break, with the call's
// size now and with the write.
type Limit struct {
	// Name is the config key: max_state_keys_per_call or
	// max_state_bytes_per_call.
	Name string `json:"name"`
	Max  int    `json:"max"`
	// Current is the call's size now (committed) and After its size with
	// the write, in keys or bytes as Name says.
	Current int `json:"current"`
	After   int `json:"after"`
}

func problem(w http.ResponseWriter, status int, title, detail string) {
	writeProblem(w, Problem{Type: "about:blank", Title: title, Status: status, Detail: detail})
}

func writeProblem(w http.ResponseWriter, p Problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p) // the client went away
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away
}

// live finds the call of the request or writes 404 (unknown) or 409
// (ended).
func (s *Server) live(w http.ResponseWriter, r *http.Request) (handoff.CallView, bool) {
	id := r.PathValue("id")
	v, found, ended := s.calls.View(id)
	if !found && !ended && s.settled() {
		// The view trails the log by a poll: a call started a moment ago
		// may not be in it yet. Wait for a poll that began after this
		// request before calling it unknown, or answer 503 (never a
		// wrong 404).
		if c, ok := s.calls.(interface {
			CatchUp(ctx context.Context, id string) bool
		}); ok {
			if !c.CatchUp(r.Context(), id) {
				w.Header().Set("Retry-After", "1")
				problem(w, http.StatusServiceUnavailable, "catching up", "this instance's view of the calls is behind the log; retry")
				return v, false
			}
			v, found, ended = s.calls.View(id)
		}
	}
	switch {
	case ended:
		problem(w, http.StatusConflict, "call ended", fmt.Sprintf("call %s has ended", id))
		return v, false
	case !found && !s.settled():
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusServiceUnavailable, "catching up", "this instance is still reading the calls from the log; retry")
		return v, false
	case !found:
		problem(w, http.StatusNotFound, "unknown call", fmt.Sprintf("no live call %s", id))
		return v, false
	}
	return v, true
}

// settled reports whether the calls source has caught up with the log
// (callview.View.Settled); a source without the notion always has.
func (s *Server) settled() bool {
	c, ok := s.calls.(interface{ Settled() bool })
	return !ok || c.Settled()
}

// reject answers 400 and counts the rejection.
func (s *Server) reject(w http.ResponseWriter, op, reason string, err error) {
	s.metrics.reject(op, reason)
	problem(w, http.StatusBadRequest, "bad request", err.Error())
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// errors (counted as op's invalid_json).
func (s *Server) decode(w http.ResponseWriter, r *http.Request, op string, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("trailing data after the JSON value")
	}
	if err != nil {
		s.reject(w, op, RejectInvalidJSON, fmt.Errorf("invalid JSON body: %w", err))
		return false
	}
	return true
}

// CallJSON is the conv view of a call.
type CallJSON struct {
	CallID       string              `json:"call_id"`
	CallerNumber string              `json:"caller_number"`
	CalleeNumber string              `json:"callee_number"`
	SipHeaders   map[string][]string `json:"sip_headers"`
	Variables    map[string]string   `json:"variables"`
	State        map[string]string   `json:"state"`
	// Results is the pre-call webhook's answer, once folded.
	Results map[string]any `json:"results,omitempty"`
	// PreCallError says why the call has no pre-call data.
	PreCallError string      `json:"precall_error,omitempty"`
	Handoff      HandoffJSON `json:"handoff"`
	// AgentStream is set while the call's agent stream is connected.
	AgentStream bool `json:"agent_stream,omitempty"`
	// MarksPlayed are the agent's last marks played out, oldest first.
	MarksPlayed []string `json:"marks_played,omitempty"`
}

// HandoffJSON is where a call's handoff stands.
type HandoffJSON struct {
	Status      string `json:"status"`
	RequestID   string `json:"request_id,omitempty"`
	CommandID   string `json:"command_id,omitempty"`
	Destination string `json:"destination,omitempty"`
	Route       string `json:"route,omitempty"`
	Method      string `json:"method,omitempty"`
	Reason      string `json:"reason,omitempty"`
	Attempt     uint32 `json:"attempt,omitempty"`
	SipCode     int32  `json:"sip_code,omitempty"`
	SipReason   string `json:"sip_reason,omitempty"`
	Detail      string `json:"detail,omitempty"`
	RefusedCode string `json:"refused_code,omitempty"`
	Ending      bool   `json:"ending,omitempty"`
}

func handoffJSON(h handoff.HandoffView) HandoffJSON {
	return HandoffJSON{
		Status: string(h.Status), RequestID: h.RequestID, CommandID: h.CommandID, Destination: h.Destination,
		Route: h.Route, Method: h.Method, Reason: h.Reason, Attempt: h.Attempt, SipCode: h.SipCode,
		SipReason: h.SipReason, Detail: h.Detail, RefusedCode: h.RefusedCode, Ending: h.Ending,
	}
}

func (s *Server) getCall(w http.ResponseWriter, r *http.Request) {
	v, ok := s.live(w, r)
	if !ok {
		return
	}
	if v.SipHeaders == nil {
		v.SipHeaders = map[string][]string{}
	}
	writeJSON(w, http.StatusOK, CallJSON{
		CallID: v.CallID, CallerNumber: v.CallerNumber, CalleeNumber: v.CalleeNumber,
		SipHeaders: v.SipHeaders, Variables: v.Variables, State: v.State, Results: v.Results,
		PreCallError: v.PreCallError, Handoff: handoffJSON(v.Handoff),
		AgentStream: v.AgentStream, MarksPlayed: v.MarksPlayed,
	})
}

func (s *Server) getHandoff(w http.ResponseWriter, r *http.Request) {
	v, ok := s.live(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, handoffJSON(v.Handoff))
}

// Accepted is the answer to a write: the event is in Kafka; the router
// applies it shortly.
type Accepted struct {
	RequestID string `json:"request_id"`
	CallID    string `json:"call_id"`
	// MarkWait, for a handoff asked for after a mark: waiting (the request
	// is published once the mark plays or the timeout passes),
	// already_played or no_stream (published at once).
	MarkWait string `json:"mark_wait,omitempty"`
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request, callID string, msg proto.Message) bool {
	if err := s.send(r.Context(), callID, msg); err != nil {
		s.logger.ErrorContext(r.Context(), "publish agent event", "call_id", callID, "err", err)
		problem(w, http.StatusServiceUnavailable, "unavailable", "the event could not be published; retry")
		return false
	}
	return true
}

// send publishes msg about callID, stamped now.
func (s *Server) send(ctx context.Context, callID string, msg proto.Message) error {
	ev, err := events.New(Source, callID, msg, s.now())
	if err != nil {
		return fmt.Errorf("build event of call %s: %w", callID, err)
	}
	if err := s.pub.Publish(ctx, ev); err != nil {
		return fmt.Errorf("publish event of call %s: %w", callID, err)
	}
	return nil
}

var (
	codePattern   = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)
	metricPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.]{0,63}$`)
)

// checkMap validates agent-written keys and values: bounded, and free of
// CR, LF and NUL so nothing can ever be smuggled into a header.
func checkMap(field string, m map[string]string) error {
	if len(m) > maxEntries {
		return fmt.Errorf("%s: at most %d entries", field, maxEntries)
	}
	for k, v := range m {
		if k == "" || len(k) > maxKeyLen || strings.ContainsAny(k, "\r\n\x00") {
			return fmt.Errorf("%s: bad key %q", field, k)
		}
		if len(v) > maxValueLen || sipx.ValidateValue(v) != nil {
			return fmt.Errorf("%s.%s: value has CR, LF or NUL, or is over %d bytes", field, k, maxValueLen)
		}
	}
	return nil
}

func (s *Server) patchState(w http.ResponseWriter, r *http.Request) {
	v, ok := s.live(w, r)
	if !ok {
		return
	}
	// A JSON merge patch (RFC 7396) of string values: null deletes a key.
	var patch map[string]*string
	if !s.decode(w, r, opState, &patch) {
		return
	}
	msg := &batonv1.CallStateChanged{CallId: v.CallID, SetBy: RequestedBy, RequestId: uuid.NewString(), Set: map[string]string{}}
	for k, val := range patch {
		if val == nil {
			msg.Removed = append(msg.Removed, k)
		} else {
			msg.Set[k] = *val
		}
	}
	err := checkMap("state", msg.GetSet())
	if err == nil && len(patch) == 0 {
		err = errors.New("an empty patch")
	}
	for _, k := range msg.GetRemoved() {
		if err == nil && (k == "" || len(k) > maxKeyLen || strings.ContainsAny(k, "\r\n\x00")) {
			err = fmt.Errorf("state: bad key %q", k)
		}
	}
	if err != nil {
		s.reject(w, opState, RejectInvalidState, err)
		return
	}
	// The per-call caps, against the committed state: writes accepted but
	// not yet folded are not in it, so the fold checks again.
	table := s.tables.Current()
	if ex := table.CheckState(handoff.SizeOf(v.State), handoff.PatchedSize(v.State, msg.GetSet(), msg.GetRemoved())); ex != nil {
		s.metrics.reject(opState, ex.Reason)
		writeProblem(w, Problem{Type: "about:blank", Title: "call state limit", Status: http.StatusUnprocessableEntity,
			Detail: ex.Error(), Code: ex.Reason, Limit: &Limit{Name: ex.Limit, Max: ex.Max, Current: ex.Current, After: ex.After}})
		return
	}
	if !s.publish(w, r, v.CallID, msg) {
		return
	}
	writeJSON(w, http.StatusAccepted, Accepted{RequestID: msg.GetRequestId(), CallID: v.CallID})
}

// HandoffRequest is the body of POST /v1/calls/{id}/handoff.
type HandoffRequest struct {
	Destination string            `json:"destination"`
	Reason      string            `json:"reason"`
	Utterance   string            `json:"utterance"`
	Variables   map[string]string `json:"variables"`
	Headers     map[string]string `json:"headers"`
	// AfterMark names the agent's mark whose audio must play out before
	// the handoff is asked for; MarkTimeoutMS bounds that wait (nil:
	// DefaultMarkTimeout).
	AfterMark     string `json:"after_mark"`
	MarkTimeoutMS *int64 `json:"mark_timeout_ms"`
	// WhisperURL is audio for this handoff only (the agent's TTS of a
	// context summary), played to a warm transfer's destination before
	// the bridge; the destination's whisper_hosts must allow its host.
	WhisperURL string `json:"whisper_url"`
}

// maxWhisperURL bounds a whisper_url.
const maxWhisperURL = 2048

// Bounds of a handoff's wait for a mark.
const (
	DefaultMarkTimeout = 5 * time.Second
	MinMarkTimeout     = 100 * time.Millisecond
	MaxMarkTimeout     = 30 * time.Second
)

// markTimeout is the request's wait for its mark.
func (req HandoffRequest) markTimeout() time.Duration {
	if req.MarkTimeoutMS == nil {
		return DefaultMarkTimeout
	}
	return time.Duration(*req.MarkTimeoutMS) * time.Millisecond
}

func (s *Server) postHandoff(w http.ResponseWriter, r *http.Request) {
	v, ok := s.live(w, r)
	if !ok {
		return
	}
	var req HandoffRequest
	if !s.decode(w, r, opHandoff, &req) {
		return
	}
	if reason, err := req.check(); err != nil {
		s.reject(w, opHandoff, reason, err)
		return
	}
	msg := &batonv1.HandoffRequested{
		CallId: v.CallID, RequestId: uuid.NewString(), Destination: req.Destination, Reason: req.Reason,
		Utterance: oneLine(req.Utterance), Variables: req.Variables, Headers: req.Headers, RequestedBy: RequestedBy,
		AfterMark: req.AfterMark, WhisperUrl: req.WhisperURL,
	}
	table := s.tables.Current()
	allowed, code, detail := table.Allows(req.Destination)
	if allowed && table.MaxHandoffs > 0 && v.Handoffs >= table.MaxHandoffs {
		allowed, code = false, handoff.RefusedTooManyHandoffs
		detail = fmt.Sprintf("the call already started %d handoffs (max_handoffs_per_call %d)", v.Handoffs, table.MaxHandoffs)
	}
	if allowed && req.AfterMark != "" {
		// The request waits for its mark (or is published at once when
		// the mark already played, or no agent stream is connected).
		s.afterMark(w, r, v.CallID, msg, req.markTimeout())
		return
	}
	// A refused target is published too, at once (a refusal waits for no
	// mark): the router records it as a HandoffRefused event, so every
	// attempt is in the log.
	if !s.publish(w, r, v.CallID, msg) {
		return
	}
	if !allowed {
		writeProblem(w, Problem{Type: "about:blank", Title: "destination not allowed", Status: http.StatusForbidden,
			Detail: detail, Code: code, RequestID: msg.GetRequestId()})
		return
	}
	w.Header().Set("Location", "/v1/calls/"+v.CallID+"/handoff")
	writeJSON(w, http.StatusAccepted, Accepted{RequestID: msg.GetRequestId(), CallID: v.CallID})
}

// check validates a handoff request; on error it also returns the
// rejection reason.
func (req HandoffRequest) check() (string, error) {
	if len(req.Destination) > 256 || sipx.HasControl(req.Destination) {
		return RejectInvalidDestination, errors.New("destination: at most 256 bytes, no control characters (CR, LF, NUL…)")
	}
	if req.Reason != "" && !codePattern.MatchString(req.Reason) {
		return RejectInvalidReason, fmt.Errorf("reason %q: a machine code of letters, digits, '_', '.', ':' or '-'", req.Reason)
	}
	if len(req.Utterance) > maxValueLen {
		return RejectInvalidUtterance, fmt.Errorf("utterance: at most %d bytes", maxValueLen)
	}
	if sipx.HasControl(oneLine(req.Utterance)) {
		return RejectInvalidUtterance, errors.New("utterance: control characters other than line breaks and tabs (NUL…)")
	}
	if err := checkMap("variables", req.Variables); err != nil {
		return RejectInvalidVariable, err
	}
	if len(req.Headers) > maxEntries {
		return RejectInvalidHeader, fmt.Errorf("headers: at most %d entries", maxEntries)
	}
	for _, name := range slices.Sorted(maps.Keys(req.Headers)) {
		if err := sipx.ValidateCustom(name, req.Headers[name]); err != nil {
			return RejectInvalidHeader, fmt.Errorf("headers.%q: %w", name, err)
		}
	}
	if reason, err := req.checkWhisper(); err != nil {
		return reason, err
	}
	return req.checkMark()
}

// checkWhisper validates whisper_url: an absolute http(s) URL with a host
// and no user info, at most maxWhisperURL bytes. Whether the destination
// allows its host is the router's decision (handoff.WhisperHostAllowed).
func (req HandoffRequest) checkWhisper() (string, error) {
	if req.WhisperURL == "" {
		return "", nil
	}
	if len(req.WhisperURL) > maxWhisperURL || sipx.HasControl(req.WhisperURL) {
		return RejectInvalidWhisper, fmt.Errorf("whisper_url: at most %d bytes, no control characters", maxWhisperURL)
	}
	u, err := url.Parse(req.WhisperURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return RejectInvalidWhisper, errors.New("whisper_url: want an absolute http:// or https:// URL")
	}
	if u.User != nil {
		return RejectInvalidWhisper, errors.New("whisper_url: no user info (it would reach events and logs)")
	}
	return "", nil
}

// checkMark validates after_mark and mark_timeout_ms.
func (req HandoffRequest) checkMark() (string, error) {
	if len(req.AfterMark) > handoff.MaxMarkLen || sipx.HasControl(req.AfterMark) {
		return RejectInvalidMark, fmt.Errorf("after_mark: at most %d bytes, no control characters", handoff.MaxMarkLen)
	}
	if req.MarkTimeoutMS == nil {
		return "", nil
	}
	if req.AfterMark == "" {
		return RejectInvalidMark, errors.New("mark_timeout_ms: only with after_mark")
	}
	if d := req.markTimeout(); d < MinMarkTimeout || d > MaxMarkTimeout {
		return RejectInvalidMark, fmt.Errorf("mark_timeout_ms: %d: want %d to %d",
			*req.MarkTimeoutMS, MinMarkTimeout.Milliseconds(), MaxMarkTimeout.Milliseconds())
	}
	return "", nil
}

// oneLine turns the line breaks and tabs of free text (an utterance, as
// transcribed) into single spaces, so no CR or LF reaches an event.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n\t") {
		return s
	}
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\r' || r == '\n' || r == '\t' }), " ")
}

// MetricRequest is the body of POST /v1/calls/{id}/metrics.
type MetricRequest struct {
	Name  string            `json:"name"`
	Value *float64          `json:"value"`
	Tags  map[string]string `json:"tags"`
}

func (s *Server) postMetric(w http.ResponseWriter, r *http.Request) {
	v, ok := s.live(w, r)
	if !ok {
		return
	}
	var req MetricRequest
	if !s.decode(w, r, opMetrics, &req) {
		return
	}
	var err error
	switch {
	case !metricPattern.MatchString(req.Name):
		err = fmt.Errorf("name %q: a letter, then letters, digits, '_' or '.', at most 64", req.Name)
	case req.Value == nil:
		err = errors.New("value is required")
	case math.IsNaN(*req.Value) || math.IsInf(*req.Value, 0):
		err = errors.New("value must be finite")
	default:
		err = checkMap("tags", req.Tags)
	}
	if err != nil {
		s.reject(w, opMetrics, RejectInvalidMetric, err)
		return
	}
	msg := &batonv1.AgentMetric{CallId: v.CallID, Name: req.Name, Value: *req.Value, Tags: req.Tags, RequestId: uuid.NewString()}
	if !s.publish(w, r, v.CallID, msg) {
		return
	}
	writeJSON(w, http.StatusAccepted, Accepted{RequestID: msg.GetRequestId(), CallID: v.CallID})
}
