package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/agentbot"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// freeLoopbackUDP is a loopback UDP port that was free a moment ago.
func freeLoopbackUDP(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	port := c.LocalAddr().(*net.UDPAddr).Port
	require.NoError(t, c.Close())
	return port
}

// postOutbound is POST /v1/calls with body; the status and the JSON
// answer.
func postOutbound(t *testing.T, api, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, api+"/v1/calls", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { require.NoError(t, res.Body.Close()) }()
	data, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(data, &out), "%s", data)
	return res.StatusCode, out
}

// TestOutboundCallThroughTheAPI is issue 20's first "done when" on the
// whole pipeline (real binaries, the broker over TCP): the agent API
// refuses a premium number with a 403 problem, and places an allowed
// call; ingress sends the INVITE with the rendered X- headers to a SIPp
// UAS whose regexps check them (it exits 1 otherwise), the answered call
// streams the called party's speech to the test bot, and its events
// (progress, CallStarted direction outbound, CallEnded) are on
// baton.calls; while it is up, GET /v1/calls/{id} reads it, and the
// agent's handoff REFERs the called party (transfer's outcome SUCCEEDED).
func TestOutboundCallThroughTheAPI(t *testing.T) {
	const token = "outbound-e2e-token"
	sipp, err := exec.LookPath("sipp")
	require.NoError(t, err, "SIPp is required: install Debian's sip-tester")
	uasPort := freeLoopbackUDP(t)
	sessions := make(chan *agentbot.Session, 2)
	bot := httptest.NewServer(&agentbot.Handler{Sessions: sessions})
	t.Cleanup(bot.Close)
	s := startStackTuned(t, func(o *Options) {
		o.AgentURL = "ws" + strings.TrimPrefix(bot.URL, "http") + "/media"
		o.APIToken = token
		o.OutboundTarget = "127.0.0.1:" + strconv.Itoa(uasPort)
	})

	// The called party: answers, checks the X- headers, speaks, takes the
	// REFER of the handoff, NOTIFYs its progress, hangs up.
	var out bytes.Buffer
	uas := exec.CommandContext(t.Context(), sipp, "-sf", filepath.Join(repoRoot(t), "deploy", "sipp", "outbound_answer_refer.xml"),
		"-i", "127.0.0.1", "-p", strconv.Itoa(uasPort), "-mi", "127.0.0.1", "-mp", strconv.Itoa(freeLoopbackUDP(t)&^1),
		"-m", "1", "-timeout", "60s", "-timeout_error", "-nostdin")
	uas.Stdout, uas.Stderr = &out, &out
	require.NoError(t, uas.Start())
	done := make(chan error, 1)
	go func() { done <- uas.Wait() }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = uas.Process.Kill()
			<-done
		}
	})

	status, denied := postOutbound(t, s.RouterAPI, token, `{"trunk":"demo-sbc","to":"+15559001234","variables":{"campaign":"renewals"}}`)
	require.Equal(t, http.StatusForbidden, status, denied)
	require.Equal(t, "number_denied", denied["code"])
	require.Contains(t, denied["detail"], "+1555900")

	status, accepted := postOutbound(t, s.RouterAPI, token,
		`{"trunk":"demo-sbc","to":"+15551234567","agent":"demo-agent","variables":{"campaign":"renewals"}}`)
	require.Equal(t, http.StatusAccepted, status, accepted)
	callID, _ := accepted["call_id"].(string)
	require.NotEmpty(t, callID)

	var session *agentbot.Session
	select {
	case session = <-sessions:
	case <-time.After(30 * time.Second):
		t.Fatal("the outbound call's audio never reached the agent")
	}
	require.Equal(t, callID, session.Start().CallSid)
	// Answered, it is a call of the agent API like an inbound one.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.RouterAPI+"/v1/calls/"+callID, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var call map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&call))
	require.NoError(t, res.Body.Close())
	require.Equal(t, http.StatusOK, res.StatusCode, call)
	require.Equal(t, "+15551234567", call["callee_number"])
	require.Equal(t, "renewals", call["variables"].(map[string]any)["campaign"])
	speech := 0
	for speech < 25 {
		select {
		case f := <-session.Media():
			if !bytes.Equal(f, bytes.Repeat([]byte{0xff}, len(f))) {
				speech++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the agent heard %d frames of the called party's speech", speech)
		}
	}
	// The agent hands the call off like an inbound one: transfer REFERs
	// the called party in the dialog ingress's INVITE made.
	hreq, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.RouterAPI+"/v1/calls/"+callID+"/handoff",
		strings.NewReader(`{"reason":"caller_asked"}`))
	require.NoError(t, err)
	hreq.Header.Set("Authorization", "Bearer "+token)
	hres, err := http.DefaultClient.Do(hreq)
	require.NoError(t, err)
	require.NoError(t, hres.Body.Close())
	require.Equal(t, http.StatusAccepted, hres.StatusCode)
	select {
	case err := <-done:
		done <- err
		require.NoError(t, err, "sipp (the called party) failed:\n%s", out.String())
	case <-time.After(30 * time.Second):
		t.Fatal("sipp did not finish")
	}

	// The call's story on baton.calls, in order.
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.BrokerAddr), kgo.ConsumeTopics("baton.calls"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var story []string
	for ctx.Err() == nil && !slices.Contains(story, events.TypeCallEnded) {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			ev, err := events.Decode(r)
			if err != nil || ev.Subject != callID {
				return
			}
			switch m := ev.Data.(type) {
			case *batonv1.OutboundCallProgress:
				story = append(story, m.GetStatus().String())
			case *batonv1.CallStarted:
				require.Equal(t, batonv1.CallDirection_CALL_DIRECTION_OUTBOUND, m.GetDirection())
				require.Equal(t, "demo-sbc", m.GetTrunk())
				story = append(story, ev.Type)
			case *batonv1.OutboundCallRequested, *batonv1.CallEnded:
				story = append(story, ev.Type)
			}
		})
	}
	require.Equal(t, []string{
		events.TypeOutboundRequested, "OUTBOUND_STATUS_TRYING", "OUTBOUND_STATUS_RINGING",
		events.TypeCallStarted, "OUTBOUND_STATUS_ANSWERED", events.TypeCallEnded,
	}, story)

	// The handoff succeeded: the called party's final NOTIFY said 200.
	tr, err := kgo.NewClient(kgo.SeedBrokers(s.BrokerAddr), kgo.ConsumeTopics("baton.transfers"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer tr.Close()
	var outcome *batonv1.TransferOutcome
	for ctx.Err() == nil && outcome.GetStatus() != batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED {
		tr.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if ev, err := events.Decode(r); err == nil && ev.Subject == callID {
				if o, ok := ev.Data.(*batonv1.TransferOutcome); ok {
					outcome = o
				}
			}
		})
	}
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, outcome.GetStatus(), "%v", outcome)
	require.Equal(t, batonv1.Method_METHOD_REFER, outcome.GetMethod())
}
