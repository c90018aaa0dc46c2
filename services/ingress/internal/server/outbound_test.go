package server

import (
	"context"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
)

// startSIPpUAS runs a deploy/sipp scenario as the called party, listening
// on a free loopback port, for calls calls; it returns the port.
func startSIPpUAS(t *testing.T, scenario string, calls int) (int, *sipp) {
	t.Helper()
	bin := sippBin(t)
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "..", "deploy", "sipp"))
	require.NoError(t, err)
	port := freeUDPPort(t)
	s := &sipp{tmp: t.TempDir(), done: make(chan error, 1)}
	s.cmd = exec.CommandContext(t.Context(), bin,
		"-sf", filepath.Join(dir, scenario),
		"-i", "127.0.0.1", "-p", strconv.Itoa(port),
		"-mi", "127.0.0.1", "-mp", strconv.Itoa(freeUDPPort(t)&^1),
		"-m", strconv.Itoa(calls),
		"-timeout", "60s", "-timeout_error",
		"-trace_err", "-error_file", filepath.Join(s.tmp, "errors.log"),
		"-trace_msg", "-message_file", filepath.Join(s.tmp, "messages.log"),
		"-nostdin")
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	require.NoError(t, s.cmd.Start())
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-s.done:
			s.done <- err
		default:
			_ = s.cmd.Process.Kill()
			s.done <- <-s.done
		}
		if t.Failed() {
			t.Logf("sipp output:\n%s", s.out.String())
			for _, f := range []string{"messages.log", "errors.log"} {
				if b, err := exec.Command("cat", filepath.Join(s.tmp, f)).Output(); err == nil {
					t.Logf("%s:\n%s", f, b)
				}
			}
		}
	})
	return port, s
}

// withOutbound gives ingress the trunk "carrier" (loopback) and its
// outbound trunk to the SIPp UAS on port, with the agent sales-bot at url
// (named by calls, never a default).
func withOutbound(port, maxCalls int, group, url string) func(*config.Config) {
	return func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "carrier", Sources: []string{"127.0.0.1"}}}
		c.Outbound = config.Outbound{Group: group, Trunks: []config.OutboundTrunk{{
			Name: "carrier", Target: "127.0.0.1:" + strconv.Itoa(port), Domain: "carrier.example", MaxCalls: maxCalls,
		}}}
		if url != "" {
			c.Agents = []config.Agent{{Name: "sales-bot", URL: url,
				Auth: config.AgentAuth{Header: "Authorization", Env: "BATON_TEST_AGENT_AUTH"}}}
		}
	}
}

// awaitGroup waits until the outbound group is stable with a member that
// holds the calls topic, so what the tests time is the placing, not the
// group's forming (which a loaded machine may take long over).
func awaitGroup(t *testing.T, brokers []string, group string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		described, err := adm.DescribeGroups(ctx, group)
		if err == nil {
			if g, ok := described[group]; ok && g.State == "Stable" && len(g.Members) == 1 {
				if a, ok := g.Members[0].Assigned.AsConsumer(); ok && len(a.Topics) > 0 {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the outbound group %s never formed", group)
		case <-tick.C:
		}
	}
}

// requester publishes OutboundCallRequested events as the router's API
// does.
type requester struct {
	cl    *kgo.Client
	topic string
}

func newRequester(t *testing.T, brokers []string, topic string) *requester {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return &requester{cl: cl, topic: topic}
}

// request publishes a call to to, at time at, and returns its id.
func (r *requester) request(t *testing.T, id, trunk, to string, answer time.Duration, at time.Time) string {
	t.Helper()
	msg := &batonv1.OutboundCallRequested{
		CallId: id, RequestId: "req-" + id, Trunk: trunk, To: to, From: "+15550001111",
		Headers: []*batonv1.SipHeader{
			{Name: "X-Baton-Call", Value: "baton-0190f3a2-7c1e-7b3d-9a41-5c0e2f6d8b10"},
			{Name: "X-Campaign", Value: "renewals"},
		},
		Variables: map[string]string{"campaign": "renewals"}, Agent: "sales-bot",
		AnswerTimeout: durationpb.New(answer), RequestedBy: "agent-api",
	}
	ev, err := events.New("baton/router", id, msg, at)
	require.NoError(t, err)
	rec, err := events.Encode(r.topic, ev)
	require.NoError(t, err)
	require.NoError(t, r.cl.ProduceSync(t.Context(), rec).FirstErr())
	return id
}

// ofCall reads the calls topic up to the next event of call id that is
// not the request itself.
func ofCall(t *testing.T, c *calls, id string) events.Event {
	t.Helper()
	for {
		r := c.nextAny(t)
		if r.Subject == id && r.Type != events.TypeOutboundRequested {
			return r
		}
	}
}

// nextAny is calls.next without its check of the source (the requests
// come from the router).
func (c *calls) nextAny(t *testing.T) events.Event {
	t.Helper()
	for len(c.pending) == 0 {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		fs := c.cl.PollFetches(ctx)
		cancel()
		require.NoError(t, t.Context().Err())
		require.NoError(t, fs.Err0(), "no event on the calls topic")
		c.pending = append(c.pending, fs.Records()...)
	}
	rec := c.pending[0]
	c.pending = c.pending[1:]
	ev, err := events.Decode(rec)
	require.NoError(t, err)
	return ev
}

func progressOf(t *testing.T, ev events.Event) *batonv1.OutboundCallProgress {
	t.Helper()
	require.Equal(t, events.TypeOutboundProgress, ev.Type)
	return ev.Data.(*batonv1.OutboundCallProgress)
}

// TestOutboundCallAnsweredStreamsToItsAgent: over real SIP, an outbound
// call with X- headers (SIPp's regexps check them, or it exits 1) is
// answered, becomes a Baton call (CallStarted direction outbound, its
// dialog from Baton's side), streams the called party's audio to the
// agent the request named, and ends with the called party's BYE.
func TestOutboundCallAnsweredStreamsToItsAgent(t *testing.T) {
	sippBin(t)
	t.Setenv("BATON_TEST_AGENT_AUTH", "Bearer bot-token")
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	b := startBot(t, nil)
	port, uas := startSIPpUAS(t, "outbound_answer.xml", 1)
	in := startIngressLogging(t, brokers, withOutbound(port, 2, "outbound-answer", b.url), slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})))
	consumer := newCalls(t, brokers, topics.Calls)
	req := newRequester(t, brokers, topics.Calls)
	awaitGroup(t, brokers, "outbound-answer")

	id := req.request(t, "0190f3a2-7c1e-7b3d-9a41-5c0e2f6d8b10", "carrier", "+15551234567", 10*time.Second, time.Now())
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_TRYING, progressOf(t, ofCall(t, consumer, id)).GetStatus())
	ringing := progressOf(t, ofCall(t, consumer, id))
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_RINGING, ringing.GetStatus())
	require.EqualValues(t, 180, ringing.GetSipCode())

	ev := ofCall(t, consumer, id)
	require.Equal(t, events.TypeCallStarted, ev.Type)
	started := ev.Data.(*batonv1.CallStarted)
	require.Equal(t, batonv1.CallDirection_CALL_DIRECTION_OUTBOUND, started.GetDirection())
	require.Equal(t, "carrier", started.GetTrunk())
	require.Equal(t, "+15551234567", started.GetCalleeNumber())
	require.Equal(t, "+15550001111", started.GetCallerNumber())
	require.Equal(t, "renewals", started.GetVariables()["campaign"])
	require.Equal(t, "renewals", started.GetVariables()["Campaign"], "the X- header, stripped, as for an inbound call")
	d := started.GetDialog()
	require.Equal(t, id, d.GetCallId())
	require.EqualValues(t, 2, d.GetNextLocalCseq(), "transfer's first request follows the INVITE's CSeq 1")
	require.Contains(t, d.GetLocalUri(), "+15550001111@carrier.example", "Baton is the From side")
	require.Contains(t, d.GetRemoteUri(), "+15551234567@carrier.example")
	require.Contains(t, d.GetRemoteTarget(), "callee@127.0.0.1:"+strconv.Itoa(port))
	require.Equal(t, "127.0.0.1:"+strconv.Itoa(port), d.GetNextHop())
	require.Contains(t, started.GetRemoteSdp(), "PCMA")

	answered := progressOf(t, ofCall(t, consumer, id))
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_ANSWERED, answered.GetStatus())
	require.EqualValues(t, 200, answered.GetSipCode())

	s := b.next(t)
	st := s.Start()
	require.Equal(t, id, st.CallSid)
	require.Equal(t, "+15551234567", st.CustomParameters["callee"])
	require.Equal(t, "renewals", st.CustomParameters["campaign"])
	connected := ofCall(t, consumer, id)
	require.Equal(t, events.TypeAgentConnected, connected.Type)
	require.Equal(t, "outbound", connected.Data.(*batonv1.AgentConnected).GetSource())
	// The called party's speech (SIPp's PCMA pcap) reaches the agent as
	// µ-law frames, and not as silence.
	heard := 0
	for heard < 25 {
		select {
		case f := <-s.Media():
			if !isSilence(f) {
				heard++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the agent heard %d frames of speech", heard)
		}
	}
	uas.wait(t) // SIPp hung up; its X- header regexps matched
	for {
		ev := ofCall(t, consumer, id)
		if ev.Type != events.TypeCallEnded {
			continue
		}
		e := ev.Data.(*batonv1.CallEnded)
		require.Equal(t, batonv1.Party_PARTY_REMOTE, e.GetEndedBy())
		require.Equal(t, "BYE", e.GetMethod())
		require.Positive(t, e.GetMedia().GetPackets())
		break
	}
	select {
	case <-s.Stopped():
	case <-time.After(10 * time.Second):
		t.Fatal("the agent stream did not stop")
	}
	require.Zero(t, in.srv.active.Load())
}

// TestOutboundCallBusy: a 486 is BUSY with its code, and no call starts.
func TestOutboundCallBusy(t *testing.T) {
	sippBin(t)
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	port, uas := startSIPpUAS(t, "dest_busy.xml", 1)
	startIngressLogging(t, brokers, withOutbound(port, 2, "outbound-busy", ""), slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})))
	consumer := newCalls(t, brokers, topics.Calls)
	awaitGroup(t, brokers, "outbound-busy")
	id := newRequester(t, brokers, topics.Calls).request(t, "busy-1", "carrier", "+15551234567", 10*time.Second, time.Now())
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_TRYING, progressOf(t, ofCall(t, consumer, id)).GetStatus())
	busy := progressOf(t, ofCall(t, consumer, id))
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_BUSY, busy.GetStatus())
	require.EqualValues(t, 486, busy.GetSipCode())
	require.Equal(t, "Busy Here", busy.GetSipReason())
	uas.wait(t) // SIPp got its ACK
}

// TestOutboundCallNoAnswerAndTrunkCap: a call that rings past its answer
// timeout is CANCELled (SIPp answers 200 and 487) and reported NO_ANSWER;
// while it rings, a second call on the trunk (max_calls 1) fails at once
// as trunk_busy with no INVITE; once the first has ended, a third is
// placed. An expired request and one for a trunk ingress lacks fail
// without an INVITE.
func TestOutboundCallNoAnswerAndTrunkCap(t *testing.T) {
	sippBin(t)
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	port, uas := startSIPpUAS(t, "dest_no_answer.xml", 2)
	startIngressLogging(t, brokers, withOutbound(port, 1, "outbound-no-answer", ""), slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})))
	consumer := newCalls(t, brokers, topics.Calls)
	req := newRequester(t, brokers, topics.Calls)
	awaitGroup(t, brokers, "outbound-no-answer")

	first := req.request(t, "ring-1", "carrier", "+15551234567", 3*time.Second, time.Now())
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_TRYING, progressOf(t, ofCall(t, consumer, first)).GetStatus())
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_RINGING, progressOf(t, ofCall(t, consumer, first)).GetStatus())

	second := req.request(t, "ring-2", "carrier", "+15551234568", 3*time.Second, time.Now())
	capped := progressOf(t, ofCall(t, consumer, second))
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_FAILED, capped.GetStatus())
	require.Contains(t, capped.GetDetail(), "trunk_busy")
	require.Zero(t, capped.GetSipCode())

	noAnswer := progressOf(t, ofCall(t, consumer, first))
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_NO_ANSWER, noAnswer.GetStatus())
	require.GreaterOrEqual(t, noAnswer.GetElapsed().AsDuration(), 3*time.Second)

	third := req.request(t, "ring-3", "carrier", "+15551234569", time.Second, time.Now())
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_TRYING, progressOf(t, ofCall(t, consumer, third)).GetStatus(),
		"the first call's place under max_calls is free again")
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_RINGING, progressOf(t, ofCall(t, consumer, third)).GetStatus())
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_NO_ANSWER, progressOf(t, ofCall(t, consumer, third)).GetStatus())
	uas.wait(t) // both calls were CANCELled

	expired := req.request(t, "old-1", "carrier", "+15551234567", time.Second, time.Now().Add(-time.Minute))
	f := progressOf(t, ofCall(t, consumer, expired))
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_FAILED, f.GetStatus())
	require.Contains(t, f.GetDetail(), "expired")
	unknown := req.request(t, "nowhere-1", "other", "+15551234567", time.Second, time.Now())
	f = progressOf(t, ofCall(t, consumer, unknown))
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_FAILED, f.GetStatus())
	require.Contains(t, f.GetDetail(), "unknown_trunk")
}

// TestOutboundCallCancelledAtShutdown: ingress stopping while a call
// rings CANCELs it (SIPp answers 200 and 487, or exits 1) and reports it
// FAILED (shutdown) before Serve returns.
func TestOutboundCallCancelledAtShutdown(t *testing.T) {
	sippBin(t)
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	port, uas := startSIPpUAS(t, "dest_no_answer.xml", 1)
	in := startIngressLogging(t, brokers, withOutbound(port, 1, "outbound-shutdown", ""),
		slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})))
	consumer := newCalls(t, brokers, topics.Calls)
	awaitGroup(t, brokers, "outbound-shutdown")
	id := newRequester(t, brokers, topics.Calls).request(t, "stop-1", "carrier", "+15551234567", 30*time.Second, time.Now())
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_TRYING, progressOf(t, ofCall(t, consumer, id)).GetStatus())
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_RINGING, progressOf(t, ofCall(t, consumer, id)).GetStatus())
	in.stop()
	f := progressOf(t, ofCall(t, consumer, id))
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_FAILED, f.GetStatus())
	require.Contains(t, f.GetDetail(), "shutdown")
	require.EqualValues(t, 487, f.GetSipCode())
	uas.wait(t)
}

// TestOutboundCallAnswerIngressCannotTake: a 200 whose SDP has none of
// the offered codecs is ACKed and ended with ingress's BYE (SIPp exits 1
// without it), the call reported FAILED, and no call starts.
func TestOutboundCallAnswerIngressCannotTake(t *testing.T) {
	sippBin(t)
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	port, uas := startSIPpUAS(t, "outbound_bad_answer.xml", 1)
	in := startIngressLogging(t, brokers, withOutbound(port, 1, "outbound-bad-answer", ""),
		slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})))
	consumer := newCalls(t, brokers, topics.Calls)
	awaitGroup(t, brokers, "outbound-bad-answer")
	id := newRequester(t, brokers, topics.Calls).request(t, "g729-1", "carrier", "+15551234567", 10*time.Second, time.Now())
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_TRYING, progressOf(t, ofCall(t, consumer, id)).GetStatus())
	f := progressOf(t, ofCall(t, consumer, id))
	require.Equal(t, batonv1.OutboundStatus_OUTBOUND_STATUS_FAILED, f.GetStatus())
	require.Contains(t, f.GetDetail(), "answer sdp")
	uas.wait(t) // the BYE came, from the listener, and was answered
	require.Zero(t, in.srv.active.Load())
}
