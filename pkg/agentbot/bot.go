// Package agentbot is a voice-AI bot's side of the Twilio Media Streams
// protocol (bidirectional), written from the published protocol and
// nothing of Baton's: the far end of ingress's agent streams in tests,
// and the demo agent of `baton dev`. A Session is one call's stream: it
// records what the platform sent (start, media, dtmf, mark, stop) and
// sends media, mark and clear.
package agentbot

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Start is the start message's start object.
type Start struct {
	AccountSid       string            `json:"accountSid"`
	StreamSid        string            `json:"streamSid"`
	CallSid          string            `json:"callSid"`
	Tracks           []string          `json:"tracks"`
	CustomParameters map[string]string `json:"customParameters"`
	MediaFormat      struct {
		Encoding   string `json:"encoding"`
		SampleRate int    `json:"sampleRate"`
		Channels   int    `json:"channels"`
	} `json:"mediaFormat"`
}

// Message is any message from the platform, as JSON gives it.
type Message struct {
	Event          string `json:"event"`
	SequenceNumber string `json:"sequenceNumber"`
	StreamSid      string `json:"streamSid"`
	Protocol       string `json:"protocol"`
	Version        string `json:"version"`
	Start          *Start `json:"start"`
	Media          *struct {
		Track     string `json:"track"`
		Chunk     string `json:"chunk"`
		Timestamp string `json:"timestamp"`
		Payload   string `json:"payload"`
	} `json:"media"`
	DTMF *struct {
		Track string `json:"track"`
		Digit string `json:"digit"`
	} `json:"dtmf"`
	Mark *struct {
		Name string `json:"name"`
	} `json:"mark"`
	Stop *struct {
		AccountSid string `json:"accountSid"`
		CallSid    string `json:"callSid"`
	} `json:"stop"`
	// Raw is the frame as it came; At when it came.
	Raw []byte    `json:"-"`
	At  time.Time `json:"-"`
}

// Handler accepts the platform's WebSocket and runs a Session on it;
// each new session is passed to serve, which runs for the stream's life
// (it returns when it is done with the session; the stream stays open
// until the platform closes it or Close).
type Handler struct {
	// Serve runs a session; nil only records.
	Serve func(ctx context.Context, s *Session)
	// Sessions, when set, gets each session once its start has come.
	Sessions chan<- *Session
	// Header, when set, must be present in the handshake with this value
	// (authentication), else 401.
	Header, Value string
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.Header != "" && r.Header.Get(h.Header) != h.Value {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	conn.SetReadLimit(1 << 20)
	s := &Session{conn: conn, stopped: make(chan struct{}), started: make(chan struct{}), marks: make(chan string, 1024),
		dtmf: make(chan string, 64), media: make(chan []byte, 4096)}
	ctx := r.Context()
	go s.read(ctx)
	select {
	case <-s.started:
	case <-s.stopped:
		return
	case <-time.After(10 * time.Second):
		_ = conn.CloseNow()
		return
	}
	if h.Sessions != nil {
		h.Sessions <- s
	}
	if h.Serve != nil {
		h.Serve(ctx, s)
	}
	<-s.stopped
}

// Session is one stream, from the bot's side.
type Session struct {
	conn    *websocket.Conn
	started chan struct{}
	stopped chan struct{} // closed when the stream is gone
	marks   chan string   // names of marks the platform sent back
	dtmf    chan string
	media   chan []byte // decoded payloads, in order

	mu    sync.Mutex
	msgs  []Message
	start Start
	err   error
}

func (s *Session) read(ctx context.Context) {
	defer close(s.stopped)
	for {
		typ, data, err := s.conn.Read(ctx)
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
		if typ != websocket.MessageText {
			s.fail(errors.New("a binary frame; the protocol is JSON in text frames"))
			return
		}
		var m Message
		if err := json.Unmarshal(data, &m); err != nil {
			s.fail(fmt.Errorf("not JSON: %w", err))
			return
		}
		m.Raw, m.At = data, time.Now()
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		n := len(s.msgs)
		s.mu.Unlock()
		switch m.Event {
		case "start":
			if n != 2 || m.Start == nil {
				s.fail(errors.New("start is not the second message"))
				return
			}
			s.mu.Lock()
			s.start = *m.Start
			s.mu.Unlock()
			close(s.started)
		case "media":
			if m.Media == nil {
				s.fail(errors.New("media without media"))
				return
			}
			b, err := base64.StdEncoding.DecodeString(m.Media.Payload)
			if err != nil {
				s.fail(fmt.Errorf("media payload: %w", err))
				return
			}
			select {
			case s.media <- b:
			default: // a reader that does not drain loses the oldest view, never the record
			}
		case "mark":
			if m.Mark != nil {
				s.marks <- m.Mark.Name
			}
		case "dtmf":
			if m.DTMF != nil {
				s.dtmf <- m.DTMF.Digit
			}
		case "connected":
			if n != 1 {
				s.fail(errors.New("connected is not the first message"))
				return
			}
		}
	}
}

func (s *Session) fail(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	_ = s.conn.Close(websocket.StatusProtocolError, err.Error())
}

// Start is the stream's start.
func (s *Session) Start() Start {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.start
}

// Messages returns every message so far, in order.
func (s *Session) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Err is why the stream ended (nil while it runs, or a protocol error
// the bot found).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Media gives the caller's audio, one media message's payload each.
func (s *Session) Media() <-chan []byte { return s.media }

// Marks gives the names of the marks the platform sent back.
func (s *Session) Marks() <-chan string { return s.marks }

// DTMF gives the digits the caller pressed.
func (s *Session) DTMF() <-chan string { return s.dtmf }

// Stopped is closed when the stream is gone.
func (s *Session) Stopped() <-chan struct{} { return s.stopped }

// Send sends a raw text frame (tests send malformed ones).
func (s *Session) Send(ctx context.Context, msg []byte) error {
	return s.conn.Write(ctx, websocket.MessageText, msg)
}

// SendMedia sends audio as one media message.
func (s *Session) SendMedia(ctx context.Context, audio []byte) error {
	b, err := json.Marshal(map[string]any{"event": "media", "streamSid": s.Start().StreamSid,
		"media": map[string]string{"payload": base64.StdEncoding.EncodeToString(audio)}})
	if err != nil {
		return err
	}
	return s.Send(ctx, b)
}

// Play sends audio in chunks of chunk bytes, speed times faster than real
// time (8 bytes a millisecond of µ-law; speed 0 sends at once), then a
// mark named mark (none when empty), as bots do.
func (s *Session) Play(ctx context.Context, audio []byte, chunk int, speed float64, mark string) error {
	for off := 0; off < len(audio); off += chunk {
		end := min(off+chunk, len(audio))
		if err := s.SendMedia(ctx, audio[off:end]); err != nil {
			return err
		}
		if speed > 0 {
			d := time.Duration(float64(end-off) / 8 * float64(time.Millisecond) / speed)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
		}
	}
	if mark != "" {
		return s.Mark(ctx, mark)
	}
	return nil
}

// Mark sends a mark.
func (s *Session) Mark(ctx context.Context, name string) error {
	b, err := json.Marshal(map[string]any{"event": "mark", "streamSid": s.Start().StreamSid,
		"mark": map[string]string{"name": name}})
	if err != nil {
		return err
	}
	return s.Send(ctx, b)
}

// Clear asks the platform to drop the audio it has queued.
func (s *Session) Clear(ctx context.Context) error {
	return s.Send(ctx, []byte(`{"event":"clear","streamSid":`+strconv.Quote(s.Start().StreamSid)+`}`))
}

// Close closes the stream from the bot's side.
func (s *Session) Close() error { return s.conn.Close(websocket.StatusNormalClosure, "bot done") }

// CloseNow drops the connection without a close handshake.
func (s *Session) CloseNow() error { return s.conn.CloseNow() }
