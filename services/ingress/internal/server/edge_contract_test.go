package server

import (
	"bytes"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
	"github.com/baton-voice/baton/services/ingress/internal/numbers"
)

// TestInviteCallIDLongerThanSubjectRefused: an INVITE whose Call-ID is
// longer than an event subject may be (every consumer rejects such
// records) gets 400 from the validation gate, counted as invalid, with no
// call in the table and nothing published; one at the limit is a call
// like any other (issue 14, finding 10).
func TestInviteCallIDLongerThanSubjectRefused(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, nil)
	consumer := newCalls(t, brokers, topics.Calls)
	sbc := newRawSBC(t)

	tooLong := strings.Repeat("L", events.MaxSubjectLen+1)
	sbc.send(t, in.srv.Addr(), rawRequest(sip.INVITE, in.port, sbc.port, tooLong, "z9hG4bK-too-long", "", offer, 1))
	res := finalOrProbe(t, sbc)
	require.Equal(t, sip.StatusBadRequest, res.StatusCode, res.Short())
	require.Equal(t, "Call-ID Too Long", res.Reason)
	require.Equal(t, tooLong, res.CallID().Value())
	require.EqualValues(t, 1, in.srv.Stats().Invalid.Load(), "counted as baton_ingress_rejected_total{reason=\"invalid\"}")
	in.srv.mu.Lock()
	require.Empty(t, in.srv.calls, "a refused INVITE leaves no call")
	in.srv.mu.Unlock()

	// The longest Call-ID the contract carries is a call, and its
	// CallStarted is the first event on the topic: the refused INVITE
	// published nothing.
	longest := strings.Repeat("K", events.MaxSubjectLen)
	sbc.send(t, in.srv.Addr(), rawRequest(sip.INVITE, in.port, sbc.port, longest, "z9hG4bK-longest", "", offer, 1))
	require.Equal(t, sip.StatusOK, finalOrProbe(t, sbc).StatusCode)
	ev := consumer.next(t)
	require.Equal(t, events.TypeCallStarted, ev.Type)
	require.Equal(t, longest, ev.Subject)
	require.EqualValues(t, 1, in.srv.Stats().Invalid.Load())
}

// TestControlCharactersNeverPublishedAsNumbers: a From or To user part
// that decodes to terminal control sequences is never published as a
// number (issue 14, finding 9). Sent raw behind a backslash (a quoted-pair
// outside a quoted string, which RFC 3261 does not have) the gate refuses
// the INVITE; percent-encoded, the call goes on and the number is refused
// after decoding: empty, or the trunk's next source, and counted.
func TestControlCharactersNeverPublishedAsNumbers(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, func(c *config.Config) {
		c.Trunks = []config.Trunk{{
			Name: "sbc", Sources: []string{"127.0.0.0/8"},
			CallerFrom: []numbers.Source{numbers.From},
			CalleeFrom: []numbers.Source{numbers.To, numbers.RequestURI},
		}}
	})
	consumer := newCalls(t, brokers, topics.Calls)
	sbc := newRawSBC(t)
	withParties := func(msg []byte, from, to string) []byte {
		msg = bytes.Replace(msg, []byte("From: <sip:+15550100@127.0.0.1>"), []byte("From: "+from), 1)
		return bytes.Replace(msg, []byte("To: <sip:+15550200@127.0.0.1>"), []byte("To: "+to), 1)
	}

	// A quoted-pair outside quotes: a raw ESC in the header, refused by
	// the gate. Echoing the To would put the ESC on the wire, so no answer
	// comes: the probe's answer shows the INVITE's turn has passed.
	sbc.send(t, in.srv.Addr(), withParties(rawRequest(sip.INVITE, in.port, sbc.port, "quoted-pair", "z9hG4bK-qp", "", offer, 1),
		"<sip:+15550100@127.0.0.1>", "<sip:\\\x1b%5b2J\\\a@127.0.0.1>"))
	sbc.send(t, in.srv.Addr(), rawRequest(sip.OPTIONS, in.port, sbc.port, "probe", "z9hG4bK-probe", "", "", 1))
	res := finalOrProbe(t, sbc)
	require.Equal(t, "probe", res.CallID().Value(), "the INVITE was answered %d", res.StatusCode)
	require.EqualValues(t, 1, in.srv.Stats().Invalid.Load())

	// Percent-encoded: "\x1b[2J\x1b]0;owned\a" once decoded.
	owned := "%1b%5b2J%1b%5d0%3bowned%07"
	sbc.send(t, in.srv.Addr(), withParties(rawRequest(sip.INVITE, in.port, sbc.port, "percent", "z9hG4bK-pct", "", offer, 1),
		"<sip:"+owned+"@127.0.0.1>;tag=raw", "<sip:"+owned+"@127.0.0.1>"))
	require.Equal(t, sip.StatusOK, finalOrProbe(t, sbc).StatusCode)

	ev := consumer.next(t)
	require.Equal(t, "percent", ev.Subject, "the refused INVITE published nothing")
	started := ev.Data.(*batonv1.CallStarted)
	require.Empty(t, started.GetCallerNumber(), "no source left for the caller: no number")
	require.Empty(t, started.GetCallerNumberRaw())
	require.Equal(t, "+15550200", started.GetCalleeNumber(), "the callee comes from the next source, the Request-URI")
	require.Equal(t, "+15550200", started.GetCalleeNumberRaw())
	require.EqualValues(t, 2, in.srv.Stats().RefusedNumbers.Load())
	for _, s := range []string{started.GetCallerNumber(), started.GetCallerNumberRaw(), started.GetCalleeNumber(), started.GetCalleeNumberRaw()} {
		require.NotContains(t, s, "\x1b")
		require.NotContains(t, s, "\a")
	}
}
