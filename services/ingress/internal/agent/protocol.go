package agent

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// The Twilio Media Streams protocol (bidirectional), as the platform
// speaks it: JSON in text frames; connected first, start second; then
// media, dtmf and mark from the platform, and stop at the end. The bot
// sends media, mark and clear. Numbers the platform sends
// (sequenceNumber, chunk, timestamp) are strings of digits.

// Formats of the audio on a stream.
const (
	// FormatMulaw is G.711 µ-law at 8 kHz, the protocol's default.
	FormatMulaw = "audio/x-mulaw"
	// FormatL16 is 16-bit linear PCM at 16 kHz, little-endian.
	FormatL16 = "audio/l16"
)

type connectedMsg struct {
	Event    string `json:"event"`
	Protocol string `json:"protocol"`
	Version  string `json:"version"`
}

type mediaFormat struct {
	Encoding   string `json:"encoding"`
	SampleRate int    `json:"sampleRate"`
	Channels   int    `json:"channels"`
}

type startBody struct {
	AccountSid       string            `json:"accountSid"`
	StreamSid        string            `json:"streamSid"`
	CallSid          string            `json:"callSid"`
	Tracks           []string          `json:"tracks"`
	MediaFormat      mediaFormat       `json:"mediaFormat"`
	CustomParameters map[string]string `json:"customParameters"`
}

type startMsg struct {
	Event          string    `json:"event"`
	SequenceNumber string    `json:"sequenceNumber"`
	Start          startBody `json:"start"`
	StreamSid      string    `json:"streamSid"`
}

type mediaBody struct {
	Track     string `json:"track,omitempty"`
	Chunk     string `json:"chunk,omitempty"`
	Timestamp string `json:"timestamp,omitempty"`
	Payload   string `json:"payload"`
}

type dtmfBody struct {
	Track string `json:"track"`
	Digit string `json:"digit"`
}

type dtmfMsg struct {
	Event          string   `json:"event"`
	StreamSid      string   `json:"streamSid"`
	SequenceNumber string   `json:"sequenceNumber"`
	DTMF           dtmfBody `json:"dtmf"`
}

type markBody struct {
	Name string `json:"name"`
}

type markMsg struct {
	Event          string   `json:"event"`
	SequenceNumber string   `json:"sequenceNumber,omitempty"`
	StreamSid      string   `json:"streamSid"`
	Mark           markBody `json:"mark"`
}

type stopBody struct {
	AccountSid string `json:"accountSid"`
	CallSid    string `json:"callSid"`
}

type stopMsg struct {
	Event          string   `json:"event"`
	SequenceNumber string   `json:"sequenceNumber"`
	StreamSid      string   `json:"streamSid"`
	Stop           stopBody `json:"stop"`
}

// inbound is any message a bot sends; only the fields of its event are
// set.
type inbound struct {
	Event     string     `json:"event"`
	StreamSid string     `json:"streamSid"`
	Media     *mediaBody `json:"media"`
	Mark      *markBody  `json:"mark"`
}

// Reasons a bot's message is ignored (counted in bad_messages).
var (
	errBadJSON    = errors.New("not a JSON object")
	errBadEvent   = errors.New("unknown event")
	errBadPayload = errors.New("media payload is not base64")
	errBadMark    = errors.New("mark without a name")
	errBadStream  = errors.New("streamSid is not this stream's")
)

// maxMarkName bounds a mark's name.
const maxMarkName = 256

// botMessage is one parsed message from the bot.
type botMessage struct {
	event string // media, mark or clear
	audio []byte // media: the decoded payload
	mark  string // mark: its name
}

// parseBot reads a bot's text frame. streamSid, when the bot gives one,
// must be the stream's.
func parseBot(data []byte, streamSid string) (botMessage, error) {
	var in inbound
	if err := json.Unmarshal(data, &in); err != nil {
		return botMessage{}, fmt.Errorf("%w: %w", errBadJSON, err)
	}
	if in.StreamSid != "" && in.StreamSid != streamSid {
		return botMessage{}, fmt.Errorf("%w: %q", errBadStream, in.StreamSid)
	}
	switch in.Event {
	case "media":
		if in.Media == nil {
			return botMessage{}, fmt.Errorf("%w: media without a media object", errBadPayload)
		}
		audio, err := base64.StdEncoding.DecodeString(in.Media.Payload)
		if err != nil {
			return botMessage{}, fmt.Errorf("%w: %w", errBadPayload, err)
		}
		return botMessage{event: "media", audio: audio}, nil
	case "mark":
		if in.Mark == nil || in.Mark.Name == "" || len(in.Mark.Name) > maxMarkName {
			return botMessage{}, errBadMark
		}
		return botMessage{event: "mark", mark: in.Mark.Name}, nil
	case "clear":
		return botMessage{event: "clear"}, nil
	}
	return botMessage{}, fmt.Errorf("%w %q", errBadEvent, truncate(in.Event, 32))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
