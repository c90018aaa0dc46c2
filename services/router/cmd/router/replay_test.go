package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/pkg/logtest"
	"github.com/baton-voice/baton/pkg/startup"
)

// replayDestinations is the live router's configuration below the kafka
// section. {default} is where the test puts `default: true`.
const replayDestinations = `destinations:
  - name: support
    route: sip:support@pbx.example.com
    headers:
      X-Intent: "{intent}"
      X-Tier: "{state.tier}"
  - name: sales
    route: sip:+15550001111@trunk.example.com
    fallback: [billing]
    headers:
      X-Line: "{line}"
  - name: billing
    method: INVITE
    route: tel:+15550002222
  - name: desk
    route: sip:desk@pbx.example.com
    headers:
      X-Intent: "{intent}"
      X-Queue: "desk"
allowlist:
  routes: ["sip:*@pbx.example.com"]
max_attempts: 4
rules:
  - name: branch
    when: callee_number.startsWith('+1800')
    set:
      variables: {line: tollfree}
    continue: true
  - name: vip
    when: caller_number == '+15551230001'
    handoff: sales
`

// replayConfig is the configuration with def as the default destination.
func replayConfig(t *testing.T, brokers []string, def string) string {
	t.Helper()
	doc := fmt.Sprintf("kafka:\n  brokers: [%q]\n  partitions: 1\ngroup: replay-test\ntransactional_id: replay-test\n"+
		"reload:\n  poll_interval: 0s\n", brokers[0]) + replayDestinations
	doc = strings.Replace(doc, "  - name: "+def+"\n", "  - name: "+def+"\n    default: true\n", 1)
	require.Contains(t, doc, "default: true")
	return writeConfig(t, doc)
}

// recordLive runs the router service against Kafka through calls that
// hand off by rule (with fallbacks after failures), by the agent's request
// to the default, and a refused request; it returns every record of the
// three topics, as `baton export` would read them.
func recordLive(t *testing.T) (log []*kgo.Record, configPath string, brokers []string) {
	t.Helper()
	kcfg := kafka.DefaultConfig()
	brokers = kafkatest.NewCluster(t, 1, kcfg.Topics.All()...)
	configPath = replayConfig(t, brokers, "support")
	ctx, cancel := context.WithCancel(t.Context())
	var stderr logtest.Buffer
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, []string{"--config", configPath}, &stderr) }()
	defer func() {
		cancel()
		select {
		case code := <-exit:
			require.Equal(t, startup.ExitOK, code, "stderr: %s", stderr.String())
		case <-time.After(20 * time.Second):
			t.Fatal("router did not stop")
		}
	}()
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "router started") },
		20*time.Second, 10*time.Millisecond, "stderr: %s", stderr.String())

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(kcfg.Topics.Handoffs),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	require.NoError(t, err)
	defer cl.Close()
	clock := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	publish := func(topic, callID string, msg proto.Message) {
		t.Helper()
		clock = clock.Add(time.Second)
		ev, err := events.New("baton/test", callID, msg, clock)
		require.NoError(t, err)
		rec, err := events.Encode(topic, ev)
		require.NoError(t, err)
		require.NoError(t, cl.ProduceSync(t.Context(), rec).FirstErr())
	}
	next := func() events.Event {
		t.Helper()
		pctx, pcancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer pcancel()
		var got []*kgo.Record
		for len(got) == 0 && pctx.Err() == nil {
			got = cl.PollRecords(pctx, 1).Records()
		}
		require.Len(t, got, 1, "stderr: %s", stderr.String())
		ev, err := events.Decode(got[0])
		require.NoError(t, err)
		return ev
	}
	outcome := func(ev events.Event, status batonv1.OutcomeStatus, code int32) {
		cmd := ev.Data.(*batonv1.HandoffCommand)
		publish(kcfg.Topics.Transfers, cmd.GetCallId(), &batonv1.TransferOutcome{CommandId: cmd.GetCommandId(),
			CallId: cmd.GetCallId(), Destination: cmd.GetDestination(), Status: status, SipCode: code})
	}
	start := func(id, caller, callee string) {
		publish(kcfg.Topics.Calls, id, &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "sip-" + id},
			CallerNumber: caller, CalleeNumber: callee, Variables: map[string]string{"Intent": "billing"}})
	}

	// A VIP: sales by rule, then billing, then the default, which answers.
	start("vip", "+15551230001", "+18005550100")
	cmd := next()
	require.Equal(t, "sales", cmd.Data.(*batonv1.HandoffCommand).GetDestination())
	for _, want := range []string{"billing", "support"} {
		outcome(cmd, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, 603)
		cmd = next()
		require.Equal(t, want, cmd.Data.(*batonv1.HandoffCommand).GetDestination())
	}
	outcome(cmd, batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)
	// The agent writes state and asks for the default.
	start("agent", "+15557770000", "+15558880000")
	publish(kcfg.Topics.Calls, "agent", &batonv1.CallStateChanged{Set: map[string]string{"tier": "gold"}})
	publish(kcfg.Topics.Calls, "agent", &batonv1.HandoffRequested{RequestId: "r1"})
	require.Equal(t, "support", next().Data.(*batonv1.HandoffCommand).GetDestination())
	// A request for a premium route is refused.
	start("greedy", "+15557770001", "+15558880000")
	publish(kcfg.Topics.Calls, "greedy", &batonv1.HandoffRequested{RequestId: "r2", Destination: "sip:+19005550100@premium.example"})
	require.Equal(t, events.TypeHandoffRefused, next().Type)

	// Everything, topic by topic, as an export reads it.
	all, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(kcfg.Topics.All()...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	require.NoError(t, err)
	defer all.Close()
	const total = 6 + 5 + 3 // calls, handoffs, transfers
	pctx, pcancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer pcancel()
	for len(log) < total && pctx.Err() == nil {
		log = append(log, all.PollFetches(pctx).Records()...)
	}
	require.Len(t, log, total)
	return log, configPath, brokers
}

func writeExport(t *testing.T, recs []*kgo.Record) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	w := events.NewNDJSONWriter(&buf)
	for _, r := range recs {
		require.NoError(t, w.Write(r))
	}
	return &buf
}

func readDecisions(t *testing.T, out *bytes.Buffer) []*kgo.Record {
	t.Helper()
	for _, l := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		var line struct {
			Event json.RawMessage `json:"event"`
		}
		require.NoError(t, json.Unmarshal(l, &line))
		require.NotEmpty(t, line.Event, "decoded event for readers")
	}
	var recs []*kgo.Record
	r := events.NewNDJSONReader(bytes.NewReader(out.Bytes()))
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return recs
		}
		require.NoError(t, err)
		require.Equal(t, int64(-1), rec.Offset)
		rec.Partition, rec.Offset = 0, 0
		recs = append(recs, rec)
	}
}

// TestReplayModeReDecidesARecordedLog records a live router's input and
// output, replays the export through `router replay`, and finds the same
// commands byte for byte with the same config; with another default
// destination, the commands that went to the default change accordingly
// and nothing else does.
func TestReplayModeReDecidesARecordedLog(t *testing.T) {
	log, configPath, brokers := recordLive(t)
	var live []*kgo.Record
	for _, r := range log {
		if r.Topic == "baton.handoffs" {
			live = append(live, r)
		}
	}
	require.Len(t, live, 5)

	replayWith := func(t *testing.T, path string) []*kgo.Record {
		t.Helper()
		var out, stderr bytes.Buffer
		code := replay(t.Context(), []string{"--config", path}, writeExport(t, log), &out, &stderr)
		require.Equal(t, startup.ExitOK, code, "stderr: %s", stderr.String())
		return readDecisions(t, &out)
	}

	t.Run("same config gives the same records", func(t *testing.T) {
		got := replayWith(t, configPath)
		require.Len(t, got, len(live))
		for i := range live {
			require.Equal(t, "baton.handoffs", got[i].Topic)
			require.Equal(t, live[i].Key, got[i].Key, "record %d", i)
			require.True(t, bytes.Equal(live[i].Value, got[i].Value), "record %d payload", i)
			require.Equal(t, live[i].Headers, got[i].Headers, "record %d headers", i)
			require.True(t, live[i].Timestamp.Equal(got[i].Timestamp), "record %d timestamp", i)
		}
	})

	t.Run("another default destination changes the default's commands", func(t *testing.T) {
		got := replayWith(t, replayConfig(t, brokers, "desk"))
		require.Len(t, got, len(live))
		changed := 0
		for i := range live {
			want, err := events.Decode(live[i])
			require.NoError(t, err)
			ev, err := events.Decode(got[i])
			require.NoError(t, err)
			require.Equal(t, want.ID, ev.ID, "same trigger, same command id")
			wantCmd, ok := want.Data.(*batonv1.HandoffCommand)
			if !ok || wantCmd.GetDestination() != "support" {
				require.True(t, bytes.Equal(live[i].Value, got[i].Value), "record %d (%s) unchanged", i, want.Type)
				continue
			}
			changed++
			cmd := ev.Data.(*batonv1.HandoffCommand)
			require.Equal(t, "desk", cmd.GetDestination())
			require.Equal(t, "sip:desk@pbx.example.com", cmd.GetRoute())
			require.Equal(t, wantCmd.GetAttempt(), cmd.GetAttempt())
			require.Equal(t, []*batonv1.SipHeader{{Name: "X-Intent", Value: "billing"}, {Name: "X-Queue", Value: "desk"}}, cmd.GetHeaders())
		}
		require.Equal(t, 2, changed, "the vip's third attempt and the agent's request")
	})
}

func TestReplayModeRejectsBadInput(t *testing.T) {
	path := writeConfig(t, "destinations:\n  - name: support\n    route: sip:support@127.0.0.1:5090\n")
	for _, tc := range []struct {
		name  string
		args  []string
		input string
		code  int
		want  string
	}{
		{name: "not NDJSON", args: []string{"--config", path}, input: "{\"topic\":\"baton.calls\"}\nnot json\n", code: startup.ExitFailed, want: "line 2"},
		{name: "not an export", args: []string{"--config", path}, input: "{\"key\":\"x\"}\n", code: startup.ExitFailed, want: "not a baton export"},
		{name: "bad config", args: []string{"--config", writeConfig(t, "destinations: []\n")}, code: startup.ExitConfig, want: "at least one destination"},
		{name: "stray argument", args: []string{"--config", path, "extra"}, code: startup.ExitConfig, want: `unexpected argument "extra"`},
		{name: "empty input decides nothing", args: []string{"--config", path}, code: startup.ExitOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, stderr bytes.Buffer
			code := replay(t.Context(), tc.args, strings.NewReader(tc.input), &out, &stderr)
			require.Equal(t, tc.code, code, "stderr: %s", stderr.String())
			require.Contains(t, stderr.String(), tc.want)
			if tc.code != startup.ExitOK || tc.want == "" {
				require.Empty(t, out.String())
			}
		})
	}
}
