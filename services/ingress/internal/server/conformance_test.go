package server

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
	"github.com/baton-voice/baton/services/ingress/internal/numbers"
)

// wire is the final answer each RFC 4475 message gets from a running
// ingress over UDP; 0 means none at all.
var wire = map[string]int{
	"valid/dblreq": 405, "valid/esc01": 200, "valid/esc02": 501, "valid/escnull": 405,
	"valid/intmeth": 501, "valid/longreq": 200, "valid/lwsdisp": 200, "valid/mpart01": 405,
	"valid/noreason": 0, "valid/semiuri": 200, "valid/transports": 200, "valid/unreason": 0,
	"valid/wsinv": 481, // its To has a tag: a dialog ingress does not know

	"invalid/badaspec": 400, "invalid/badbranch": 400, "invalid/baddate": 400, "invalid/baddn": 400,
	"invalid/badinv01": 400, "invalid/badvers": 505, "invalid/bcast": 0, "invalid/bext01": 420,
	"invalid/bigcode": 0, "invalid/clerr": 400, "invalid/cparam01": 405, "invalid/cparam02": 405,
	"invalid/escruri": 400, "invalid/insuf": 400, "invalid/inv2543": 400, "invalid/invut": 415,
	"invalid/ltgtruri": 400, "invalid/lwsruri": 400, "invalid/lwsstart": 400, "invalid/mcl01": 400,
	"invalid/mismatch01": 400, "invalid/mismatch02": 400, "invalid/multi01": 400, "invalid/ncl": 400,
	"invalid/novelsc": 416, "invalid/quotbal": 400, "invalid/regaut01": 405, "invalid/regbadct": 400,
	"invalid/regescrt": 405, "invalid/scalar02": 400, "invalid/scalarlg": 0, "invalid/sdp01": 406,
	"invalid/test": 0, "invalid/trws": 400, "invalid/unkscm": 416, "invalid/unksm2": 405,
	"invalid/zeromf": 200,
}

// answered are the corpus INVITEs that become calls.
var answered = []string{"esc01.239409asdfakjkn23onasd0-3234", "longreq.onereallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallylongcallid"}

// finalOrProbe reads responses on sbc until a final one; the probe's
// Call-ID marks the end when the message under test got no answer.
func finalOrProbe(t *testing.T, sbc *rawSBC) *sip.Response {
	t.Helper()
	for {
		res := sbc.read(t, 10*time.Second)
		require.NotNil(t, res, "no answer at all, not even to the probe")
		if res.StatusCode >= 200 {
			return res
		}
	}
}

// rawFinal reads until a final response and returns its status and
// Call-ID from the text: a refusal echoes the request's malformed headers,
// which sipgo's parser may not read.
func rawFinal(t *testing.T, sbc *rawSBC) (int, string) {
	t.Helper()
	for {
		require.NoError(t, sbc.conn.SetReadDeadline(time.Now().Add(10*time.Second)))
		n, _, err := sbc.conn.ReadFromUDP(sbc.buf)
		require.NoError(t, err, "no answer at all, not even to the probe")
		lines := strings.Split(string(sbc.buf[:n]), "\r\n")
		var code int
		_, err = fmt.Sscanf(lines[0], "SIP/2.0 %d", &code)
		require.NoError(t, err, lines[0])
		if code < 200 {
			continue
		}
		callID := ""
		for _, l := range lines[1:] {
			if v, ok := strings.CutPrefix(l, "Call-ID: "); ok {
				callID = v
			}
		}
		return code, callID
	}
}

func TestRFC4475Corpus(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	consumer := newCalls(t, brokers, topics.Calls)
	stats := map[string]uint64{}

	files, err := filepath.Glob("../../testdata/rfc4475/*/*.dat")
	require.NoError(t, err)
	require.Len(t, files, len(wire))
	wantInvalid, wantDropped, wantStray := 0, 0, 0
	for _, f := range files {
		name := filepath.Base(filepath.Dir(f)) + "/" + strings.TrimSuffix(filepath.Base(f), ".dat")
		want, ok := wire[name]
		require.True(t, ok, name)
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		switch {
		case want == 0 && strings.HasPrefix(string(data), "SIP/") && name != "invalid/bigcode" && name != "invalid/scalarlg":
			wantStray++
		case want == 0:
			wantDropped++
		case want != 200 && want != 405 && want != 501 && want != 481: // those come from the handlers
			wantInvalid++
		}
		t.Run(name, func(t *testing.T) {
			// A server per message: many corpus messages share a branch
			// and sent-by, so one server would take them for
			// retransmissions of each other (RFC 3261 17.2.3).
			in := startIngress(t, brokers, nil)
			t.Cleanup(func() {
				for k, v := range in.srv.Stats().Snapshot() {
					stats[k] += v
				}
			})
			sbc := newRawSBC(t)
			sbc.send(t, in.srv.Addr(), data)
			probeID := "probe-" + sip.GenerateTagN(8)
			if want == 0 {
				sbc.send(t, in.srv.Addr(), rawRequest(sip.OPTIONS, in.port, sbc.port, probeID, "z9hG4bK-"+probeID, "", "", 1))
			}
			code, callID := rawFinal(t, sbc)
			if want == 0 {
				require.Equal(t, probeID, callID, "the message got an answer: %d", code)
				require.Equal(t, sip.StatusOK, code)
				return
			}
			require.Equal(t, want, code)
		})
	}

	// A sentinel call: every event before its CallStarted is one of the
	// corpus calls, so no refused message produced an event.
	in := startIngress(t, brokers, nil)
	sbc := newRawSBC(t)
	sbc.send(t, in.srv.Addr(), rawRequest(sip.INVITE, in.port, sbc.port, "sentinel", "z9hG4bK-sentinel", "", offer, 1))
	require.Equal(t, sip.StatusOK, finalOrProbe(t, sbc).StatusCode)
	var got []string
	for {
		ev := consumer.next(t)
		require.Equal(t, events.TypeCallStarted, ev.Type)
		if ev.Subject == "sentinel" {
			break
		}
		got = append(got, ev.Subject)
	}
	sort.Strings(got)
	require.Equal(t, answered, got)

	require.EqualValues(t, wantInvalid, stats["invalid"])
	require.EqualValues(t, wantDropped, stats["dropped"])
	require.EqualValues(t, wantStray, stats["stray_responses"])
	require.Zero(t, stats["acl_dropped"])
}

func TestACLDropsUnknownSources(t *testing.T) {
	t.Parallel()
	in := startIngress(t, []string{"127.0.0.1:1"}, func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "sbc", Sources: []string{"127.0.0.1"}}}
	})
	stranger, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, stranger.Close()) })
	me := stranger.LocalAddr().(*net.UDPAddr).Port
	_, err = stranger.WriteToUDP(rawRequest(sip.OPTIONS, in.port, me, "stranger", "z9hG4bK-s1", "", "", 1), in.srv.Addr())
	require.NoError(t, err)

	// The trunk's own OPTIONS, sent after, is answered; by then the
	// stranger's datagram has been read (one reader, in order).
	sbc := newRawSBC(t)
	sbc.send(t, in.srv.Addr(), rawRequest(sip.OPTIONS, in.port, sbc.port, "friend", "z9hG4bK-f1", "", "", 1))
	res := finalOrProbe(t, sbc)
	require.Equal(t, "friend", res.CallID().Value())
	require.EqualValues(t, 1, in.srv.Stats().ACLDropped.Load())

	buf := make([]byte, 2048)
	require.NoError(t, stranger.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	_, _, err = stranger.ReadFromUDP(buf)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "a source no trunk allows got an answer")
}

func TestTrunkNumbers(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, func(c *config.Config) {
		c.Trunks = []config.Trunk{
			{Name: "elsewhere", Sources: []string{"10.0.0.0/8"}},
			{
				Name: "us-carrier", Sources: []string{"127.0.0.0/8", "::1"}, Region: "US",
				CallerFrom: []numbers.Source{numbers.PAI, numbers.From},
				CalleeFrom: []numbers.Source{numbers.Diversion, numbers.To},
			},
		}
	})
	consumer := newCalls(t, brokers, topics.Calls)
	sbc := newRawSBC(t)
	sbc.send(t, in.srv.Addr(), rawRequest(sip.INVITE, in.port, sbc.port, "numbers", "z9hG4bK-n1", "", offer, 1,
		"P-Asserted-Identity: <sip:(415)%20555-0100@carrier.example.com>\r\n",
		"Diversion: <sip:4155550166@pbx.example.com>;reason=unconditional\r\n"))
	require.Equal(t, sip.StatusOK, finalOrProbe(t, sbc).StatusCode)
	ev := consumer.next(t)
	started := ev.Data.(*batonv1.CallStarted)
	require.Equal(t, "us-carrier", started.GetTrunk())
	require.Equal(t, "+14155550100", started.GetCallerNumber())
	require.Equal(t, "(415) 555-0100", started.GetCallerNumberRaw())
	require.Equal(t, "+14155550166", started.GetCalleeNumber())
	require.Equal(t, "4155550166", started.GetCalleeNumberRaw())
}

func TestOverload(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)

	t.Run("max_cps", func(t *testing.T) {
		in := startIngress(t, brokers, func(c *config.Config) { c.Limits.MaxCPS = 2; c.Limits.RetryAfter = 7 * time.Second })
		sbc := newRawSBC(t)
		var third []byte
		for i := range 3 {
			msg := rawRequest(sip.INVITE, in.port, sbc.port, fmt.Sprintf("cps-%d", i), fmt.Sprintf("z9hG4bK-cps-%d", i), "", offer, 1)
			sbc.send(t, in.srv.Addr(), msg)
			// The first call's retransmission uses no token.
			if i == 0 {
				sbc.send(t, in.srv.Addr(), msg)
			}
			third = msg
		}
		sbc.send(t, in.srv.Addr(), third) // a retransmission of the refused one
		finals := map[string][]int{}
		for len(finals["cps-0"]) < 1 || len(finals["cps-1"]) < 1 || len(finals["cps-2"]) < 2 {
			res := finalOrProbe(t, sbc)
			if res.StatusCode == sip.StatusServiceUnavailable {
				require.Equal(t, "7", res.GetHeader("Retry-After").Value())
			}
			finals[res.CallID().Value()] = append(finals[res.CallID().Value()], res.StatusCode)
		}
		require.Equal(t, sip.StatusOK, finals["cps-0"][0])
		require.Equal(t, sip.StatusOK, finals["cps-1"][0])
		require.Equal(t, []int{503, 503}, finals["cps-2"])
		require.EqualValues(t, 1, in.srv.Stats().OverloadRate.Load(), "a retransmission was counted")
	})

	t.Run("max_calls", func(t *testing.T) {
		in := startIngress(t, brokers, func(c *config.Config) { c.Limits.MaxCalls = 1 })
		sbc := newRawSBC(t)
		sbc.send(t, in.srv.Addr(), rawRequest(sip.INVITE, in.port, sbc.port, "calls-1", "z9hG4bK-calls-1", "", offer, 1))
		require.Equal(t, sip.StatusOK, finalOrProbe(t, sbc).StatusCode)
		sbc.send(t, in.srv.Addr(), rawRequest(sip.INVITE, in.port, sbc.port, "calls-2", "z9hG4bK-calls-2", "", offer, 1))
		for {
			res := finalOrProbe(t, sbc)
			if res.CallID().Value() == "calls-2" {
				require.Equal(t, sip.StatusServiceUnavailable, res.StatusCode)
				break
			}
		}
		require.EqualValues(t, 1, in.srv.Stats().OverloadCalls.Load())
	})
}
