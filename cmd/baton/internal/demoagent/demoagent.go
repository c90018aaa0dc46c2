// Package demoagent is the voice-AI agent of `baton dev`: a bot that
// speaks the Media Streams protocol (pkg/agentbot) and nothing of
// Baton's. For each call it greets the caller with a shipped recording,
// listens, and after a pause (or at once when the caller presses a key)
// says it is passing the call on and asks Baton's agent API for a
// handoff that waits until that sentence has played (after_mark). When
// the caller asked for a number (the X-Requested-Number variable), it
// asks for that number first; if Baton refuses it, it asks again and
// lets Baton's rules decide.
package demoagent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/baton-voice/baton/pkg/agentbot"
	"github.com/baton-voice/baton/pkg/pcm"
)

// Options shape the agent.
type Options struct {
	// API is the router's agent API base URL (http://host:port); Token
	// its bearer token.
	API, Token string
	// Greeting and Handoff are µ-law 8 kHz audio: what the agent says
	// first, and right before the handoff.
	Greeting, Handoff []byte
	// Listen is how long the agent listens after its greeting before it
	// hands off (a digit from the caller cuts it short).
	Listen time.Duration
	// Destination is the destination the handoff asks for (empty: the
	// router's rules and default decide).
	Destination string
	// NumberRoute turns the number a caller asked for (the call's
	// RequestedNumberParam variable, when it starts with '+') into the
	// route the agent asks for: "{number}" is replaced by it. Empty:
	// requested numbers are ignored.
	NumberRoute string
	Logger      *slog.Logger
}

// RequestedNumberParam is the customParameters key (the X-Requested-Number
// header as ingress names the call variable) of the number the caller
// asked to be put through to.
const RequestedNumberParam = "Requested-Number"

// Result is what the agent did on one call.
type Result struct {
	CallID, StreamSid string
	// Heard is how many 20 ms frames of the caller's audio reached it.
	Heard int
	// Digit is the key the caller pressed, if any.
	Digit string
	// Status is the agent API's answer to the handoff request (202).
	Status int
	// Asked is the route the agent asked for first, from the number the
	// caller requested; Refused is Baton's answer when it refused it
	// (the problem's detail), after which the agent asked again without
	// a destination.
	Asked, Refused string
	Err            error
}

// Agent is the demo agent; its Handler serves the streams.
type Agent struct {
	o      Options
	client *http.Client

	mu      sync.Mutex
	results []Result
}

// LoadWAV reads an 8 kHz mono 16-bit WAV file as µ-law.
func LoadWAV(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("demo audio: %w", err)
	}
	samples, err := pcm.ParseWAV(data)
	if err != nil {
		return nil, fmt.Errorf("demo audio %s: %w", path, err)
	}
	out := make([]byte, len(samples))
	for i, s := range samples {
		out[i] = pcm.ULaw(s)
	}
	return out, nil
}

// New returns the agent.
func New(o Options) *Agent {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Agent{o: o, client: &http.Client{Timeout: 5 * time.Second}}
}

// Handler accepts ingress's streams.
func (a *Agent) Handler() http.Handler { return &agentbot.Handler{Serve: a.serve} }

// Results returns what the agent did so far, one per call.
func (a *Agent) Results() []Result {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Result(nil), a.results...)
}

// chunk and speed are how the agent sends audio: 40 ms chunks at twice
// real time, as Pipecat does.
const (
	chunk = 320
	speed = 2
)

func (a *Agent) serve(ctx context.Context, s *agentbot.Session) {
	st := s.Start()
	r := Result{CallID: st.CallSid, StreamSid: st.StreamSid}
	log := a.o.Logger.With("call_id", st.CallSid, "stream_sid", st.StreamSid)
	heard := make(chan int, 1)
	go func() { // the caller's audio: a real agent would transcribe it
		n := 0
		for {
			select {
			case <-s.Media():
				n++
			case <-s.Stopped():
				heard <- n
				return
			}
		}
	}()
	defer func() {
		select {
		case r.Heard = <-heard:
		case <-time.After(time.Second):
		}
		a.mu.Lock()
		a.results = append(a.results, r)
		a.mu.Unlock()
	}()
	if r.Err = s.Play(ctx, a.o.Greeting, chunk, speed, "greeting"); r.Err != nil {
		return
	}
	// Listen once the greeting has played, until the pause ends or the
	// caller presses a key.
	if !a.await(s, "greeting") {
		return
	}
	select {
	case r.Digit = <-s.DTMF():
	case <-time.After(a.o.Listen):
	case <-s.Stopped():
		return
	}
	if r.Err = s.Play(ctx, a.o.Handoff, chunk, speed, "handoff"); r.Err != nil {
		return
	}
	reason := "demo_agent_done"
	if r.Digit != "" {
		reason = "caller_pressed_key"
	}
	if num := st.CustomParameters[RequestedNumberParam]; a.o.NumberRoute != "" && strings.HasPrefix(num, "+") {
		r.Asked = strings.ReplaceAll(a.o.NumberRoute, "{number}", num)
		status, err := a.handoff(ctx, st.CallSid, "caller_asked_for_number", r.Asked)
		if status != http.StatusForbidden {
			r.Status, r.Err = status, err
			log.Info("demo agent asked for the caller's number", "route", r.Asked, "status", r.Status, "err", r.Err)
			<-s.Stopped()
			return
		}
		r.Refused = err.Error()
		log.Info("Baton refused the caller's number; asking again", "route", r.Asked, "err", err)
	}
	r.Status, r.Err = a.handoff(ctx, st.CallSid, reason, a.o.Destination)
	log.Info("demo agent asked for a handoff", "status", r.Status, "err", r.Err)
	<-s.Stopped()
}

// await waits for the mark named name to come back (its audio played).
func (a *Agent) await(s *agentbot.Session, name string) bool {
	for {
		select {
		case m := <-s.Marks():
			if m == name {
				return true
			}
		case <-s.Stopped():
			return false
		case <-time.After(30 * time.Second):
			return false
		}
	}
}

// handoff asks the agent API for the call's handoff, to go out once the
// handoff sentence has played.
// destination is a destination name or a route; empty lets Baton decide.
func (a *Agent) handoff(ctx context.Context, callID, reason, destination string) (int, error) {
	req := map[string]any{"reason": reason, "after_mark": "handoff", "utterance": "connecting you to a person now"}
	if destination != "" {
		req["destination"] = destination
	}
	body, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, a.o.API+"/v1/calls/"+url.PathEscape(callID)+"/handoff",
		bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	hr.Header.Set("Authorization", "Bearer "+a.o.Token)
	hr.Header.Set("Content-Type", "application/json")
	res, err := a.client.Do(hr)
	if err != nil {
		return 0, fmt.Errorf("handoff request: %w", err)
	}
	defer func() { _ = res.Body.Close() }()
	msg, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusAccepted {
		// A problem+json answer names its code (number_denied, ...).
		var problem struct {
			Code string `json:"code"`
		}
		if json.Unmarshal(msg, &problem) == nil && problem.Code != "" {
			return res.StatusCode, fmt.Errorf("handoff request: %s: %s", res.Status, problem.Code)
		}
		return res.StatusCode, fmt.Errorf("handoff request: %s: %s", res.Status, bytes.TrimSpace(msg))
	}
	return res.StatusCode, nil
}
