package server

import (
	"context"
	"encoding/binary"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/agentbot"
	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
)

// bot is a Media Streams bot on loopback; sessions gives each stream.
type bot struct {
	url      string
	sessions chan *agentbot.Session
}

func startBot(t *testing.T, serve func(ctx context.Context, s *agentbot.Session)) *bot {
	t.Helper()
	sessions := make(chan *agentbot.Session, 8)
	srv := httptest.NewServer(&agentbot.Handler{Serve: serve, Sessions: sessions, Header: "Authorization", Value: "Bearer bot-token"})
	t.Cleanup(srv.Close)
	return &bot{url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/media", sessions: sessions}
}

func (b *bot) next(t *testing.T) *agentbot.Session {
	t.Helper()
	select {
	case s := <-b.sessions:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no agent stream")
		return nil
	}
}

// withAgent routes every call to the bot, with on_agent_failure fail.
func withAgent(url string, fail config.AgentFailure) func(*config.Config) {
	return func(c *config.Config) {
		c.Agents = []config.Agent{{Name: "bot", URL: url, Default: true, OnFailure: fail,
			Auth: config.AgentAuth{Header: "Authorization", Env: "BATON_TEST_AGENT_AUTH"}}}
	}
}

// pattern is n bytes of µ-law audio that is never silence.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = (seed + byte(i)) & 0x7f
	}
	return b
}

// rtpIn is one RTP packet the caller received.
type rtpIn struct {
	at      time.Time
	seq     uint16
	payload []byte
}

// receiveRTP collects what arrives on the caller's RTP socket until ctx
// ends.
func receiveRTP(ctx context.Context, conn *net.UDPConn) <-chan rtpIn {
	out := make(chan rtpIn, 4096)
	go func() {
		defer close(out)
		buf := make([]byte, 1500)
		for ctx.Err() == nil {
			_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				continue
			}
			if n < 12 {
				continue
			}
			out <- rtpIn{at: time.Now(), seq: binary.BigEndian.Uint16(buf[2:4]), payload: append([]byte(nil), buf[12:n]...)}
		}
	}()
	return out
}

func isSilence(p []byte) bool {
	for _, b := range p {
		if b != 0xff {
			return false
		}
	}
	return true
}

// nextOf reads events up to the first of type typ.
func nextOf(t *testing.T, c *calls, typ string) events.Event {
	t.Helper()
	for {
		if ev := c.next(t); ev.Type == typ {
			return ev
		}
	}
}

// The agent hears exactly the caller's frames, the caller hears the
// agent's audio paced at 20 ms (sent at twice real time in 40 ms chunks,
// as Pipecat does), a mark comes back only after its audio left as RTP,
// digits reach the agent, and the hang-up ends the stream with stop.
func TestAgentStreamsBothWays(t *testing.T) {
	t.Setenv("BATON_TEST_AGENT_AUTH", "Bearer bot-token")
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	b := startBot(t, nil)
	in := startIngress(t, brokers, withAgent(b.url, config.AgentFailure{}))
	consumer := newCalls(t, brokers, topics.Calls)
	c := dial(t, in, "agent-1", "0 101")
	started := nextOf(t, consumer, events.TypeCallStarted).Data.(*batonv1.CallStarted)
	s := b.next(t)

	msgs := s.Messages()
	require.Equal(t, "connected", msgs[0].Event)
	require.Equal(t, "start", msgs[1].Event)
	require.Equal(t, "1", msgs[1].SequenceNumber)
	st := s.Start()
	require.Equal(t, "agent-1", st.CallSid)
	require.Equal(t, "audio/x-mulaw", st.MediaFormat.Encoding)
	require.Equal(t, 8000, st.MediaFormat.SampleRate)
	require.Equal(t, started.GetCallerNumber(), st.CustomParameters["caller"])
	require.Equal(t, started.GetCalleeNumber(), st.CustomParameters["callee"])
	require.Equal(t, started.GetTrunk(), st.CustomParameters["trunk"])
	connected := nextOf(t, consumer, events.TypeAgentConnected).Data.(*batonv1.AgentConnected)
	require.Equal(t, st.StreamSid, connected.GetStreamSid())
	require.NotContains(t, connected.GetUrl(), "token")

	// Caller → agent: ten frames of a known pattern, exactly.
	dst := c.ingressRTP()
	var sent [][]byte
	for seq := uint16(1); seq <= 10; seq++ {
		p := pattern(160, byte(seq*7))
		sent = append(sent, p)
		_, err := c.rtp.WriteToUDP(rtpPacket(0, seq, uint32(seq)*160, p), dst)
		require.NoError(t, err)
		time.Sleep(5 * time.Millisecond)
	}
	for i, want := range sent {
		select {
		case got := <-s.Media():
			require.Equal(t, want, got, "frame %d", i)
		case <-time.After(5 * time.Second):
			t.Fatalf("frame %d never reached the agent", i)
		}
	}

	// Agent → caller: one second in 40 ms chunks at twice real time.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	rtpCh := receiveRTP(ctx, c.rtp)
	speech := pattern(8000, 3)
	sentAt := time.Now()
	require.NoError(t, s.Play(t.Context(), speech, 320, 2, "end-of-speech"))
	var heard []byte
	var firstAt, lastAt time.Time
	for len(heard) < len(speech) {
		select {
		case p := <-rtpCh:
			if isSilence(p.payload) {
				continue
			}
			if firstAt.IsZero() {
				firstAt = p.at
			}
			lastAt = p.at
			heard = append(heard, p.payload...)
		case <-time.After(5 * time.Second):
			t.Fatalf("heard %d of %d bytes", len(heard), len(speech))
		}
	}
	require.Equal(t, speech, heard, "the caller hears the agent's audio, in order, re-framed")
	require.Greater(t, lastAt.Sub(firstAt), 900*time.Millisecond,
		"paced: 50 frames take a second, though the bot sent them in %v", time.Since(sentAt))
	select {
	case name := <-s.Marks():
		require.Equal(t, "end-of-speech", name)
		require.False(t, time.Now().Before(lastAt), "the mark comes back after the last frame left")
	case <-time.After(5 * time.Second):
		t.Fatal("the mark never came back")
	}
	played := nextOf(t, consumer, events.TypeAgentMarkPlayed).Data.(*batonv1.AgentMarkPlayed)
	require.Equal(t, "end-of-speech", played.GetName())

	// A digit the caller sends by INFO reaches the agent.
	require.Equal(t, sip.StatusOK, c.inDialog(sip.INFO, "application/dtmf-relay", "Signal=5\r\nDuration=160\r\n").StatusCode)
	select {
	case d := <-s.DTMF():
		require.Equal(t, "5", d)
	case <-time.After(5 * time.Second):
		t.Fatal("the digit never reached the agent")
	}

	// The caller hangs up: stop goes to the agent, AgentDisconnected
	// with the stream's counts before CallEnded.
	require.Equal(t, sip.StatusOK, c.inDialog(sip.BYE, "", "").StatusCode)
	select {
	case <-s.Stopped():
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not end")
	}
	msgs = s.Messages()
	require.Equal(t, "stop", msgs[len(msgs)-1].Event)
	require.Equal(t, "agent-1", msgs[len(msgs)-1].Stop.CallSid)
	var evs []events.Event
	for {
		ev := consumer.next(t)
		evs = append(evs, ev)
		if ev.Type == events.TypeCallEnded {
			break
		}
	}
	require.GreaterOrEqual(t, len(evs), 2)
	dis := evs[len(evs)-2]
	require.Equal(t, events.TypeAgentDisconnected, dis.Type, "AgentDisconnected right before CallEnded")
	d := dis.Data.(*batonv1.AgentDisconnected)
	require.Equal(t, "call_ended", d.GetReason())
	require.EqualValues(t, 10, d.GetStats().GetFramesOut())
	require.EqualValues(t, 25, d.GetStats().GetFramesIn())
	require.EqualValues(t, 50, d.GetStats().GetFramesPlayed())
	require.EqualValues(t, 1, d.GetStats().GetMarks())
	require.Zero(t, d.GetStats().GetDropped())
}

// clear cuts the agent's queued audio at once (barge-in) and sends its
// marks back.
func TestAgentClearCutsPlayback(t *testing.T) {
	t.Setenv("BATON_TEST_AGENT_AUTH", "Bearer bot-token")
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	b := startBot(t, nil)
	in := startIngress(t, brokers, withAgent(b.url, config.AgentFailure{}))
	c := dial(t, in, "agent-clear", "0 101")
	s := b.next(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	rtpCh := receiveRTP(ctx, c.rtp)
	require.NoError(t, s.Play(t.Context(), pattern(5*8000, 1), 8000, 0, "long")) // five seconds at once
	audio := 0
	for audio < 10 {
		select {
		case p := <-rtpCh:
			if !isSilence(p.payload) {
				audio++
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no audio")
		}
	}
	require.NoError(t, s.Clear(t.Context()))
	clearedAt := time.Now()
	select {
	case name := <-s.Marks():
		require.Equal(t, "long", name, "the cleared mark comes back")
	case <-time.After(5 * time.Second):
		t.Fatal("the cleared mark never came back")
	}
	// At most the frame in flight plays after the clear; then silence.
	late := 0
	deadline := time.After(500 * time.Millisecond)
	for done := false; !done; {
		select {
		case p := <-rtpCh:
			if !isSilence(p.payload) && p.at.Sub(clearedAt) > 60*time.Millisecond {
				late++
			}
		case <-deadline:
			done = true
		}
	}
	require.Zero(t, late, "audio frames played more than a frame after the clear")
}

// An agent that drops mid-call triggers on_agent_failure: hangup ends
// the call with ingress's BYE; handoff asks the router for one.
func TestAgentFailure(t *testing.T) {
	t.Setenv("BATON_TEST_AGENT_AUTH", "Bearer bot-token")
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)

	t.Run("dropped, hang up", func(t *testing.T) {
		b := startBot(t, nil)
		in := startIngress(t, brokers, withAgent(b.url, config.AgentFailure{Action: config.FailHangup}))
		consumer := newCalls(t, brokers, topics.Calls)
		c := dial(t, in, "agent-drop", "0 101")
		s := b.next(t)
		require.NoError(t, s.CloseNow())
		bye, _ := c.sbc.awaitBye(t, 10*time.Second)
		require.Equal(t, "agent-drop", bye.CallID().Value())
		var d *batonv1.AgentDisconnected
		for d == nil {
			ev := consumer.next(t)
			if dd, ok := ev.Data.(*batonv1.AgentDisconnected); ok && dd.GetCallId() == "agent-drop" {
				d = dd
			}
		}
		require.Contains(t, []string{"agent_closed", "read_error"}, d.GetReason())
		require.Equal(t, "hangup", d.GetAction())
		requireEndedByBaton(t, consumer, "agent-drop", reasonAgentFailure)
		require.EqualValues(t, 1, in.srv.stats.AgentStreams.Load())
		require.EqualValues(t, 1, in.srv.stats.AgentFailures.Load())
	})

	t.Run("unreachable, hand off", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		url := "ws://" + ln.Addr().String() + "/media"
		require.NoError(t, ln.Close()) // nobody listens there now
		in := startIngress(t, brokers, withAgent(url, config.AgentFailure{Action: config.FailHandoff, Destination: "humans"}))
		consumer := newCalls(t, brokers, topics.Calls)
		dial(t, in, "agent-unreachable", "0 101")
		var d *batonv1.AgentDisconnected
		var h *batonv1.HandoffRequested
		for h == nil {
			switch m := consumer.next(t).Data.(type) {
			case *batonv1.AgentDisconnected:
				if m.GetCallId() == "agent-unreachable" {
					d = m
				}
			case *batonv1.HandoffRequested:
				if m.GetCallId() == "agent-unreachable" {
					h = m
				}
			}
		}
		require.NotNil(t, d, "AgentDisconnected before the handoff request")
		require.Equal(t, "connect_failed", d.GetReason())
		require.Equal(t, "handoff", d.GetAction())
		require.Equal(t, "humans", h.GetDestination())
		require.Equal(t, "agent_failure", h.GetReason())
	})
}

// Malformed messages are counted and ignored; the stream goes on.
func TestAgentBadMessages(t *testing.T) {
	t.Setenv("BATON_TEST_AGENT_AUTH", "Bearer bot-token")
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	b := startBot(t, nil)
	in := startIngress(t, brokers, withAgent(b.url, config.AgentFailure{}))
	consumer := newCalls(t, brokers, topics.Calls)
	c := dial(t, in, "agent-bad", "0 101")
	s := b.next(t)
	for _, m := range []string{`{"event":`, `{"event":"dance"}`, `{"event":"media","media":{"payload":"%%%"}}`, `{"event":"mark"}`} {
		require.NoError(t, s.Send(t.Context(), []byte(m)))
	}
	require.NoError(t, s.Play(t.Context(), pattern(160, 9), 160, 0, "after-bad"))
	select {
	case name := <-s.Marks():
		require.Equal(t, "after-bad", name, "the stream goes on after bad messages")
	case <-time.After(5 * time.Second):
		t.Fatal("the stream stopped working")
	}
	require.Equal(t, sip.StatusOK, c.inDialog(sip.BYE, "", "").StatusCode)
	d := nextOf(t, consumer, events.TypeAgentDisconnected).Data.(*batonv1.AgentDisconnected)
	require.EqualValues(t, 4, d.GetStats().GetBadMessages())
	require.Equal(t, "call_ended", d.GetReason())
}

// With agent_selection_wait, the router's AgentSelected (a rule's agent,
// the pre-call answer's) overrides ingress's choice: the call dials the
// named agent; with no choice within the wait, its default.
func TestAgentSelectedByTheRouter(t *testing.T) {
	t.Setenv("BATON_TEST_AGENT_AUTH", "Bearer bot-token")
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	byDefault, chosen := startBot(t, nil), startBot(t, nil)
	in := startIngress(t, brokers, func(c *config.Config) {
		auth := config.AgentAuth{Header: "Authorization", Env: "BATON_TEST_AGENT_AUTH"}
		c.Agents = []config.Agent{
			{Name: "default-bot", URL: byDefault.url, Default: true, Auth: auth},
			{Name: "billing-bot", URL: chosen.url, Auth: auth},
		}
		c.AgentSelectionWait = 2 * time.Second
	})
	consumer := newCalls(t, brokers, topics.Calls)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)

	// The router's choice comes while the call waits.
	c := dial(t, in, "agent-selected", "0 101")
	nextOf(t, consumer, events.TypeCallStarted)
	ev, err := events.New("baton/router", c.callID, &batonv1.AgentSelected{CallId: c.callID, Agent: "billing-bot", Source: "rule:billing"}, time.Now())
	require.NoError(t, err)
	rec, err := events.Encode(topics.Calls, ev)
	require.NoError(t, err)
	require.NoError(t, cl.ProduceSync(t.Context(), rec).FirstErr())
	s := chosen.next(t)
	require.Equal(t, c.callID, s.Start().CallSid)
	// The calls topic now holds the router's record too: read it raw.
	var connected *batonv1.AgentConnected
	for connected == nil {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		fs := consumer.cl.PollFetches(ctx)
		cancel()
		require.NoError(t, fs.Err0())
		fs.EachRecord(func(r *kgo.Record) {
			if ev, err := events.Decode(r); err == nil {
				if m, ok := ev.Data.(*batonv1.AgentConnected); ok {
					connected = m
				}
			}
		})
	}
	require.Equal(t, "router:rule:billing", connected.GetSource())
	select {
	case <-byDefault.sessions:
		t.Fatal("the default agent was dialled too")
	default:
	}

	// No choice within the wait: the default agent.
	c2 := dial(t, in, "agent-not-selected", "0 101")
	began := time.Now()
	s2 := byDefault.next(t)
	require.Equal(t, c2.callID, s2.Start().CallSid)
	require.GreaterOrEqual(t, time.Since(began), time.Second, "it waited for the router first")
}
