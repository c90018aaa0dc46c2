package server

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
)

// TestEndOrphans writes what an earlier, killed run of ingress left on the
// calls topic, then starts a server on the same address: it ends exactly
// the calls that run answered and never ended, and refuses an INVITE that
// opens one of them again.
func TestEndOrphans(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 2, topics.All()...)
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Kafka.Brokers = brokers
	cfg.DrainTimeout = 0
	require.NoError(t, cfg.Validate())
	cl, err := kgo.NewClient(kafka.ClientOpts(cfg.Kafka, logger)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	srv, err := Listen(cfg, cl, logger, Options{})
	require.NoError(t, err)
	me := srv.LocalContact()
	require.NotEmpty(t, me)

	now := time.Now()
	put := func(call string, at time.Time, msg proto.Message) {
		ev, err := events.New(Source, call, msg, at)
		require.NoError(t, err)
		rec, err := events.Encode(topics.Calls, ev)
		require.NoError(t, err)
		require.NoError(t, cl.ProduceSync(t.Context(), rec).FirstErr())
	}
	started := func(call, contact string) *batonv1.CallStarted {
		return &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: call, LocalContact: contact}}
	}
	put("ancient", now.Add(-2*RestartLookback), started("ancient", me))
	put("answered", now.Add(-time.Minute), started("answered", me))
	put("done", now.Add(-time.Minute), started("done", me))
	put("elsewhere", now.Add(-time.Minute), started("elsewhere", "<sip:baton@192.0.2.7:5060>"))
	put("done", now.Add(-time.Second), &batonv1.CallEnded{CallId: "done", EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
	put("pending", now.Add(-time.Second), started("pending", me))

	n, err := srv.EndOrphans(t.Context(), now.Add(-RestartLookback))
	require.NoError(t, err)
	require.Equal(t, 2, n)

	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	// The INVITE the dead run published but never answered, again.
	sbc := newRawSBC(t)
	sbc.send(t, srv.Addr(), rawRequest(sip.INVITE, srv.Addr().Port, sbc.port, "pending", "z9hG4bK-again", "", offer, 1))
	res := sbc.read(t, 5*time.Second)
	require.NotNil(t, res)
	require.Equal(t, sip.StatusInternalServerError, res.StatusCode)

	// A new call is answered as ever.
	sbc.send(t, srv.Addr(), rawRequest(sip.INVITE, srv.Addr().Port, sbc.port, "fresh", "z9hG4bK-fresh", "", offer, 1))
	for res = sbc.read(t, 5*time.Second); res != nil && res.StatusCode < 200; res = sbc.read(t, 5*time.Second) {
	}
	require.NotNil(t, res)
	require.Equal(t, sip.StatusOK, res.StatusCode)

	ended := map[string]*batonv1.CallEnded{}
	consumer := newCalls(t, brokers, topics.Calls)
	// Six records of the dead run, two CallEnded of the restart, and the
	// fresh call's CallStarted.
	for range 9 {
		ev := consumer.next(t)
		if m, ok := ev.Data.(*batonv1.CallEnded); ok {
			require.NotContains(t, ended, ev.Subject)
			ended[ev.Subject] = m
		}
	}
	require.Len(t, ended, 3, "done's own end and the two ended at restart")
	for _, id := range []string{"answered", "pending"} {
		require.Contains(t, ended, id)
		require.Equal(t, batonv1.Party_PARTY_BATON, ended[id].GetEndedBy())
		require.Equal(t, reasonIngressRestart, ended[id].GetReason())
		require.Equal(t, id, ended[id].GetCallId())
	}
	require.Equal(t, batonv1.Party_PARTY_REMOTE, ended["done"].GetEndedBy())
}

// TestCallEndedOutlivesBrokerOutage answers a call, takes the broker
// away, ends the call with a BYE, brings a broker back on the same address
// after more than publish_timeout and expects the CallEnded there exactly
// once: franz-go either holds the produce until the broker is back or
// fails it, and then publishEnded produces it again.
func TestCallEndedOutlivesBrokerOutage(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	dir := t.TempDir() // the broker comes back with its data
	first, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir), kfake.SeedTopics(1, topics.All()...))
	require.NoError(t, err)
	addr := first.ListenAddrs()[0]
	_, portText, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	port, err := strconv.Atoi(portText)
	require.NoError(t, err)
	in := startIngress(t, []string{addr}, func(c *config.Config) { c.PublishTimeout = 300 * time.Millisecond })
	sbc := newRawSBC(t)
	dst := in.srv.Addr()

	sbc.send(t, dst, rawRequest(sip.INVITE, in.port, sbc.port, "outage", "z9hG4bK-outage-1", "", offer, 1))
	var ok *sip.Response
	for ok == nil || ok.StatusCode < 200 {
		ok = sbc.read(t, 10*time.Second)
		require.NotNil(t, ok)
	}
	require.Equal(t, sip.StatusOK, ok.StatusCode)
	tag, _ := ok.To().Params.Get("tag")
	sbc.send(t, dst, rawRequest(sip.ACK, in.port, sbc.port, "outage", "z9hG4bK-outage-ack", ";tag="+tag, "", 1))

	first.Close()
	sbc.send(t, dst, rawRequest(sip.BYE, in.port, sbc.port, "outage", "z9hG4bK-outage-bye", ";tag="+tag, "", 2))
	// The broker comes back a while after the publish_timeout.
	time.Sleep(time.Second)
	second, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir))
	require.NoError(t, err)
	t.Cleanup(second.Close)
	res := sbc.read(t, 20*time.Second)
	require.NotNil(t, res)
	require.Equal(t, sip.StatusOK, res.StatusCode)
	consumer := newCalls(t, second.ListenAddrs(), topics.Calls)
	require.Equal(t, events.TypeCallStarted, consumer.next(t).Type)
	ev := consumer.next(t)
	require.Equal(t, events.TypeCallEnded, ev.Type)
	require.Equal(t, "outage", ev.Subject)
	require.Equal(t, "BYE", ev.Data.(*batonv1.CallEnded).GetMethod())
	// Nothing else arrives: the retried record was written once.
	cl := consumer.cl
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	fs := cl.PollFetches(ctx)
	require.Empty(t, fs.Records(), "CallEnded written more than once")
	in.stop()
}
