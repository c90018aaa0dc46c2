// Package agent puts a voice-AI agent in a call: a WebSocket to the
// agent that speaks the Twilio Media Streams protocol (bidirectional),
// so a bot written for it works with Baton unchanged. The caller's audio
// goes out as media messages, 20 ms each; the agent's media is queued
// (Playout), re-framed into 20 ms and paced into RTP by the call's media
// session, which pulls one frame per tick (Stream is its rtp.Source).
// Marks come back when their audio has been sent as RTP; clear drops the
// queue at once. docs/decisions/0015 says why the stream lives in
// ingress, next to the call's media anchor.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/baton-voice/baton/pkg/pcm"
)

// Endpoint is where a call's agent is and how the stream to it behaves.
type Endpoint struct {
	// Name names the endpoint in logs and events.
	Name string
	// URL is the agent's ws:// or wss:// address.
	URL string
	// Header is sent with the WebSocket handshake (authentication).
	Header http.Header
	// Format is FormatMulaw or FormatL16.
	Format string
	// ConnectTimeout bounds the handshake and the first two messages.
	ConnectTimeout time.Duration
	// Playout bounds the agent's queued audio.
	Playout time.Duration
	// WriteTimeout is how long a message to the agent may take to
	// write: a bot that stops reading fails the stream after it.
	WriteTimeout time.Duration
	// MaxMessage bounds a message from the agent, in bytes.
	MaxMessage int64
}

// Start is what the start message tells the agent about the call.
type Start struct {
	// CallSid is the Baton call id.
	CallSid string
	// Parameters are customParameters: caller and callee numbers, the
	// trunk and the call's X- variables.
	Parameters map[string]string
}

// Hooks are what a stream tells its call; each runs on one of the
// stream's goroutines and must not block for long.
type Hooks struct {
	// MarkPlayed is called when a mark's audio has been sent as RTP (or
	// dropped or cleared), after the mark went back to the agent.
	MarkPlayed func(name string)
	// Failed is called once when the stream fails: the agent closed it,
	// a read or write failed, a message was too large. It is not called
	// after Close.
	Failed func(reason, detail string)
}

// Reasons a stream ends (AgentDisconnected.reason).
const (
	ReasonCallEnded       = "call_ended"
	ReasonHandoff         = "handoff"
	ReasonConnectFailed   = "connect_failed"
	ReasonAgentClosed     = "agent_closed"
	ReasonReadError       = "read_error"
	ReasonWriteTimeout    = "write_timeout"
	ReasonMessageTooBig   = "message_too_large"
	ReasonShutdown        = "shutdown"
	ReasonRedirectRefused = "redirect_refused"
)

// outQueue bounds the messages waiting for the writer: 5 s of caller
// audio. A bot that stops reading fills it; the write deadline then
// fails the stream.
const outQueue = 256

// Stream is one call's open agent stream.
type Stream struct {
	ep      Endpoint
	sid     string
	callSid string
	conn    *websocket.Conn
	hooks   Hooks
	log     *slog.Logger
	playout *Playout
	out     chan []byte
	quit    chan struct{} // closed by Close or a failure: the writer stops
	done    chan struct{} // closed when reader and writer are gone

	writerDone chan struct{}

	mu      sync.Mutex
	seq     uint64 // sequenceNumber of the last message sent
	chunk   uint64 // media chunks sent
	pending []byte // caller audio short of a frame
	ended   bool
	reason  string
	detail  string
	due     []string // marks the frame Next gave completes
	frame   [FrameBytes]byte

	framesOut, framesIn, late, outDropped, bad atomic.Uint64
	writing                                    atomic.Int64 // when the write under way began (Unix ns); 0 when none
}

// Dial opens the stream and sends connected and start. The stream runs
// until Close, or until it fails (Hooks.Failed).
func Dial(ctx context.Context, ep Endpoint, st Start, hooks Hooks, logger *slog.Logger) (*Stream, error) {
	dctx, cancel := context.WithTimeout(ctx, ep.ConnectTimeout)
	defer cancel()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
		return errRedirect
	}}
	conn, resp, err := websocket.Dial(dctx, ep.URL, &websocket.DialOptions{HTTPClient: client, HTTPHeader: ep.Header})
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		if errors.Is(err, errRedirect) || resp != nil && resp.StatusCode >= 300 && resp.StatusCode < 400 {
			return nil, &DialError{Reason: ReasonRedirectRefused, Err: err}
		}
		return nil, &DialError{Reason: ReasonConnectFailed, Err: err}
	}
	conn.SetReadLimit(ep.MaxMessage)
	s := &Stream{
		ep: ep, sid: newSid(), callSid: st.CallSid, conn: conn, hooks: hooks, log: logger,
		playout: NewPlayout(int(ep.Playout.Milliseconds()) * 8),
		out:     make(chan []byte, outQueue), quit: make(chan struct{}), done: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	format := mediaFormat{Encoding: FormatMulaw, SampleRate: 8000, Channels: 1}
	if ep.Format == FormatL16 {
		format = mediaFormat{Encoding: FormatL16, SampleRate: 16000, Channels: 1}
	}
	// connected, then start: bots (Pipecat among them) tell the protocol
	// from these two, in this order.
	hello := []any{
		connectedMsg{Event: "connected", Protocol: "Call", Version: "1.0.0"},
		startMsg{Event: "start", SequenceNumber: "1", StreamSid: s.sid, Start: startBody{
			AccountSid: "baton", StreamSid: s.sid, CallSid: st.CallSid, Tracks: []string{"inbound"},
			MediaFormat: format, CustomParameters: st.Parameters,
		}},
	}
	s.seq = 1
	for _, m := range hello {
		if err := wsjson.Write(dctx, conn, m); err != nil {
			_ = conn.CloseNow()
			return nil, &DialError{Reason: ReasonConnectFailed, Err: fmt.Errorf("send %T: %w", m, err)}
		}
	}
	var wg sync.WaitGroup
	wg.Go(s.read)
	wg.Go(s.write)
	wg.Go(s.watch)
	go func() { wg.Wait(); close(s.done) }()
	return s, nil
}

// DialError is a stream that could not be opened, with its reason.
type DialError struct {
	Reason string
	Err    error
}

func (e *DialError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

var errRedirect = errors.New("the agent URL redirects; redirects are refused")

// StreamSid is the stream's id, as in its start message.
func (s *Stream) StreamSid() string { return s.sid }

// newSid is a stream id in the platform's shape: MZ and 32 hex digits.
func newSid() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "MZ" + hex.EncodeToString(b[:])
}

// Caller sends the caller's audio (an RTP payload in codec, PCMU or
// PCMA) as media messages of 20 ms each; a remainder waits for the next
// payload. It never blocks: with the writer's queue full the frame is
// dropped and counted (the write deadline then fails the stream).
func (s *Stream) Caller(payload []byte, codec string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	for _, b := range payload {
		if codec == "PCMA" {
			b = pcm.ALawToULaw(b)
		}
		s.pending = append(s.pending, b)
		if len(s.pending) == FrameBytes {
			s.sendFrameLocked(s.pending)
			s.pending = s.pending[:0]
		}
	}
}

// sendFrameLocked queues one 20 ms frame of caller audio (µ-law).
func (s *Stream) sendFrameLocked(frame []byte) {
	s.seq++
	s.chunk++
	payload := frame
	if s.ep.Format == FormatL16 {
		payload = ulawToL16x2(frame)
	}
	msg := appendMedia(make([]byte, 0, 160+base64.StdEncoding.EncodedLen(len(payload))), s.seq, s.chunk,
		(s.chunk-1)*20, payload, s.sid)
	select {
	case s.out <- msg:
		s.framesOut.Add(1)
	default:
		s.outDropped.Add(1)
	}
}

// appendMedia renders a media message by hand: it is sent 50 times a
// second per call, and encoding/json would cost several times more.
func appendMedia(b []byte, seq, chunk, ts uint64, payload []byte, sid string) []byte {
	b = append(b, `{"event":"media","sequenceNumber":"`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `","media":{"track":"inbound","chunk":"`...)
	b = strconv.AppendUint(b, chunk, 10)
	b = append(b, `","timestamp":"`...)
	b = strconv.AppendUint(b, ts, 10)
	b = append(b, `","payload":"`...)
	b = base64.StdEncoding.AppendEncode(b, payload)
	b = append(b, `"},"streamSid":"`...)
	b = append(b, sid...) // MZ and hex digits: nothing to escape
	return append(b, `"}`...)
}

// DTMF sends a digit the caller pressed.
func (s *Stream) DTMF(digit string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.seq++
	s.enqueueLocked(dtmfMsg{Event: "dtmf", StreamSid: s.sid, SequenceNumber: itoa(s.seq),
		DTMF: dtmfBody{Track: "inbound_track", Digit: digit}})
}

// enqueueLocked queues a control message (dtmf, mark, stop).
func (s *Stream) enqueueLocked(m any) {
	b, err := json.Marshal(m)
	if err != nil {
		s.log.Error("agent message", "err", err)
		return
	}
	select {
	case s.out <- b:
	default:
		s.outDropped.Add(1)
	}
}

// Next is the RTP player's pull (rtp.Source): the next 20 ms of agent
// audio in codec, or silence. It ends (false) once the stream has.
func (s *Stream) Next(codec string) ([]byte, bool) {
	s.mu.Lock()
	ended := s.ended
	s.mu.Unlock()
	if ended {
		return nil, false
	}
	frame, _, due := s.playout.Next(s.frame[:])
	if codec == "PCMA" {
		for i, b := range frame {
			frame[i] = pcm.ULawToALaw(b)
		}
	}
	s.mu.Lock()
	s.due = append(s.due, due...)
	s.mu.Unlock()
	return frame, true
}

// Sent is the RTP player's report that the frame Next gave has left
// (rtp.Source): the marks it completed go back to the agent now.
func (s *Stream) Sent(late bool) {
	if late {
		s.late.Add(1)
	}
	s.mu.Lock()
	due := s.due
	s.due = nil
	s.mu.Unlock()
	s.marksDone(due)
}

// marksDone sends marks back to the agent and tells the call.
func (s *Stream) marksDone(names []string) {
	if len(names) == 0 {
		return
	}
	s.mu.Lock()
	for _, n := range names {
		if !s.ended {
			s.seq++
			s.enqueueLocked(markMsg{Event: "mark", SequenceNumber: itoa(s.seq), StreamSid: s.sid, Mark: markBody{Name: n}})
		}
	}
	s.mu.Unlock()
	if s.hooks.MarkPlayed != nil {
		for _, n := range names {
			s.hooks.MarkPlayed(n)
		}
	}
}

// read takes the agent's messages until the stream ends.
func (s *Stream) read() {
	// No deadline or cancellation on the read itself (each would cost a
	// timer per message): Close and fail end it by closing the conn.
	ctx := context.Background()
	for {
		typ, data, err := s.conn.Read(ctx)
		if err != nil {
			s.fail(readReason(err), err.Error())
			return
		}
		if typ != websocket.MessageText {
			s.bad.Add(1) // the protocol is JSON in text frames
			continue
		}
		m, err := parseBot(data, s.sid)
		if err != nil {
			if s.bad.Add(1) <= 5 {
				s.log.Info("agent message ignored", "stream_sid", s.sid, "err", err)
			}
			continue
		}
		switch m.event {
		case "media":
			s.framesIn.Add(1)
			audio := m.audio
			if s.ep.Format == FormatL16 {
				audio = l16x2ToUlaw(audio)
			}
			_, due := s.playout.Push(audio)
			s.marksDone(due)
		case "mark":
			s.marksDone(s.playout.Mark(m.mark))
		case "clear":
			s.marksDone(s.playout.Clear())
		}
	}
}

// readReason names a read error.
func readReason(err error) string {
	switch {
	// coder/websocket reports its read limit with this text only (it
	// sends the agent close status 1009 itself).
	case websocket.CloseStatus(err) == websocket.StatusMessageTooBig || strings.Contains(err.Error(), "read limited at"):
		return ReasonMessageTooBig
	case websocket.CloseStatus(err) != -1:
		return ReasonAgentClosed
	}
	return ReasonReadError
}

// write sends queued messages in order, each within the write timeout,
// until Close's end marker (nil) or the stream fails.
func (s *Stream) write() {
	defer close(s.writerDone)
	for {
		select {
		case <-s.quit:
			return
		case msg := <-s.out:
			if msg == nil {
				return
			}
			// The watchdog, not a context per message, bounds the write.
			s.writing.Store(time.Now().UnixNano())
			err := s.conn.Write(context.Background(), websocket.MessageText, msg)
			s.writing.Store(0)
			if err != nil {
				s.fail(ReasonReadError, err.Error())
				return
			}
		}
	}
}

// watch fails the stream when a write has taken longer than the write
// timeout: the agent stopped reading. It checks four times per timeout.
func (s *Stream) watch() {
	t := time.NewTicker(s.ep.WriteTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
			if at := s.writing.Load(); at != 0 && time.Since(time.Unix(0, at)) > s.ep.WriteTimeout {
				s.fail(ReasonWriteTimeout, fmt.Sprintf("a message to the agent took longer than %v to write", s.ep.WriteTimeout))
				return
			}
		}
	}
}

// fail ends the stream for reason unless it has ended, and tells the call.
func (s *Stream) fail(reason, detail string) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended, s.reason, s.detail = true, reason, detail
	close(s.quit)
	s.mu.Unlock()
	_ = s.conn.CloseNow()
	if s.hooks.Failed != nil {
		s.hooks.Failed(reason, detail)
	}
}

// Close ends the stream for reason (call_ended, handoff, shutdown): it
// sends what is queued and stop, closes the WebSocket and returns the
// statistics. After a failure it only returns them. It waits at most
// the write timeout for the agent.
func (s *Stream) Close(reason string) Stats {
	s.mu.Lock()
	already := s.ended
	var stop []byte
	if !already {
		s.seq++
		stop, _ = json.Marshal(stopMsg{Event: "stop", SequenceNumber: itoa(s.seq), StreamSid: s.sid,
			Stop: stopBody{AccountSid: "baton", CallSid: s.callSid}})
		s.ended, s.reason = true, reason
	}
	s.mu.Unlock()
	if !already {
		// stop goes after what is queued, then the end marker (nil) at
		// which the writer returns; a bot that does not read gets the
		// write timeout, no more.
		deadline := time.NewTimer(s.ep.WriteTimeout)
		defer deadline.Stop()
		for _, m := range [][]byte{stop, nil} {
			select {
			case s.out <- m:
			case <-s.writerDone:
			case <-deadline.C:
			}
		}
		select {
		case <-s.writerDone:
		case <-deadline.C:
		}
		s.mu.Lock()
		select {
		case <-s.quit:
		default:
			close(s.quit)
		}
		s.mu.Unlock()
		go func() { _ = s.conn.Close(websocket.StatusNormalClosure, reason) }()
		// The close handshake ends the reader; an agent that does not
		// answer it is cut off.
		select {
		case <-s.done:
		case <-time.After(time.Second):
			_ = s.conn.CloseNow()
		}
	}
	<-s.done
	return s.Stats()
}

// Ended reports why the stream ended; empty while it runs.
func (s *Stream) Ended() (reason, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason, s.detail
}

// Stats is a stream's traffic.
type Stats struct {
	FramesOut, FramesIn, FramesPlayed, Late, Dropped, Cleared, MaxQueueMS, Marks, BadMessages uint64
	// OutDropped are messages to the agent dropped with the queue full.
	OutDropped uint64
}

// Stats returns the counts so far.
func (s *Stream) Stats() Stats {
	p := s.playout.Stats()
	return Stats{
		FramesOut: s.framesOut.Load(), FramesIn: s.framesIn.Load(), FramesPlayed: p.Played, Late: s.late.Load(),
		Dropped: p.Dropped, Cleared: p.Cleared, MaxQueueMS: uint64(p.MaxQueued / 8), Marks: p.Marks,
		BadMessages: s.bad.Load(), OutDropped: s.outDropped.Load(),
	}
}
