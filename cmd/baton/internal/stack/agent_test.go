package stack

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/cmd/baton/internal/checker"
	"github.com/baton-voice/baton/pkg/agentbot"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/pcm"
)

// pattern is n bytes of µ-law audio that is never silence (0xff).
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = (seed + byte(i)) & 0x7f
	}
	return b
}

// agentStack is the pipeline with a test bot as every call's agent and
// the routers' agent API on.
type agentStack struct {
	*Stack
	token string

	mu  sync.Mutex
	api string // the first router's API, once the stack is up
}

// startAgentStack starts the pipeline with serve as the bot of every call.
func startAgentStack(t *testing.T, token string, serve func(ctx context.Context, s *agentbot.Session, a *agentStack)) *agentStack {
	t.Helper()
	a := &agentStack{token: token}
	bot := httptest.NewServer(&agentbot.Handler{Serve: func(ctx context.Context, s *agentbot.Session) { serve(ctx, s, a) }})
	t.Cleanup(bot.Close)
	st := startStackTuned(t, func(o *Options) {
		o.AgentURL = "ws" + strings.TrimPrefix(bot.URL, "http") + "/media"
		o.APIToken = token
	})
	a.mu.Lock()
	a.Stack, a.api = st, st.RouterAPI
	a.mu.Unlock()
	return a
}

// handoff asks the agent API for callID's handoff with body; the answer's
// status, 0 when none came.
func (a *agentStack) handoff(ctx context.Context, callID, body string) int {
	a.mu.Lock()
	base := a.api
	a.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/calls/"+url.PathEscape(callID)+"/handoff",
		strings.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_ = res.Body.Close()
	return res.StatusCode
}

// TestAgentSpeaksThenHandsOff is the agent issue's "done when", on the
// whole pipeline: a bot written for the Media Streams protocol hears the
// caller's audio exactly, speaks an utterance, and asks for the handoff
// at once with after_mark; the caller (a Go SIP and RTP peer) hears the
// whole utterance, paced, and only then receives the REFER.
func TestAgentSpeaksThenHandsOff(t *testing.T) {
	const token = "agent-e2e-token"
	utterance := pattern(8000, 5) // one second
	heard := make(chan [][]byte, 1)
	connected := make(chan struct{})
	handoff := make(chan int, 1)
	s := startAgentStack(t, token, func(ctx context.Context, bot *agentbot.Session, a *agentStack) {
		close(connected)
		var got [][]byte
		for len(got) < 50 {
			select {
			case p := <-bot.Media():
				got = append(got, p)
			case <-bot.Stopped():
				heard <- got
				return
			}
		}
		heard <- got
		if err := bot.Play(ctx, utterance, 320, 2, "goodbye"); err != nil {
			return
		}
		handoff <- a.handoff(ctx, bot.Start().CallSid, `{"reason":"caller_asked","after_mark":"goodbye","mark_timeout_ms":10000}`)
		<-bot.Stopped()
	})

	// The caller: RTP on a socket of its own, SIP over TCP.
	media, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer func() { _ = media.Close() }()
	const callID = "agent-e2e-1"
	c := newTCPSBC(t, s.Stack, callID, "sbc-agent-1")
	ok := c.invite("X-Customer-Id: CUST-AGENT-1\n", fmt.Sprintf("v=0\no=sbc 1 1 IN IP4 127.0.0.1\ns=sbc\nc=IN IP4 127.0.0.1\nt=0 0\n"+
		"m=audio %d RTP/AVP 0\na=rtpmap:0 PCMU/8000\n", media.LocalAddr().(*net.UDPAddr).Port))
	var ingressRTP *net.UDPAddr
	for line := range strings.SplitSeq(ok.body, "\r\n") {
		if rest, found := strings.CutPrefix(line, "m=audio "); found {
			port, _, _ := strings.Cut(rest, " ")
			ingressRTP, err = net.ResolveUDPAddr("udp", "127.0.0.1:"+port)
			require.NoError(t, err)
		}
	}
	require.NotNil(t, ingressRTP)
	c.inDialog("ACK", 1, "", "")

	// Receive RTP from now on: when each frame of the utterance arrives.
	type frame struct {
		at      time.Time
		payload []byte
	}
	frames := make(chan frame, 4096)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := media.ReadFromUDP(buf)
			if err != nil {
				close(frames)
				return
			}
			if n > 12 && !isSilence(buf[12:n]) {
				frames <- frame{at: time.Now(), payload: append([]byte(nil), buf[12:n]...)}
			}
		}
	}()
	// The caller speaks once the agent listens (audio before its stream
	// is open is not kept): frames of a known pattern at 20 ms, until the
	// agent has fifty.
	select {
	case <-connected:
	case <-time.After(20 * time.Second):
		t.Fatal("no agent stream")
	}
	var spoken [][]byte
	var got [][]byte
	for i := 0; got == nil; i++ {
		require.Less(t, i, 120, "the agent heard fewer than 50 frames of 120")
		p := pattern(160, byte(i))
		spoken = append(spoken, p)
		pkt := make([]byte, 12, 172)
		pkt[0], pkt[1] = 0x80, 0
		binary.BigEndian.PutUint16(pkt[2:], uint16(i+1))
		binary.BigEndian.PutUint32(pkt[4:], uint32(i*160))
		binary.BigEndian.PutUint32(pkt[8:], 0x5eed)
		_, err := media.WriteToUDP(append(pkt, p...), ingressRTP)
		require.NoError(t, err)
		select {
		case got = <-heard:
		case <-time.After(20 * time.Millisecond):
		}
	}
	// What the agent heard is fifty of the caller's frames in a row:
	// none lost, none reordered, none changed.
	first := slices.IndexFunc(spoken, func(p []byte) bool { return bytes.Equal(p, got[0]) })
	require.GreaterOrEqual(t, first, 0, "the agent's first frame is one the caller sent")
	require.Equal(t, spoken[first:first+50], got, "the agent hears exactly the caller's frames")

	// The REFER, on transfer's connection to the SBC.
	refer, rc := c.acceptRequest()
	referAt := time.Now()
	require.True(t, strings.HasPrefix(refer.line, "REFER "), refer.line)
	require.Equal(t, 202, <-handoff, "the agent API accepted the handoff request")

	// Everything of the utterance arrived before the REFER.
	var played []byte
	var last time.Time
	for done := false; !done; {
		select {
		case f := <-frames:
			played = append(played, f.payload...)
			last = f.at
		default:
			done = true
		}
	}
	require.Equal(t, utterance, played, "the caller heard the whole utterance before the REFER")
	require.True(t, last.Before(referAt), "last frame at %v, REFER at %v", last, referAt)

	c.answer202(refer, rc)
	c.inDialog("BYE", 2, "", "")
	for {
		m := readSIP(t, c.in)
		if strings.HasPrefix(m.line, "SIP/2.0 200") {
			break
		}
	}

	// The log: the mark played before the request, which says it waited.
	recs, err := checker.Read(t.Context(), s.BrokerAddr)
	require.NoError(t, err)
	var order []string
	var requested *batonv1.HandoffRequested
	for _, r := range recs {
		if r.Event.Subject != callID {
			continue
		}
		switch m := r.Event.Data.(type) {
		case *batonv1.AgentMarkPlayed:
			order = append(order, "mark "+m.GetName())
		case *batonv1.HandoffRequested:
			order = append(order, "requested")
			requested = m
		case *batonv1.HandoffCommand:
			order = append(order, "command")
		}
	}
	require.Equal(t, []string{"mark goodbye", "requested", "command"}, order)
	require.Equal(t, "goodbye", requested.GetAfterMark())
	require.Equal(t, "played", requested.GetMarkWait())
}

func isSilence(p []byte) bool {
	for _, b := range p {
		if b != 0xff {
			return false
		}
	}
	return true
}

// pcapAudio reads the RTP payloads of a pcap file (Ethernet, IPv4, UDP),
// in order, joined.
func pcapAudio(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(b), 24)
	require.Equal(t, uint32(0xa1b2c3d4), binary.LittleEndian.Uint32(b), "a little-endian pcap")
	require.Equal(t, uint32(1), binary.LittleEndian.Uint32(b[20:]), "Ethernet frames")
	var audio []byte
	for off := 24; off+16 <= len(b); {
		n := int(binary.LittleEndian.Uint32(b[off+8:]))
		pkt := b[off+16 : off+16+n]
		off += 16 + n
		ip := pkt[14:]
		rtp := ip[int(ip[0]&0x0f)*4+8:]
		audio = append(audio, rtp[12+4*int(rtp[0]&0x0f):]...)
	}
	return audio
}

// TestAgentHearsASIPpCaller: SIPp as the carrier's SBC (sbc_agent.xml)
// places a PCMA call and plays Debian's g711a.pcap as the caller's voice;
// the bot hears it transcoded to µ-law, in order, none lost or changed
// once its stream is open, then speaks and hands the call off, and SIPp
// receives the REFER.
func TestAgentHearsASIPpCaller(t *testing.T) {
	const token = "agent-sipp-token"
	const pcap = "/usr/share/sip-tester/g711a.pcap"
	_, err := os.Stat(pcap)
	require.NoError(t, err, "Debian's sip-tester (make deps) ships the caller's voice")
	var spoken []byte
	for _, a := range pcapAudio(t, pcap) {
		spoken = append(spoken, pcm.ULaw(pcm.DecodeALaw(a)))
	}
	heard := make(chan []byte, 1)
	s := startAgentStack(t, token, func(ctx context.Context, bot *agentbot.Session, a *agentStack) {
		var got []byte
		for len(got) < 100*160 {
			select {
			case p := <-bot.Media():
				got = append(got, p...)
			case <-bot.Stopped():
				heard <- got
				return
			}
		}
		heard <- got
		if bot.Play(ctx, pattern(1600, 9), 320, 2, "bye") != nil {
			return
		}
		a.handoff(ctx, bot.Start().CallSid, `{"reason":"caller_asked","after_mark":"bye"}`)
		<-bot.Stopped()
	})

	res, err := s.PlaceCalls(t.Context(), "sbc_agent", 1, 1)
	require.NoError(t, err)
	require.Zero(t, res.ExitCode, "SIPp: %v", res.Failures)
	require.Len(t, res.Refers, 1, "the agent's handoff reached SIPp as a REFER")
	var got []byte
	select {
	case got = <-heard:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent heard nothing")
	}
	require.Len(t, got, 100*160)
	// The stream opens a moment after the ACK: what the agent hears starts
	// at one of the caller's packets (240 bytes each) and is the caller's
	// audio from there on, exactly.
	start := -1
	for k := 0; k*240+len(got) <= len(spoken); k++ {
		if bytes.Equal(spoken[k*240:k*240+len(got)], got) {
			start = k
			break
		}
	}
	require.GreaterOrEqual(t, start, 0, "the agent heard the caller's audio in order, transcoded from PCMA, nothing lost")
	require.Less(t, start, 10, "and from the first packets on")
}
