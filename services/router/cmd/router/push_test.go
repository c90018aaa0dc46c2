package main

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/router/internal/push"
)

const webhookSecret = "whsec-test"

// hookReceiver is an agent's webhook endpoint: it checks every request's
// signature, answers the very first one 500, and keeps, in order, the
// transitions it answered 200.
type hookReceiver struct {
	t        *testing.T
	mu       sync.Mutex
	tries    map[string]int
	received []push.Payload
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	// Baton-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">.
	sig := r.Header.Get(push.HeaderSignature)
	ts, v1, ok := strings.Cut(strings.TrimPrefix(sig, "t="), ",v1=")
	mac := hmac.New(sha256.New, []byte(webhookSecret))
	mac.Write([]byte(ts + "." + string(body)))
	want := hex.EncodeToString(mac.Sum(nil))
	unix, convErr := strconv.ParseInt(ts, 10, 64)
	if !ok || convErr != nil || !hmac.Equal([]byte(v1), []byte(want)) || time.Since(time.Unix(unix, 0)).Abs() > time.Minute {
		h.t.Errorf("bad signature %q for body %s", sig, body)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var p push.Payload
	if err := json.Unmarshal(body, &p); err != nil || r.Header.Get(push.HeaderIdempotencyKey) != p.ID {
		h.t.Errorf("bad body %s (Idempotency-Key %q): %v", body, r.Header.Get(push.HeaderIdempotencyKey), err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tries[p.ID]++
	if len(h.tries) == 1 && h.tries[p.ID] == 1 {
		w.WriteHeader(http.StatusInternalServerError) // the first try of all fails: retried
		return
	}
	h.received = append(h.received, p)
	w.WriteHeader(http.StatusOK)
}

// of returns "type id" of the transitions received for a call.
func (h *hookReceiver) of(callID string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, p := range h.received {
		if p.CallID == callID {
			out = append(out, p.Type+" "+p.ID)
		}
	}
	return out
}

// sseEvent is one server-sent event.
type sseEvent struct {
	ID, Event string
	Data      push.Payload
}

// stream opens GET /v1/calls/{id}/events (resuming after lastID when set)
// and delivers its events on the channel, closed when the stream ends.
func (s *service) stream(callID, lastID string) (*http.Response, <-chan sseEvent) {
	s.t.Helper()
	req, err := http.NewRequestWithContext(s.t.Context(), http.MethodGet, s.base+"/v1/calls/"+callID+"/events", nil)
	require.NoError(s.t, err)
	req.Header.Set("Authorization", "Bearer secret")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	require.Equal(s.t, http.StatusOK, resp.StatusCode)
	require.Equal(s.t, "text/event-stream", resp.Header.Get("Content-Type"))
	out := make(chan sseEvent, 64)
	go readEvents(s.t, resp.Body, out)
	return resp, out
}

// readEvents parses server-sent events from body onto out, closing both
// when the stream ends.
func readEvents(t *testing.T, body io.ReadCloser, out chan<- sseEvent) {
	defer close(out)
	defer func() { _ = body.Close() }()
	sc := bufio.NewScanner(body)
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.ID != "" {
				out <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			ev.ID = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			ev.Event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.Data); err != nil {
				t.Errorf("bad data line %q: %v", line, err)
			}
		}
	}
}

// take reads n events from an SSE stream.
func take(t *testing.T, c <-chan sseEvent, n int) []string {
	t.Helper()
	var out []string
	for len(out) < n {
		select {
		case ev, ok := <-c:
			require.True(t, ok, "the stream ended after %v", out)
			require.Equal(t, ev.ID, ev.Data.ID)
			require.Equal(t, ev.Event, ev.Data.Type)
			out = append(out, ev.Event+" "+ev.ID)
		case <-time.After(20 * time.Second):
			t.Fatalf("waited for %d events, got %v", n, out)
		}
	}
	return out
}

// ended waits for the stream to end (the call's last transition sent).
func ended(t *testing.T, c <-chan sseEvent) {
	t.Helper()
	select {
	case ev, ok := <-c:
		require.False(t, ok, "unexpected event %v", ev)
	case <-time.After(20 * time.Second):
		t.Fatal("the stream did not end")
	}
}

// idOf is the event id of a record.
func idOf(t *testing.T, rec *kgo.Record) string {
	t.Helper()
	ev, err := events.Decode(rec)
	require.NoError(t, err)
	return ev.ID
}

// TestPushedTransitionsOverSSEAndWebhooks: an SSE client and a webhook
// receiver see every transition of a REFER handoff, and of a failed warm
// transfer returned to the agent, in order, with the ids of the events in
// the log: HandoffRequested, HandoffCommand, the TransferOutcomes,
// CallEnded. The SSE client drops mid-handoff and resumes with
// Last-Event-ID, missing nothing and seeing nothing twice; the webhook's
// first try gets a 500 and is retried; every body's HMAC is checked.
func TestPushedTransitionsOverSSEAndWebhooks(t *testing.T) {
	hooks := &hookReceiver{t: t, tries: map[string]int{}}
	receiver := httptest.NewServer(hooks)
	t.Cleanup(receiver.Close)
	t.Setenv("BATON_TEST_WEBHOOK_SECRET", webhookSecret)
	brokers := kafkatest.NewCluster(t, 1)
	s := startService(t, brokers, fmt.Sprintf(`kafka:
  brokers: [%q]
  partitions: 1
metrics:
  listen: ""
api:
  listen: 127.0.0.1:0
  tokens_env: BATON_TEST_TOKENS
  stream_heartbeat: 1s
max_attempts: 1
on_all_failed: return_to_agent
destinations:
  - name: support
    route: sip:support@127.0.0.1:5090
    default: true
  - name: warm
    method: INVITE
    route: sip:+15550002222@127.0.0.1:5090
    encryption: udp_rtp
webhooks:
  - name: agent
    url: %s/hook
    secret_env: BATON_TEST_WEBHOOK_SECRET
    max_in_flight: 2
`, brokers[0], receiver.URL))

	// A REFER handoff that succeeds, then the call ends.
	s.produce("baton.calls", "refer-1", &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "sip-refer-1"}})
	s.live("refer-1")
	firstResp, first := s.stream("refer-1", "")
	code, body := s.call("POST", "/v1/calls/refer-1/handoff", `{"destination":"support"}`)
	require.Equal(t, 202, code, "%v", body)
	got := take(t, first, 2)
	require.NoError(t, firstResp.Body.Close()) // the client drops; it resumes after the command below
	requested := inLog(t, s, "baton.calls", "refer-1", events.TypeHandoffRequested)
	command := inLog(t, s, "baton.handoffs", "refer-1", events.TypeHandoffCommand)
	require.Equal(t, []string{"requested " + requested, "command_issued " + command}, got)

	outcome := func(callID, commandID string, method batonv1.Method, status batonv1.OutcomeStatus, sip int32) string {
		return idOf(t, s.produce("baton.transfers", callID, &batonv1.TransferOutcome{CommandId: commandID, CallId: callID,
			Status: status, Method: method, Destination: "support", SipCode: sip}))
	}
	accepted := outcome("refer-1", command, batonv1.Method_METHOD_REFER, batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
	progress := outcome("refer-1", command, batonv1.Method_METHOD_REFER, batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS, 180)
	require.Eventually(t, func() bool { // the view has folded them: the resumed stream replays them from its history
		_, b := s.call("GET", "/v1/calls/refer-1/handoff", "")
		return b["status"] == "executing"
	}, 20*time.Second, 10*time.Millisecond)
	resumedResp, resumed := s.stream("refer-1", command)
	defer func() { _ = resumedResp.Body.Close() }()
	succeeded := outcome("refer-1", command, batonv1.Method_METHOD_REFER, batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)
	end := idOf(t, s.produce("baton.calls", "refer-1", &batonv1.CallEnded{CallId: "refer-1"}))
	got = append(got, take(t, resumed, 4)...)
	ended(t, resumed)
	referWant := []string{"requested " + requested, "command_issued " + command, "accepted " + accepted,
		"progress " + progress, "succeeded " + succeeded, "call_ended " + end}
	require.Equal(t, referWant, got, "SSE")

	// A warm transfer that fails (486) and returns the call to the agent.
	s.produce("baton.calls", "warm-1", &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "sip-warm-1"}})
	s.live("warm-1")
	warmResp, warm := s.stream("warm-1", "")
	defer func() { _ = warmResp.Body.Close() }()
	code, body = s.call("POST", "/v1/calls/warm-1/handoff", `{"destination":"warm"}`)
	require.Equal(t, 202, code, "%v", body)
	gotWarm := take(t, warm, 2)
	warmCommand := inLog(t, s, "baton.handoffs", "warm-1", events.TypeHandoffCommand)
	failed := outcome("warm-1", warmCommand, batonv1.Method_METHOD_INVITE, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, 486)
	gotWarm = append(gotWarm, take(t, warm, 2)...)
	warmEnd := idOf(t, s.produce("baton.calls", "warm-1", &batonv1.CallEnded{CallId: "warm-1"}))
	gotWarm = append(gotWarm, take(t, warm, 1)...)
	ended(t, warm)
	warmWant := []string{"requested " + inLog(t, s, "baton.calls", "warm-1", events.TypeHandoffRequested),
		"command_issued " + warmCommand, "failed " + failed, "returned_to_agent " + failed + ":returned", "call_ended " + warmEnd}
	require.Equal(t, warmWant, gotWarm, "SSE")

	// The webhook receiver got the same, in the same order; its first
	// try (a 500) was retried.
	require.Eventually(t, func() bool { return len(hooks.of("refer-1")) == 6 && len(hooks.of("warm-1")) == 5 },
		20*time.Second, 10*time.Millisecond, "webhooks: %v %v", hooks.of("refer-1"), hooks.of("warm-1"))
	require.Equal(t, referWant, hooks.of("refer-1"), "webhooks")
	require.Equal(t, warmWant, hooks.of("warm-1"), "webhooks")
	hooks.mu.Lock()
	require.Equal(t, 2, hooks.tries[requested], "the first delivery (500) was tried again")
	hooks.mu.Unlock()
}

// inLog returns the id of the one event of a type about callID on topic.
func inLog(t *testing.T, s *service, topic, callID, typ string) string {
	t.Helper()
	var id string
	until(t, s.consume(topic), func(_ *kgo.Record, ev events.Event) bool {
		if ev.Subject == callID && ev.Type == typ {
			id = ev.ID
			return true
		}
		return false
	})
	return id
}
