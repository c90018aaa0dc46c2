//go:build reliability

package server

import (
	"context"
	"fmt"
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
	"github.com/baton-voice/baton/pkg/reliabilitytest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
)

// untilSentinel places a call, hangs it up, and returns every event read
// before that call's CallStarted: ingress publishes in order on the one
// partition kafkatest's topics have, so these are all the events the test
// caused before the sentinel.
func untilSentinel(t *testing.T, in *ingress, consumer *calls) []events.Event {
	t.Helper()
	c := dial(t, in, "sentinel-"+sip.GenerateTagN(6), "0")
	require.Equal(t, sip.StatusOK, c.inDialog(sip.BYE, "", "").StatusCode)
	var got []events.Event
	for {
		ev := consumer.next(t)
		if ev.Subject == c.callID {
			require.Equal(t, events.TypeCallStarted, ev.Type)
			return got
		}
		got = append(got, ev)
	}
}

// requireTopicEmpty proves no record reached topic before now: a marker
// produced now is the first record read from its start.
func requireTopicEmpty(t *testing.T, brokers []string, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	marker := "marker-" + sip.GenerateTagN(8)
	require.NoError(t, cl.ProduceSync(t.Context(), &kgo.Record{Topic: topic, Key: []byte(marker)}).FirstErr())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	fs := cl.PollFetches(ctx)
	require.NoError(t, fs.Err0())
	recs := fs.Records()
	require.NotEmpty(t, recs)
	require.Equal(t, marker, string(recs[0].Key), "a record reached %s before the marker", topic)
}

// TestReliabilityInboundRefer: the carrier REFERs ingress inside live
// dialogs (a premium number, a foreign URI with embedded headers). Each
// REFER gets 405 and nothing is published but the calls' own CallStarted
// and CallEnded; the handoff and transfer topics stay empty.
func TestReliabilityInboundRefer(t *testing.T) {
	sippBin(t)
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, nil)
	consumer := newCalls(t, brokers, topics.Calls)

	const calls = 20
	runSIPp(t, in, "ingress_refer_inbound.xml", calls) // exits 0 only when every REFER got 405
	got := untilSentinel(t, in, consumer)
	perType := map[string]int{}
	perCall := map[string][]string{}
	for _, ev := range got {
		perType[ev.Type]++
		perCall[ev.Subject] = append(perCall[ev.Subject], ev.Type)
	}
	require.Len(t, perCall, calls)
	for id, types := range perCall {
		require.Equal(t, []string{events.TypeCallStarted, events.TypeCallEnded}, types, "call %s", id)
	}
	require.Len(t, got, 2*calls, "only the calls' own facts: %v", perType)
	for _, topic := range []string{topics.Handoffs, topics.Transfers} {
		requireTopicEmpty(t, brokers, topic)
	}
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 4, Test: t.Name(),
		Load:   fmt.Sprintf("%d SIPp calls, each with 2 in-dialog REFERs from the carrier", calls),
		Faults: "inbound REFER to a premium number and to a foreign URI with embedded ?headers",
		Inputs: "deploy/sipp/ingress_refer_inbound.xml",
		Lost: fmt.Sprintf("%d of %d REFERs answered 405 (SIPp exit 0); events %v; 0 records on %s and %s",
			2*calls, 2*calls, perType, topics.Handoffs, topics.Transfers),
	})
}

// TestReliabilityAckTimeout: a UAC that never ACKs the 200 OK. Ingress
// retransmits the 200 at T1, 2T1, 4T1, then T2 (RFC 3261 13.3.1.4 with
// sipgo's T1 500 ms and T2 4 s), sends BYE at 64*T1 and publishes exactly
// one CallEnded{BATON, BYE, ack_timeout}.
func TestReliabilityAckTimeout(t *testing.T) {
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, nil)
	consumer := newCalls(t, brokers, topics.Calls)
	sbc := newRawSBC(t)

	const callID = "never-acked"
	sbc.send(t, in.srv.Addr(), rawRequest(sip.INVITE, in.port, sbc.port, callID, "z9hG4bK-never-acked", "", offer, 1))
	var (
		toTag string
		oks   []time.Time
	)
	for toTag == "" {
		m, ok := sbc.readAny(t, 10*time.Second)
		require.True(t, ok, "no 200 OK")
		if res, isRes := m.msg.(*sip.Response); isRes && res.StatusCode == sip.StatusOK {
			toTag, _ = res.To().Params.Get("tag")
			oks = append(oks, m.at)
		}
	}
	bye, more := sbc.awaitBye(t, 64*sip.T1+15*time.Second)
	oks = append(oks, more...)
	byeAt := time.Now()
	requireByeOf(t, bye, callID, toTag, sbc.port)

	// The intervals double from T1 to T2 and stay there; timing on a
	// shared machine is loose, the shape is not.
	var gaps []string
	for i := 1; i < len(oks); i++ {
		want := min(sip.T1<<(i-1), sip.T2)
		got := oks[i].Sub(oks[i-1])
		gaps = append(gaps, got.Round(10*time.Millisecond).String())
		require.GreaterOrEqual(t, got, want*8/10, "retransmission %d came early: %v, want %v", i, got, want)
		require.LessOrEqual(t, got, want+time.Second, "retransmission %d came late: %v, want %v", i, got, want)
	}
	// 64*T1 = 32 s holds the original and retransmissions at 0.5, 1.5,
	// 3.5, 7.5, 11.5, ... 31.5 s: ten of them.
	require.GreaterOrEqual(t, len(oks)-1, 9, "retransmissions: %v", gaps)
	require.LessOrEqual(t, len(oks)-1, 10, "retransmissions: %v", gaps)
	sinceAnswer := byeAt.Sub(oks[0])
	require.GreaterOrEqual(t, sinceAnswer, 64*sip.T1*9/10, "BYE before 64*T1")
	require.True(t, byeAt.After(oks[len(oks)-1]))
	require.Eventually(t, func() bool { return byesInFlight(in.srv) == 0 }, 10*time.Second, 20*time.Millisecond,
		"the BYE's 200 reached its transaction")

	got := untilSentinel(t, in, consumer)
	var ended []*batonv1.CallEnded
	for _, ev := range got {
		require.Equal(t, callID, ev.Subject, "only the unacknowledged call's facts before the sentinel")
		if e, ok := ev.Data.(*batonv1.CallEnded); ok {
			ended = append(ended, e)
		}
	}
	require.Len(t, got, 2, "CallStarted and one CallEnded")
	require.Equal(t, events.TypeCallStarted, got[0].Type)
	require.Len(t, ended, 1)
	require.Equal(t, batonv1.Party_PARTY_BATON, ended[0].GetEndedBy())
	require.Equal(t, "BYE", ended[0].GetMethod())
	require.Equal(t, reasonAckTimeout, ended[0].GetReason())

	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 5, Test: t.Name(),
		Load:   "1 call answered over UDP",
		Faults: "the UAC never sends the ACK",
		Inputs: "raw UDP UAC, sipgo T1 500ms, T2 4s",
		Lost: fmt.Sprintf("200 OK sent %d times, gaps %s; BYE %.1fs after the first 200 (64*T1 = %v), answered; CallEnded{BATON, BYE, ack_timeout} x%d",
			len(oks), strings.Join(gaps, ","), sinceAnswer.Seconds(), 64*sip.T1, len(ended)),
	})
}

// TestReliabilityMediaTimeout: with rtp.media_timeout 2s, a caller that
// sends RTP for a second and stops, and one that never sends, are ended
// by ingress (BYE, CallEnded{BATON, BYE, media_timeout}); a caller that
// keeps sending is not, and ends the call itself.
func TestReliabilityMediaTimeout(t *testing.T) {
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	const timeout = 2 * time.Second
	in := startIngress(t, brokers, func(c *config.Config) { c.RTP.MediaTimeout = timeout })
	consumer := newCalls(t, brokers, topics.Calls)

	talker := dial(t, in, "media-talker", "0")
	stopper := dial(t, in, "media-stopper", "0")
	mute := dial(t, in, "media-mute", "0")
	answered := time.Now()

	// 20 ms packets: the talker for 3 timeouts, the stopper for 1 s.
	const stopperPackets, talkerPackets = 50, 300
	stoppedAt := time.Time{}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for seq := range uint16(talkerPackets) {
		<-tick.C
		payload := make([]byte, 160)
		_, err := talker.rtp.WriteToUDP(rtpPacket(0, seq, uint32(seq)*160, payload), talker.ingressRTP())
		require.NoError(t, err)
		if seq < stopperPackets {
			_, err = stopper.rtp.WriteToUDP(rtpPacket(0, seq, uint32(seq)*160, payload), stopper.ingressRTP())
			require.NoError(t, err)
			stoppedAt = time.Now()
		}
	}
	// By now (6 s) both silent calls were ended; their BYEs wait on the
	// sockets.
	byeMute, _ := mute.sbc.awaitBye(t, 5*timeout)
	requireByeOf(t, byeMute, mute.callID, mute.toTag, mute.sbc.port)
	byeStopper, _ := stopper.sbc.awaitBye(t, 5*timeout)
	requireByeOf(t, byeStopper, stopper.callID, stopper.toTag, stopper.sbc.port)
	in.srv.mu.Lock()
	_, talkerUp := in.srv.calls[talker.callID]
	in.srv.mu.Unlock()
	require.True(t, talkerUp, "a caller that keeps sending was cut off")
	require.Equal(t, sip.StatusOK, talker.inDialog(sip.BYE, "", "").StatusCode)

	got := untilSentinel(t, in, consumer)
	ended := map[string]*batonv1.CallEnded{}
	endedAt := map[string]time.Time{}
	for _, ev := range got {
		if e, ok := ev.Data.(*batonv1.CallEnded); ok {
			require.NotContains(t, ended, e.GetCallId(), "two CallEnded for one call")
			ended[e.GetCallId()] = e
			endedAt[e.GetCallId()] = ev.Time
		}
	}
	require.Len(t, ended, 3)
	for _, id := range []string{mute.callID, stopper.callID} {
		e := ended[id]
		require.Equal(t, batonv1.Party_PARTY_BATON, e.GetEndedBy(), id)
		require.Equal(t, "BYE", e.GetMethod(), id)
		require.Equal(t, reasonMediaTimeout, e.GetReason(), id)
	}
	require.Zero(t, ended[mute.callID].GetMedia().GetPackets())
	require.EqualValues(t, stopperPackets, ended[stopper.callID].GetMedia().GetPackets())
	muteAfter := endedAt[mute.callID].Sub(answered)
	stopperAfter := endedAt[stopper.callID].Sub(stoppedAt)
	require.GreaterOrEqual(t, muteAfter, timeout*9/10, "ended before the timeout")
	require.GreaterOrEqual(t, stopperAfter, timeout*9/10, "ended before the timeout")
	te := ended[talker.callID]
	require.Equal(t, batonv1.Party_PARTY_REMOTE, te.GetEndedBy())
	require.EqualValues(t, talkerPackets, te.GetMedia().GetPackets())

	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 6, Test: t.Name(),
		Load:   fmt.Sprintf("3 calls over UDP, 20 ms RTP: %d packets then BYE / %d packets then silence / none", talkerPackets, stopperPackets),
		Faults: fmt.Sprintf("RTP stops (or never starts); rtp.media_timeout %v", timeout),
		Inputs: "raw UDP SBC and RTP sockets",
		Lost: fmt.Sprintf("silent calls ended by BYE + CallEnded{BATON, media_timeout}: mute after %.1fs, stopper %.1fs after its last packet (%d packets counted); talker kept up, %d of %d packets counted, ended by its own BYE",
			muteAfter.Seconds(), stopperAfter.Seconds(), ended[stopper.callID].GetMedia().GetPackets(),
			te.GetMedia().GetPackets(), talkerPackets),
	})
}
