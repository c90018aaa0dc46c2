package main

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/logtest"
	"github.com/baton-voice/baton/pkg/startup"
)

// service is the whole router, run by a test on a kfake cluster with the
// agent API on (token "secret").
type service struct {
	t       *testing.T
	base    string
	brokers []string
	prod    *kgo.Client
	stderr  *logtest.Buffer
}

// startService runs the router with the config doc until the test ends;
// doc must enable the API with tokens_env BATON_TEST_TOKENS.
func startService(t *testing.T, brokers []string, doc string) *service {
	t.Helper()
	t.Setenv("BATON_TEST_TOKENS", "secret")
	path := writeConfig(t, doc)
	ctx, cancel := context.WithCancel(t.Context())
	stderr := &logtest.Buffer{}
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, []string{"--config", path}, stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-exit:
			require.Equal(t, startup.ExitOK, code, "stderr: %s", stderr.String())
		case <-time.After(20 * time.Second):
			t.Error("router did not stop")
		}
	})
	addrRE := regexp.MustCompile(`"msg":"agent API listening".*?"addr":"([^"]+)"`)
	require.Eventually(t, func() bool {
		return strings.Contains(stderr.String(), "router started") && addrRE.MatchString(stderr.String())
	}, 20*time.Second, 10*time.Millisecond, "stderr: %s", stderr.String())
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	return &service{t: t, base: "http://" + addrRE.FindStringSubmatch(stderr.String())[1], brokers: brokers, prod: prod, stderr: stderr}
}

// produce writes msg about callID to topic and returns its record.
func (s *service) produce(topic, callID string, msg proto.Message) *kgo.Record {
	s.t.Helper()
	ev, err := events.New("baton/test", callID, msg, time.Now())
	require.NoError(s.t, err)
	rec, err := events.Encode(topic, ev)
	require.NoError(s.t, err)
	res := s.prod.ProduceSync(s.t.Context(), rec)
	require.NoError(s.t, res.FirstErr())
	return res[0].Record
}

// call makes an API request and decodes the JSON answer.
func (s *service) call(method, path, body string) (int, map[string]any) {
	s.t.Helper()
	req, err := http.NewRequestWithContext(s.t.Context(), method, s.base+path, strings.NewReader(body))
	require.NoError(s.t, err)
	req.Header.Set("Authorization", "Bearer secret")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	defer func() { require.NoError(s.t, resp.Body.Close()) }()
	var out map[string]any
	require.NoError(s.t, json.NewDecoder(resp.Body).Decode(&out))
	return resp.StatusCode, out
}

// live waits until the API reads the call.
func (s *service) live(callID string) {
	s.t.Helper()
	require.Eventually(s.t, func() bool { code, _ := s.call("GET", "/v1/calls/"+callID, ""); return code == 200 },
		20*time.Second, 10*time.Millisecond, "stderr: %s", s.stderr.String())
}

// consume returns a read-committed consumer of topics from their start.
func (s *service) consume(topics ...string) *kgo.Client {
	s.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	require.NoError(s.t, err)
	s.t.Cleanup(cl.Close)
	return cl
}

// until polls cl until pick has found what it wants (it returns true), or
// fails the test after 20 s.
func until(t *testing.T, cl *kgo.Client, pick func(rec *kgo.Record, ev events.Event) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		for _, rec := range cl.PollFetches(ctx).Records() {
			ev, err := events.Decode(rec)
			require.NoError(t, err)
			if pick(rec, ev) {
				return
			}
		}
	}
	t.Fatal("the record looked for never came")
}
