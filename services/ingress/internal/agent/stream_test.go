package agent

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
)

func endpoint(url string) Endpoint {
	return Endpoint{Name: "t", URL: url, Format: FormatMulaw, ConnectTimeout: 2 * time.Second, Playout: time.Second,
		WriteTimeout: 300 * time.Millisecond, MaxMessage: 4096}
}

func wsURL(srv *httptest.Server) string { return "ws" + strings.TrimPrefix(srv.URL, "http") }

// An agent that stops reading fails the stream with write_timeout once a
// write has been stuck for the write timeout; the call is told once.
func TestStreamWriteTimeout(t *testing.T) {
	hold := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		<-hold // never reads
		_ = c.CloseNow()
	}))
	defer srv.Close()
	defer close(hold)
	failed := make(chan string, 2)
	st, err := Dial(t.Context(), endpoint(wsURL(srv)), Start{CallSid: "c"}, Hooks{Failed: func(reason, _ string) { failed <- reason }},
		slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	frame := make([]byte, FrameBytes)
	deadline := time.After(20 * time.Second)
	for {
		select {
		case reason := <-failed:
			require.Equal(t, ReasonWriteTimeout, reason)
			st.Close(ReasonCallEnded)
			require.Empty(t, failed, "told once")
			r, _ := st.Ended()
			require.Equal(t, ReasonWriteTimeout, r)
			require.Positive(t, st.Stats().OutDropped, "frames beyond the queue are dropped, not buffered")
			return
		case <-deadline:
			t.Fatal("a stuck agent never failed the stream")
		default:
			st.Caller(frame, "PCMU")
		}
	}
}

// A message over the limit fails the stream with message_too_large.
func TestStreamMessageTooLarge(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		_ = c.Write(r.Context(), websocket.MessageText, []byte(`{"event":"media","media":{"payload":"`+strings.Repeat("A", 8192)+`"}}`))
		_, _, _ = c.Read(r.Context())
	}))
	defer srv.Close()
	failed := make(chan string, 1)
	st, err := Dial(t.Context(), endpoint(wsURL(srv)), Start{CallSid: "c"}, Hooks{Failed: func(reason, _ string) { failed <- reason }},
		slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	select {
	case reason := <-failed:
		require.Equal(t, ReasonMessageTooBig, reason)
	case <-time.After(10 * time.Second):
		t.Fatal("no failure")
	}
	st.Close(ReasonCallEnded)
}

// A URL that redirects is refused, and says so.
func TestDialRefusesRedirects(t *testing.T) {
	srv := httptest.NewServer(http.RedirectHandler("http://example.com/elsewhere", http.StatusFound))
	defer srv.Close()
	_, err := Dial(t.Context(), endpoint(wsURL(srv)), Start{CallSid: "c"}, Hooks{}, slog.New(slog.DiscardHandler))
	var de *DialError
	require.ErrorAs(t, err, &de)
	require.Equal(t, ReasonRedirectRefused, de.Reason)
}
