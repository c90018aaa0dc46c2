package server

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
)

// referRig is ingress under refer.policy route on a kfake cluster, with a
// reader of the calls topic and a producer that plays the router and
// transfer.
type referRig struct {
	in       *ingress
	topics   kafka.Topics
	consumer *calls
	cl       *kgo.Client
}

func newReferRig(t *testing.T, maxPerCall int) *referRig {
	t.Helper()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, func(c *config.Config) {
		c.Refer = config.Refer{Policy: config.ReferRoute, MaxPerCall: maxPerCall}
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return &referRig{in: in, topics: topics, consumer: newCalls(t, brokers, topics.Calls), cl: cl}
}

// until reads the calls topic up to the next event of type typ; the ones
// before it are returned too.
func (r *referRig) until(t *testing.T, typ string) (events.Event, []events.Event) {
	t.Helper()
	var skipped []events.Event
	for {
		ev := r.consumer.next(t)
		if ev.Type == typ {
			return ev, skipped
		}
		skipped = append(skipped, ev)
	}
}

func (r *referRig) produce(t *testing.T, topic, source, callID string, msg proto.Message) {
	t.Helper()
	ev, err := events.New(source, callID, msg, time.Now())
	require.NoError(t, err)
	rec, err := events.Encode(topic, ev)
	require.NoError(t, err)
	require.NoError(t, r.cl.ProduceSync(t.Context(), rec).FirstErr())
}

// refuse plays the router refusing the handoff an InboundReferReceived
// asked for.
func (r *referRig) refuse(t *testing.T, ev events.Event) {
	t.Helper()
	m := ev.Data.(*batonv1.InboundReferReceived)
	r.produce(t, r.topics.Handoffs, "baton/router", ev.Subject, &batonv1.HandoffRefused{
		CallId: ev.Subject, RequestId: m.GetReferId(), Destination: m.GetReferTo(), ReasonCode: "number_denied"})
}

// TestSIPpInboundReferDefaultRefuses: without a refer section, every
// inbound REFER is answered 405 as before the policy existed (SIPp exits
// 0 only then), and no InboundReferReceived is published.
func TestSIPpInboundReferDefaultRefuses(t *testing.T) {
	sippBin(t)
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, nil)
	require.False(t, in.cfg.Refer.Routes())
	consumer := newCalls(t, brokers, topics.Calls)
	runSIPp(t, in, "ingress_refer_inbound.xml", 1)
	require.Equal(t, events.TypeCallStarted, consumer.next(t).Type)
	require.Equal(t, events.TypeCallEnded, consumer.next(t).Type)
}

// TestSIPpInboundReferRouted: a REFER accepted by policy. Ingress answers
// 202, NOTIFYs 100 Trying, publishes the fact with the embedded X-
// headers stripped, answers a second REFER 491 while the first is
// pending, and NOTIFYs 200 OK (terminated) once the router's command for
// the REFER was bridged by transfer. SIPp checks every NOTIFY's Event,
// Subscription-State, Content-Type and sipfrag.
func TestSIPpInboundReferRouted(t *testing.T) {
	sippBin(t)
	t.Parallel()
	r := newReferRig(t, 0)
	sbc := startSIPp(t, r.in, "ingress_refer_routed.xml", 1)

	ev, _ := r.until(t, events.TypeInboundRefer)
	m := ev.Data.(*batonv1.InboundReferReceived)
	require.Equal(t, ev.Subject, m.GetCallId())
	require.Equal(t, "r1", m.GetReferId())
	require.Equal(t, "sip:+15550300@pbx.example.com", m.GetReferTo(), "embedded headers are not part of the target")
	require.Equal(t, []string{"X-Bill-To", "X-Customer-Id"}, m.GetStrippedHeaders())
	require.Contains(t, m.GetReferredBy(), "sip:+15550100@127.0.0.1")
	require.Equal(t, uint32(2), m.GetCseq())
	require.Equal(t, uint32(referCSeqBase), m.GetNotifyCseq())

	// The INFO SIPp sends after its 491: the second REFER was refused
	// while the first was pending, so the outcome may come now.
	_, between := r.until(t, events.TypeDtmfReceived)
	for _, e := range between {
		require.NotEqual(t, events.TypeInboundRefer, e.Type, "the REFER answered 491 was published")
	}
	const commandID = "cmd-refer-1"
	// An outcome of another command first: it is not the REFER's.
	r.produce(t, r.topics.Transfers, "baton/transfer", ev.Subject, &batonv1.TransferOutcome{
		CommandId: "cmd-other", CallId: ev.Subject, Status: batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, SipCode: 486})
	// The outcome before the command (the topics are read independently).
	r.produce(t, r.topics.Transfers, "baton/transfer", ev.Subject, &batonv1.TransferOutcome{
		CommandId: commandID, CallId: ev.Subject, Method: batonv1.Method_METHOD_INVITE,
		Status: batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED})
	r.produce(t, r.topics.Handoffs, "baton/router", ev.Subject, &batonv1.HandoffCommand{
		CommandId: commandID, CallId: ev.Subject, RequestId: m.GetReferId(), Method: batonv1.Method_METHOD_INVITE,
		Route: m.GetReferTo()})
	sbc.wait(t) // the final NOTIFY carried 200 OK, then the BYE
	_, _ = r.until(t, events.TypeCallEnded)
}

// TestSIPpInboundReferRefused: toll fraud. A Refer-To with Replaces, a
// non-SIP URI and a REFER with two Refer-To are refused by ingress (403,
// 403, 400) and never published; a premium number is published, the
// router refuses it, and ingress NOTIFYs 603 Declined (terminated).
func TestSIPpInboundReferRefused(t *testing.T) {
	sippBin(t)
	t.Parallel()
	r := newReferRig(t, 0)
	sbc := startSIPp(t, r.in, "ingress_refer_refused.xml", 1)

	ev, skipped := r.until(t, events.TypeInboundRefer)
	require.Len(t, skipped, 1, "only CallStarted before the premium REFER: %v", skipped)
	m := ev.Data.(*batonv1.InboundReferReceived)
	require.Equal(t, "sip:+19005550199@premium-rate.example", m.GetReferTo())
	require.Equal(t, "r1", m.GetReferId(), "the REFERs ingress refused itself took no refer id")
	require.Equal(t, uint32(5), m.GetCseq())
	r.refuse(t, ev)
	sbc.wait(t)
	_, after := r.until(t, events.TypeCallEnded)
	require.Empty(t, after)
}

// TestSIPpInboundReferFlood: refer.max_per_call bounds the REFERs of one
// dialog. With a bound of 2, two are published (and refused by the
// router: NOTIFY 603 each), the next four get 403 and are not published.
func TestSIPpInboundReferFlood(t *testing.T) {
	sippBin(t)
	t.Parallel()
	r := newReferRig(t, 2)
	sbc := startSIPp(t, r.in, "ingress_refer_flood.xml", 1)
	for i := range 2 {
		ev, _ := r.until(t, events.TypeInboundRefer)
		require.Equal(t, []string{"r1", "r2"}[i], ev.Data.(*batonv1.InboundReferReceived).GetReferId())
		require.Equal(t, uint32(referCSeqBase+i*referCSeqBlock), ev.Data.(*batonv1.InboundReferReceived).GetNotifyCseq())
		r.refuse(t, ev)
	}
	sbc.wait(t) // exits 0 only when the four last REFERs got 403
	_, between := r.until(t, events.TypeCallEnded)
	for _, e := range between {
		require.NotEqual(t, events.TypeInboundRefer, e.Type, "a REFER beyond the bound was published")
	}
}

// TestParseReferTo: what ingress takes from a Refer-To, strips, and
// refuses.
func TestParseReferTo(t *testing.T) {
	for _, tc := range []struct {
		in, uri  string
		stripped []string
		err      error
	}{
		{in: "<sip:+15550300@pbx.example.com>", uri: "sip:+15550300@pbx.example.com"},
		{in: `"Desk" <sips:desk@pbx.example.com;transport=tls>;x=1`, uri: "sips:desk@pbx.example.com;transport=tls"},
		{in: "sip:desk@pbx.example.com", uri: "sip:desk@pbx.example.com"},
		{in: "<tel:+15550300>", uri: "tel:+15550300"},
		{in: "<sip:a@pbx.example.com?X-Bill-To=victim&Subject=hi>", uri: "sip:a@pbx.example.com", stripped: []string{"X-Bill-To", "Subject"}},
		{in: "<sip:a@pbx.example.com?x%0D%0AVia=evil>", uri: "sip:a@pbx.example.com", stripped: []string{"x??Via"}},
		{in: "<sip:a@pbx.example.com?replaces=abc%3Bto-tag%3D1>", err: errReferReplaces},
		{in: "<sip:a@pbx.example.com?X-A=1&Replaces=abc>", err: errReferReplaces},
		{in: "<http://evil.example/>", err: errReferScheme},
		{in: "<mailto:x@evil.example>", err: errReferScheme},
		{in: "<sip:a@pbx.example.com", err: errReferTo},
		{in: "<>", err: errReferTo},
		{in: "<sip:>", err: errReferTo},
		{in: "<sip:a b@pbx.example.com>", err: errReferTo},
		{in: "desk;x=1", err: errReferTo},
		{in: "<sip:a@pbx.example.com?X=%ZZ>", err: errReferTo},
		{in: "<sip:" + string(make([]byte, 600)) + ">", err: errReferTo},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseReferTo(tc.in)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.uri, got.uri)
			require.Equal(t, tc.stripped, got.stripped)
		})
	}
}

// FuzzParseReferTo: any Refer-To gives a target without control
// characters, '?' or '<', or an error; never a crash.
func FuzzParseReferTo(f *testing.F) {
	for _, s := range []string{"<sip:a@b>", "<sip:a@b?X-A=1&Replaces=x>", "tel:+1", `"x" <sips:a@b;lr>;p=1`, "<sip:a@b?%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := parseReferTo(in)
		if err != nil {
			return
		}
		require.NotContains(t, got.uri, "?")
		require.NotContains(t, got.uri, "<")
		require.LessOrEqual(t, len(got.uri), maxReferURI)
		require.LessOrEqual(t, len(got.stripped), maxStripped)
		for _, r := range got.uri {
			require.False(t, r < 0x20 || r == 0x7f, "control character in %q", got.uri)
		}
	})
}
