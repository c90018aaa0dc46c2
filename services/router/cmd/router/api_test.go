package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/pkg/logtest"
	"github.com/baton-voice/baton/pkg/startup"
)

func TestAPIWithoutTokensExitsWithCode2(t *testing.T) {
	t.Setenv("BATON_TEST_NO_TOKENS", "")
	path := writeConfig(t, `api:
  listen: 127.0.0.1:0
  tokens_env: BATON_TEST_NO_TOKENS
destinations:
  - name: support
    route: sip:support@127.0.0.1:5090
`)
	var stderr logtest.Buffer
	require.Equal(t, startup.ExitConfig, run(t.Context(), []string{"--config", path}, &stderr))
	require.Contains(t, stderr.String(), "api.tokens_env: $BATON_TEST_NO_TOKENS holds no token")
}

// TestAgentAPIHandsOff wires the whole service: a call starts, the agent
// reads it over HTTP, writes state, asks for a handoff, and the command
// carries the state the agent wrote.
func TestAgentAPIHandsOff(t *testing.T) {
	t.Setenv("BATON_TEST_TOKENS", "secret-1,secret-2")
	brokers := kafkatest.NewCluster(t, 1)
	path := writeConfig(t, fmt.Sprintf(`kafka:
  brokers: [%q]
  partitions: 1
metrics:
  listen: ""
api:
  listen: 127.0.0.1:0
  tokens_env: BATON_TEST_TOKENS
destinations:
  - name: support
    route: sip:support@127.0.0.1:5090
    headers:
      X-Tier: "{state.tier}"
`, brokers[0]))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr logtest.Buffer
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, []string{"--config", path}, &stderr) }()
	addrRE := regexp.MustCompile(`"msg":"agent API listening".*?"addr":"([^"]+)"`)
	require.Eventually(t, func() bool {
		return strings.Contains(stderr.String(), "router started") && addrRE.MatchString(stderr.String())
	}, 20*time.Second, 10*time.Millisecond, "stderr: %s", stderr.String())
	base := "http://" + addrRE.FindStringSubmatch(stderr.String())[1]

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("baton.handoffs"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	require.NoError(t, err)
	defer cl.Close()
	ev, err := events.New("baton/ingress", "api-1", &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "sip-api-1"},
		CallerNumber: "+15551230001"}, time.Now())
	require.NoError(t, err)
	rec, err := events.Encode("baton.calls", ev)
	require.NoError(t, err)
	require.NoError(t, cl.ProduceSync(t.Context(), rec).FirstErr())

	call := func(method, path, body string) (int, map[string]any) {
		req, err := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer secret-2")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer func() { require.NoError(t, resp.Body.Close()) }()
		var out map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		return resp.StatusCode, out
	}
	// The call becomes readable once the router folded its start.
	require.Eventually(t, func() bool { code, _ := call("GET", "/v1/calls/api-1", ""); return code == 200 },
		20*time.Second, 10*time.Millisecond)
	_, body := call("GET", "/v1/calls/api-1", "")
	require.Equal(t, "+15551230001", body["caller_number"])

	code, _ := call("PATCH", "/v1/calls/api-1/state", `{"tier":"gold"}`)
	require.Equal(t, 202, code)
	require.Eventually(t, func() bool {
		_, b := call("GET", "/v1/calls/api-1", "")
		st, _ := b["state"].(map[string]any)
		return st["tier"] == "gold"
	}, 20*time.Second, 10*time.Millisecond)
	code, _ = call("POST", "/v1/calls/api-1/handoff", `{"reason":"billing_dispute"}`)
	require.Equal(t, 202, code)

	pollCtx, pollCancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer pollCancel()
	var got []*kgo.Record
	for len(got) == 0 && pollCtx.Err() == nil {
		got = append(got, cl.PollRecords(pollCtx, 1).Records()...)
	}
	require.Len(t, got, 1)
	out, err := events.Decode(got[0])
	require.NoError(t, err)
	cmd := out.Data.(*batonv1.HandoffCommand)
	require.Equal(t, "billing_dispute", cmd.GetReason())
	require.Equal(t, []*batonv1.SipHeader{{Name: "X-Tier", Value: "gold"}}, cmd.GetHeaders())
	require.Eventually(t, func() bool {
		_, b := call("GET", "/v1/calls/api-1/handoff", "")
		return b["status"] == "requested"
	}, 20*time.Second, 10*time.Millisecond)

	cancel()
	select {
	case code := <-exit:
		require.Equal(t, startup.ExitOK, code, "stderr: %s", stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatal("router did not stop")
	}
}
