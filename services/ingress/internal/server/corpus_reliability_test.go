//go:build reliability

package server

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/pkg/reliabilitytest"
)

// wire5118 is the final answer each IPv6 torture message (after RFC 5118,
// testdata/rfc5118/README.md) gets from a running ingress over UDP.
var wire5118 = map[string]int{
	"valid/ipv6-good": 200, "valid/port-ambiguous": 200, "valid/port-unambiguous": 200,
	"valid/via-received-bracketed": 200, "valid/via-received-bare": 200, "valid/ipv6-in-sdp": 200,
	"valid/mult-ip-in-header": 200, "valid/mult-ip-in-sdp": 200, "valid/ipv4-mapped": 200,
	"valid/abnf-two-colons": 200, "valid/abnf-three-colons": 200,

	"invalid/ipv6-bare-request-uri": 400, "invalid/ipv6-bare-contact": 400, "invalid/ipv6-bare-via": 400,
	"invalid/ipv6-bare-from": 400, "invalid/ipv6-two-double-colons": 400, "invalid/ipv6-unclosed": 400,
	"invalid/ipv6-port-no-colon": 400, "invalid/ipv6-zone": 400, "invalid/three-colons-no-ipv4": 400,
	"invalid/sdp-ip4-with-ipv6": 488, "invalid/sdp-ip6-with-ipv4": 488,
}

// answered5118 are the IPv6 corpus INVITEs that become calls (Call-IDs).
var answered5118 = []string{"ipv4-mapped.5118@baton.test", "ipv6-good.5118@baton.test", "ipv6-in-sdp.5118@baton.test", "mult-ip-in-sdp.5118@baton.test"}

// handlerAnswers are statuses that mean the validator let the message
// through and a handler answered it (the method or the dialog decided).
var handlerAnswers = map[int]bool{200: true, 405: true, 481: true, 501: true}

type corpusMessage struct {
	corpus, name string
	data         []byte
	want         int
}

func loadCorpus(t *testing.T, dir string, want map[string]int) []corpusMessage {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("../../testdata", dir, "*", "*.dat"))
	require.NoError(t, err)
	require.Len(t, files, len(want), "every %s file needs an answer", dir)
	var out []corpusMessage
	for _, f := range files {
		name := filepath.Base(filepath.Dir(f)) + "/" + strings.TrimSuffix(filepath.Base(f), ".dat")
		w, ok := want[name]
		require.True(t, ok, "no answer for %s/%s", dir, name)
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		out = append(out, corpusMessage{corpus: dir, name: name, data: data, want: w})
	}
	return out
}

// TestReliabilityCorpus drives the RFC 4475 and RFC 5118 (IPv6) torture
// corpora over real UDP through a running ingress: every valid message is
// let through (answered by a handler), every malformed one is answered
// 4xx/5xx by the validator or dropped as documented, and no event exists
// for any rejected message.
func TestReliabilityCorpus(t *testing.T) {
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	consumer := newCalls(t, brokers, topics.Calls)

	msgs := append(loadCorpus(t, "rfc4475", wire), loadCorpus(t, "rfc5118", wire5118)...)
	stats := map[string]uint64{}
	var (
		mu       sync.Mutex
		accepted int
		rejected = map[int]int{} // by status; 0 = dropped without an answer
		refused  = map[string]bool{}
	)
	for _, m := range msgs {
		t.Run(m.corpus+"/"+m.name, func(t *testing.T) {
			// A server per message: corpus messages share branches and
			// sent-by, so one server would take them for retransmissions.
			in := startIngress(t, brokers, nil)
			t.Cleanup(func() {
				for k, v := range in.srv.Stats().Snapshot() {
					stats[k] += v
				}
			})
			sbc := newRawSBC(t)
			sbc.send(t, in.srv.Addr(), m.data)
			probeID := "probe-" + sip.GenerateTagN(8)
			if m.want == 0 {
				sbc.send(t, in.srv.Addr(), rawRequest(sip.OPTIONS, in.port, sbc.port, probeID, "z9hG4bK-"+probeID, "", "", 1))
			}
			code, callID := rawFinal(t, sbc)
			if m.want == 0 {
				require.Equal(t, probeID, callID, "the message got an answer: %d", code)
				code = 0
			}
			require.Equal(t, m.want, code)
			if strings.HasPrefix(m.name, "valid/") {
				// A valid request reaches a handler; a valid response
				// (ingress sends no requests) is dropped as stray.
				require.True(t, handlerAnswers[code] || code == 0 && strings.HasPrefix(string(m.data), "SIP/2.0 "),
					"a valid message was refused: %d", code)
			}
			mu.Lock()
			defer mu.Unlock()
			if handlerAnswers[code] {
				accepted++
				return
			}
			rejected[code]++
			if id := callIDOf(m.data); id != "" {
				refused[id] = true
			}
		})
	}
	if t.Failed() {
		return
	}

	// Every event before the sentinel's CallStarted is a corpus call's.
	got := untilSentinel(t, startIngress(t, brokers, nil), consumer)
	var calls []string
	eventsForRejected := 0
	for _, ev := range got {
		require.Equal(t, events.TypeCallStarted, ev.Type)
		calls = append(calls, ev.Subject)
		if refused[ev.Subject] {
			eventsForRejected++
		}
	}
	sort.Strings(calls)
	want := slices.Sorted(slices.Values(append(slices.Clone(answered), answered5118...)))
	require.Equal(t, want, calls)
	require.Zero(t, eventsForRejected)
	require.Zero(t, stats["acl_dropped"])

	codes := slices.Sorted(maps.Keys(rejected))
	var byStatus []string
	nRejected := 0
	for _, c := range codes {
		label := strconv.Itoa(c)
		if c == 0 {
			label = "dropped or stray"
		}
		byStatus = append(byStatus, fmt.Sprintf("%s x%d", label, rejected[c]))
		nRejected += rejected[c]
	}
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 1, Test: t.Name(),
		Load:   fmt.Sprintf("%d messages, one UDP datagram each, a fresh ingress per message", len(msgs)),
		Faults: "malformed, hostile and IPv6 torture SIP",
		Inputs: fmt.Sprintf("RFC 4475 corpus (%d), RFC 5118 cases (%d, Baton's own)", len(wire), len(wire5118)),
		Lost: fmt.Sprintf("%d tried: %d let through (answered by a handler; %d became calls), %d rejected (%s); events for rejected: %d",
			len(msgs), accepted, len(calls), nRejected, strings.Join(byStatus, ", "), eventsForRejected),
	})
}

// callIDOf reads a message's Call-ID (long or compact) from its text.
func callIDOf(data []byte) string {
	head, _, _ := strings.Cut(string(data), "\r\n\r\n")
	for _, l := range strings.Split(head, "\r\n") {
		name, v, ok := strings.Cut(l, ":")
		if ok && (strings.EqualFold(strings.TrimSpace(name), "Call-ID") || strings.EqualFold(strings.TrimSpace(name), "i")) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// hostile renders malformed datagram i; marker sits in header values and
// bodies (never in the Call-ID, which is logged on purpose).
func hostile(i, port, me int, marker string) []byte {
	callID := fmt.Sprintf("flood-%d", i)
	branch := fmt.Sprintf("z9hG4bK-flood-%d", i)
	body := "v=0\r\no=" + marker + " 1 1 IN IP4 127.0.0.1\r\ns=" + marker + "\r\n"
	head := func(method, ruri, extra string) string {
		return fmt.Sprintf("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=%s\r\n"+
			"From: \"%s\" <sip:caller@127.0.0.1>;tag=x\r\nTo: <sip:%s@127.0.0.1>\r\nCall-ID: %s\r\n"+
			"X-Marker: %s\r\n%s", method, ruri, me, branch, marker, marker, callID, marker, extra)
	}
	ruri := fmt.Sprintf("sip:+15550200@127.0.0.1:%d", port)
	switch i % 10 {
	case 0: // no Max-Forwards
		return []byte(head("INVITE", ruri, "CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n") + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body))
	case 1: // CSeq method mismatch
		return []byte(head("INVITE", ruri, "CSeq: 1 BYE\r\nMax-Forwards: 70\r\n") + "Content-Length: 0\r\n\r\n")
	case 2: // Content-Length beyond the datagram
		return []byte(head("INVITE", ruri, "CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n") + "Content-Length: 9999\r\n\r\n" + body)
	case 3: // unknown Request-URI scheme (416)
		return []byte(head("OPTIONS", "bti:"+marker+"@example.com", "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n") + "Content-Length: 0\r\n\r\n")
	case 4: // Require an extension (420)
		return []byte(head("OPTIONS", ruri, "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nRequire: "+marker+"\r\n") + "Content-Length: 0\r\n\r\n")
	case 5: // bare LF inside a header value
		return []byte(head("OPTIONS", ruri, "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nSubject: a\n"+marker+"\r\n") + "Content-Length: 0\r\n\r\n")
	case 6: // not SIP at all
		return []byte("GET /" + marker + " HTTP/1.1\r\nHost: " + marker + "\r\n\r\n")
	case 7: // a response nobody asked for, malformed
		return []byte("SIP/2.0 999 " + marker + "\r\nCSeq: x\r\n\r\n")
	case 8: // unbracketed IPv6 Via
		return []byte(strings.Replace(head("OPTIONS", ruri, "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"),
			"SIP/2.0/UDP 127.0.0.1:", "SIP/2.0/UDP 2001:db8::1:", 1) + "Content-Length: 0\r\n\r\n")
	default: // NUL in a header value
		return []byte(head("OPTIONS", ruri, "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nSubject: "+marker+"\x00\r\n") + "Content-Length: 0\r\n\r\n")
	}
}

var suppressedRe = regexp.MustCompile(`suppressed=(\d+)`)

// TestReliabilityRejectLog floods a running ingress with malformed
// datagrams carrying a marker in header values and bodies: every one is
// counted, the log holds at most the limiter's bound of refusal lines
// (10 a second), those lines plus the counts they say were suppressed add
// up to the refusals, and the marker never reaches the log.
func TestReliabilityRejectLog(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	in := startIngressLogging(t, []string{"127.0.0.1:1"}, nil, logger)
	// The flood comes from its own socket, whose replies nobody reads (its
	// buffer may overflow); the probe's answer comes to sbc.
	flooder, sbc := newRawSBC(t), newRawSBC(t)
	marker := "BTIMARK" + sip.GenerateTagN(12)
	const n = 500

	began := time.Now()
	for i := range n {
		flooder.send(t, in.srv.Addr(), hostile(i, in.port, flooder.port, marker))
		if i%25 == 24 {
			time.Sleep(10 * time.Millisecond) // keep the socket buffers from overflowing
		}
	}
	// One reader: once the probe is answered every flood datagram was read.
	probe := "probe-" + sip.GenerateTagN(8)
	sbc.send(t, in.srv.Addr(), rawRequest(sip.OPTIONS, in.port, sbc.port, probe, "z9hG4bK-"+probe, "", "", 1))
	for {
		code, callID := rawFinal(t, sbc)
		if callID == probe {
			require.Equal(t, sip.StatusOK, code)
			break
		}
	}
	burst := time.Since(began)
	// A last refusal after the window: its line reports what the limiter
	// held back since the last line.
	time.Sleep(1100 * time.Millisecond)
	flooder.send(t, in.srv.Addr(), hostile(n, in.port, flooder.port, marker))
	require.Eventually(t, func() bool {
		st := in.srv.Stats()
		return st.Invalid.Load()+st.Dropped.Load()+st.StrayResponses.Load() == n+1
	}, 10*time.Second, 10*time.Millisecond)
	in.stop()

	st := in.srv.Stats()
	counted := st.Invalid.Load() + st.Dropped.Load() + st.StrayResponses.Load()
	text := logs.String()
	require.NotContains(t, text, marker, "packet content reached the log")
	var lines, suppressed int
	for _, l := range strings.Split(text, "\n") {
		if !strings.Contains(l, `msg="sip request refused"`) && !strings.Contains(l, `msg="sip message dropped"`) {
			continue
		}
		lines++
		if m := suppressedRe.FindStringSubmatch(l); m != nil {
			k, err := strconv.Atoi(m[1])
			require.NoError(t, err)
			suppressed += k
		}
	}
	// The limiter lets 10 through per started second of the burst, and
	// the last refusal's line.
	bound := 10*(int(math.Ceil(burst.Seconds()))+1) + 1
	require.Positive(t, lines)
	require.LessOrEqual(t, lines, bound)
	require.EqualValues(t, st.Invalid.Load()+st.Dropped.Load(), lines+suppressed,
		"each logged or suppressed refusal is one counted refusal")

	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 1, Test: t.Name(),
		Load:   fmt.Sprintf("%d malformed datagrams in %.2fs, then 1 after a second", n, burst.Seconds()),
		Faults: "10 kinds of malformation (missing/mismatched headers, bad length, 416, 420, bare LF, NUL, non-SIP, bad response, bare IPv6 Via)",
		Inputs: "a marker string in header values and bodies",
		Lost: fmt.Sprintf("%d of %d counted (invalid %d, dropped %d, stray %d); %d log lines (bound %d) + %d suppressed; marker in log: 0 times",
			counted, n+1, st.Invalid.Load(), st.Dropped.Load(), st.StrayResponses.Load(), lines, bound, suppressed),
	})
}
