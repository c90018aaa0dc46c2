package router

import (
	"bytes"
	"context"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/router/internal/config"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

const replayYAML = `
destinations:
  - name: support
    route: sip:support@pbx.example.com
    default: true
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
    when: caller_number == '+15551230001' && time.getHours() >= 12
    handoff: sales
  - name: billing
    when: reason == 'billing_dispute'
    handoff: billing
`

// TestReplayGivesTheSameCommands runs a router over a stream of calls,
// requests, state changes and failed outcomes (which cause fallbacks),
// then replays the recorded input through a fresh router with the same
// configuration and finds exactly the same output records.
func TestReplayGivesTheSameCommands(t *testing.T) {
	kcfg := kafka.DefaultConfig()
	kcfg.Partitions = 1
	kcfg.Brokers = kafkatest.NewCluster(t, 1, kcfg.Topics.All()...)
	c := config.Default("test")
	c.Kafka = kcfg
	require.NoError(t, pkgconfig.Parse("router.yaml", []byte(replayYAML), &c))
	table, err := c.Table()
	require.NoError(t, err)
	logger := slog.New(slog.DiscardHandler)
	prod, err := kgo.NewClient(kafka.ClientOpts(kcfg, logger)...)
	require.NoError(t, err)
	defer prod.Close()
	h := &harness{t: t, kcfg: kcfg, table: table, logger: logger, prod: prod}
	h.start("router-live")
	out := h.consumer(kgo.ReadCommitted())

	clock := time.Date(2025, 3, 1, 11, 59, 58, 0, time.UTC)
	publish := func(topic, callID string, msg proto.Message) events.Event {
		t.Helper()
		clock = clock.Add(time.Second)
		ev, err := events.New("baton/test", callID, msg, clock)
		require.NoError(t, err)
		rec, err := events.Encode(topic, ev)
		require.NoError(t, err)
		require.NoError(t, prod.ProduceSync(t.Context(), rec).FirstErr())
		return ev
	}
	command := func() *batonv1.HandoffCommand {
		_, cmd := decodeCommand(t, next(t, out, 1)[0])
		return cmd
	}
	fail := func(cmd *batonv1.HandoffCommand, code int32) {
		publish(kcfg.Topics.Transfers, cmd.GetCallId(), &batonv1.TransferOutcome{CommandId: cmd.GetCommandId(),
			CallId: cmd.GetCallId(), Status: batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, SipCode: code})
	}
	start := func(id, caller, callee string) {
		publish(kcfg.Topics.Calls, id, &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "sip-" + id},
			CallerNumber: caller, CalleeNumber: callee, Variables: map[string]string{"Intent": "billing"}})
	}

	// A VIP caller before noon: no rule hands off; after noon it does.
	start("early", "+15551230001", "+18005550100")
	require.Equal(t, time.Date(2025, 3, 1, 11, 59, 59, 0, time.UTC), clock)
	start("vip", "+15551230001", "+18005550100")
	cmd := command()
	require.Equal(t, "vip", cmd.GetCallId())
	require.Equal(t, "sales", cmd.GetDestination())
	require.Equal(t, []*batonv1.SipHeader{{Name: "X-Line", Value: "tollfree"}}, cmd.GetHeaders())
	// sales fails: billing, then the default, then a hangup.
	for _, want := range []string{"billing", "support", ""} {
		fail(cmd, 603)
		cmd = command()
		require.Equal(t, want, cmd.GetDestination())
	}
	require.Equal(t, batonv1.Method_METHOD_BYE, cmd.GetMethod())
	require.Equal(t, uint32(4), cmd.GetAttempt())

	// The agent writes state, then asks by reason; another asks for a
	// premium route and is refused.
	start("agent", "+15557770000", "+15558880000")
	publish(kcfg.Topics.Calls, "agent", &batonv1.CallStateChanged{Set: map[string]string{"tier": "gold"}})
	publish(kcfg.Topics.Calls, "agent", &batonv1.HandoffRequested{RequestId: "r1", Reason: "billing_dispute"})
	billing := command()
	require.Equal(t, "billing", billing.GetDestination())
	require.Equal(t, "tls_srtp", billing.GetEncryption(), "INVITE's default")
	start("greedy", "+15557770001", "+15558880000")
	publish(kcfg.Topics.Calls, "greedy", &batonv1.HandoffRequested{RequestId: "r2", Destination: "sip:+19005550100@premium.example"})
	refused := next(t, out, 1)[0]
	ev, err := events.Decode(refused)
	require.NoError(t, err)
	require.Equal(t, events.TypeHandoffRefused, ev.Type)
	start("plain", "+15557770002", "+15558880000")
	publish(kcfg.Topics.Calls, "plain", &batonv1.CallStateChanged{Set: map[string]string{"tier": "silver"}})
	publish(kcfg.Topics.Calls, "plain", &batonv1.HandoffRequested{RequestId: "r3"})
	plain := command()
	require.Equal(t, []*batonv1.SipHeader{{Name: "X-Intent", Value: "billing"}, {Name: "X-Tier", Value: "silver"}}, plain.GetHeaders())

	// The recorded output, from the start.
	live := next(t, h.consumer(kgo.ReadCommitted()), 7)

	// The recorded input: both topics, in event-time order.
	in, err := kgo.NewClient(kgo.SeedBrokers(kcfg.Brokers...), kgo.ConsumeTopics(kcfg.Topics.Calls, kcfg.Topics.Transfers),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	require.NoError(t, err)
	defer in.Close()
	log := next(t, in, 13)
	sort.SliceStable(log, func(i, j int) bool {
		ti, _ := events.Decode(log[i])
		tj, _ := events.Decode(log[j])
		return ti.Time.Before(tj.Time)
	})

	// A fresh router with the same configuration, fed the log.
	c2 := config.Default("test")
	c2.Kafka = kcfg
	require.NoError(t, pkgconfig.Parse("router.yaml", []byte(replayYAML), &c2))
	table2, err := c2.Table()
	require.NoError(t, err)
	fresh := &Router{fold: handoff.New(table2, logger), topic: kcfg.Topics.Handoffs, logger: logger}
	replayed, _ := fresh.handle(context.WithoutCancel(t.Context()), log)

	require.Len(t, replayed, len(live))
	for i := range live {
		require.Equal(t, live[i].Key, replayed[i].Key, "record %d", i)
		require.True(t, bytes.Equal(live[i].Value, replayed[i].Value), "record %d payload", i)
		require.Equal(t, headers(live[i]), headers(replayed[i]), "record %d headers", i)
		require.True(t, live[i].Timestamp.Equal(replayed[i].Timestamp), "record %d timestamp", i)
	}
}

func headers(rec *kgo.Record) map[string]string {
	out := map[string]string{}
	for _, h := range rec.Headers {
		out[h.Key] = string(h.Value)
	}
	return out
}
