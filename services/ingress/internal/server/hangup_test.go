package server

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
)

// withT1 shortens the T1 of the 2xx retransmission (and so the 64*T1
// after which an unacknowledged call is ended) for one server.
func withT1(d time.Duration) Options { return Options{T1: d} }

// sipIn is one SIP message the SBC received, with when and from where.
type sipIn struct {
	msg  sip.Message
	at   time.Time
	from *net.UDPAddr
}

// readAny returns the next SIP message (request or response) on the SBC's
// socket; ok is false when none comes within wait.
func (r *rawSBC) readAny(t *testing.T, wait time.Duration) (sipIn, bool) {
	t.Helper()
	require.NoError(t, r.conn.SetReadDeadline(time.Now().Add(wait)))
	n, from, err := r.conn.ReadFromUDP(r.buf)
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		return sipIn{}, false
	}
	require.NoError(t, err)
	at := time.Now()
	m, err := sip.NewParser().ParseSIP(r.buf[:n])
	require.NoError(t, err)
	return sipIn{msg: m, at: at, from: from}, true
}

// awaitBye reads until ingress's BYE arrives, answers it 200 and returns
// it with the 200 OKs to the INVITE seen before it (their arrival times).
func (r *rawSBC) awaitBye(t *testing.T, wait time.Duration) (*sip.Request, []time.Time) {
	t.Helper()
	deadline := time.Now().Add(wait)
	var oks []time.Time
	for time.Now().Before(deadline) {
		in, ok := r.readAny(t, time.Until(deadline))
		if !ok {
			break
		}
		switch m := in.msg.(type) {
		case *sip.Response:
			if m.StatusCode == sip.StatusOK && m.CSeq().MethodName == sip.INVITE {
				oks = append(oks, in.at)
			}
		case *sip.Request:
			require.Equal(t, sip.BYE, m.Method, "ingress sends no request but BYE")
			res := sip.NewResponseFromRequest(m, sip.StatusOK, "OK", nil)
			_, err := r.conn.WriteToUDP([]byte(res.String()), in.from)
			require.NoError(t, err)
			return m, oks
		}
	}
	t.Fatalf("no BYE within %v (%d 200 OKs seen)", wait, len(oks))
	return nil, nil
}

func byesInFlight(s *Server) int {
	n := 0
	s.byes.branches.Range(func(any, any) bool { n++; return true })
	return n
}

// requireByeOf checks the BYE ends the dialog of the call answered with
// toTag, from the SBC at sbcPort (RFC 3261 12.2.1.1).
func requireByeOf(t *testing.T, bye *sip.Request, callID, toTag string, sbcPort int) {
	t.Helper()
	require.Equal(t, fmt.Sprintf("sip:sbc@127.0.0.1:%d", sbcPort), bye.Recipient.String(), "to the caller's Contact")
	require.Equal(t, callID, bye.CallID().Value())
	fromTag, _ := bye.From().Params.Get("tag")
	require.Equal(t, toTag, fromTag, "ingress's tag in From")
	remoteTag, _ := bye.To().Params.Get("tag")
	require.Equal(t, "raw", remoteTag, "the caller's tag in To")
	require.EqualValues(t, byeCSeq, bye.CSeq().SeqNo)
	require.Equal(t, sip.BYE, bye.CSeq().MethodName)
}

// requireEndedByBaton reads events up to the call's CallEnded and checks
// ingress ended it for reason.
func requireEndedByBaton(t *testing.T, consumer *calls, callID, reason string) *batonv1.CallEnded {
	t.Helper()
	for {
		ev := consumer.next(t)
		if ev.Type != events.TypeCallEnded {
			continue
		}
		e := ev.Data.(*batonv1.CallEnded)
		require.Equal(t, callID, e.GetCallId())
		require.Equal(t, batonv1.Party_PARTY_BATON, e.GetEndedBy())
		require.Equal(t, "BYE", e.GetMethod())
		require.Equal(t, reason, e.GetReason())
		return e
	}
}

func TestAckTimeoutSendsBye(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	const t1 = 20 * time.Millisecond
	in := startIngress(t, brokers, nil, withT1(t1))
	consumer := newCalls(t, brokers, topics.Calls)
	sbc := newRawSBC(t)
	sbc.send(t, in.srv.Addr(), rawRequest(sip.INVITE, in.port, sbc.port, "no-ack", "z9hG4bK-no-ack", "", offer, 1))
	res := finalOrProbe(t, sbc)
	require.Equal(t, sip.StatusOK, res.StatusCode)
	toTag, _ := res.To().Params.Get("tag")

	bye, oks := sbc.awaitBye(t, 10*time.Second)
	requireByeOf(t, bye, "no-ack", toTag, sbc.port)
	require.GreaterOrEqual(t, len(oks), 5, "the 200 was retransmitted until the BYE")
	require.Eventually(t, func() bool { return byesInFlight(in.srv) == 0 }, 5*time.Second, 10*time.Millisecond,
		"the 200 to the BYE passed the read filter and ended its transaction")
	require.Equal(t, events.TypeCallStarted, consumer.next(t).Type)
	e := requireEndedByBaton(t, consumer, "no-ack", reasonAckTimeout)
	require.GreaterOrEqual(t, e.GetDuration().AsDuration(), 64*t1)

	// The dialog is gone: the caller's late ACK changes nothing and its
	// BYE gets 481.
	c := &sbcCall{t: t, in: in, sbc: sbc, callID: "no-ack", toTag: toTag, cseq: 1}
	c.ack("")
	require.Equal(t, sip.StatusCallTransactionDoesNotExists, c.inDialog(sip.BYE, "", "").StatusCode)
	in.srv.mu.Lock()
	require.Empty(t, in.srv.calls)
	in.srv.mu.Unlock()
}

func TestMediaTimeout(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	const timeout = time.Second
	in := startIngress(t, brokers, func(c *config.Config) { c.RTP.MediaTimeout = timeout })
	consumer := newCalls(t, brokers, topics.Calls)

	// A caller that holds (sendonly) is not expected to send: its call
	// outlives the timeout, and is ended a timeout after it resumes.
	held := dial(t, in, "media-held", "0")
	require.Equal(t, sip.StatusOK, held.inDialog(sip.INVITE, "application/sdp", sbcOffer(held.rtpPort(), "0", "sendonly")).StatusCode)
	held.ack("")

	// A caller that sends a few packets and stops.
	quiet := dial(t, in, "media-quiet", "0")
	for seq := range uint16(5) {
		_, err := quiet.rtp.WriteToUDP(rtpPacket(0, seq, uint32(seq)*160, make([]byte, 160)), quiet.ingressRTP())
		require.NoError(t, err)
	}
	bye, _ := quiet.sbc.awaitBye(t, 10*timeout)
	requireByeOf(t, bye, "media-quiet", quiet.toTag, quiet.sbc.port)
	var e *batonv1.CallEnded
	for e == nil {
		ev := consumer.next(t)
		if ev.Type == events.TypeCallEnded {
			e = ev.Data.(*batonv1.CallEnded)
		}
	}
	require.Equal(t, "media-quiet", e.GetCallId(), "the held call is still up")
	require.Equal(t, batonv1.Party_PARTY_BATON, e.GetEndedBy())
	require.Equal(t, reasonMediaTimeout, e.GetReason())
	require.EqualValues(t, 5, e.GetMedia().GetPackets())

	in.srv.mu.Lock()
	_, up := in.srv.calls["media-held"]
	in.srv.mu.Unlock()
	require.True(t, up, "a held call is not timed out")
	require.Equal(t, sip.StatusOK, held.inDialog(sip.INVITE, "application/sdp", sbcOffer(held.rtpPort(), "0", "sendrecv")).StatusCode)
	held.ack("")
	bye, _ = held.sbc.awaitBye(t, 10*timeout)
	requireByeOf(t, bye, "media-held", held.toTag, held.sbc.port)
	requireEndedByBaton(t, consumer, "media-held", reasonMediaTimeout)
}

// TestMediaTimeoutSkipsBridgedCalls: once transfer reports the caller's
// media moved to its bridge (TransferOutcome BRIDGED), ingress no longer
// expects RTP for the call and does not end it.
func TestMediaTimeoutSkipsBridgedCalls(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	const timeout = 2 * time.Second
	in := startIngress(t, brokers, func(c *config.Config) { c.RTP.MediaTimeout = timeout })
	consumer := newCalls(t, brokers, topics.Calls)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)

	bridged := dial(t, in, "media-bridged", "0")
	began := time.Now()
	for _, st := range []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED} {
		ev, err := events.New("baton/transfer", bridged.callID, &batonv1.TransferOutcome{CommandId: "cmd-1", CallId: bridged.callID, Status: st}, time.Now())
		require.NoError(t, err)
		rec, err := events.Encode(topics.Transfers, ev)
		require.NoError(t, err)
		require.NoError(t, cl.ProduceSync(t.Context(), rec).FirstErr())
	}
	require.Eventually(t, func() bool {
		in.srv.mu.Lock()
		c := in.srv.calls[bridged.callID]
		in.srv.mu.Unlock()
		if c == nil {
			return false
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.mediaMoved
	}, timeout, 10*time.Millisecond, "the BRIDGED outcome never reached ingress")
	time.Sleep(time.Until(began.Add(2 * timeout)))
	require.Equal(t, sip.StatusOK, bridged.inDialog(sip.BYE, "", "").StatusCode, "the bridged call is still up")
	require.Equal(t, events.TypeCallStarted, consumer.next(t).Type)
	ev := consumer.next(t)
	require.Equal(t, events.TypeCallEnded, ev.Type)
	require.Equal(t, batonv1.Party_PARTY_REMOTE, ev.Data.(*batonv1.CallEnded).GetEndedBy())
}

// TestTransferByeEndsTheCall (issue 19, 1): when transfer's own BYE ended
// the caller's dialog (a BYE handoff, the agent leg after a REFER, a
// bridged call the destination hung up), ingress ends the call on that
// fact at once, with transfer's reason, and sends no BYE of its own; a
// caller's hang-up on a bridged call is left to the caller's BYE.
func TestTransferByeEndsTheCall(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, nil)
	consumer := newCalls(t, brokers, topics.Calls)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	outcome := func(o *batonv1.TransferOutcome) {
		t.Helper()
		ev, err := events.New("baton/transfer", o.GetCallId(), o, time.Now())
		require.NoError(t, err)
		rec, err := events.Encode(topics.Transfers, ev)
		require.NoError(t, err)
		require.NoError(t, cl.ProduceSync(t.Context(), rec).FirstErr())
	}
	for _, tc := range []struct {
		name   string
		o      *batonv1.TransferOutcome
		reason string
	}{
		{"agent leg after refer", &batonv1.TransferOutcome{Status: batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED,
			Method: batonv1.Method_METHOD_REFER, Reason: "agent_leg_bye", SipCode: 200}, "agent_leg_bye"},
		{"bye handoff", &batonv1.TransferOutcome{Status: batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED,
			Method: batonv1.Method_METHOD_BYE, SipCode: 200}, reasonHandoffBye},
		{"bridged destination hung up", &batonv1.TransferOutcome{Status: batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED,
			Method: batonv1.Method_METHOD_INVITE, Reason: "destination_hangup"}, "destination_hangup"},
	} {
		c := dial(t, in, "transfer-bye-"+strings.ReplaceAll(tc.name, " ", "-"), "0")
		require.Equal(t, events.TypeCallStarted, nextOf(t, consumer, events.TypeCallStarted).Type)
		tc.o.CallId, tc.o.CommandId = c.callID, "cmd-"+c.callID
		sent := time.Now()
		outcome(tc.o)
		ended := nextOf(t, consumer, events.TypeCallEnded)
		e := ended.Data.(*batonv1.CallEnded)
		require.Equal(t, c.callID, e.GetCallId(), tc.name)
		require.Equal(t, batonv1.Party_PARTY_BATON, e.GetEndedBy(), tc.name)
		require.Equal(t, tc.reason, e.GetReason(), tc.name)
		require.Less(t, ended.Time.Sub(sent), 5*time.Second, "%s: ended when transfer's BYE ended it", tc.name)
		_, got := c.sbc.readAny(t, 300*time.Millisecond)
		require.False(t, got, "%s: ingress sends no BYE of its own", tc.name)
	}
	require.Zero(t, in.srv.active.Load(), "no call left")

	// A bridged call the caller hangs up: the caller's BYE ends it at
	// ingress; the outcome after it changes nothing.
	c := dial(t, in, "transfer-bye-caller", "0")
	nextOf(t, consumer, events.TypeCallStarted)
	outcome(&batonv1.TransferOutcome{CallId: c.callID, CommandId: "cmd-x", Status: batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED,
		Method: batonv1.Method_METHOD_INVITE, Reason: "caller_hangup"})
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, sip.StatusOK, c.inDialog(sip.BYE, "", "").StatusCode, "still up until the caller's BYE")
	require.Equal(t, batonv1.Party_PARTY_REMOTE, nextOf(t, consumer, events.TypeCallEnded).Data.(*batonv1.CallEnded).GetEndedBy())
}
