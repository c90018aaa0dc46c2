package stack

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/baton-voice/baton/cmd/baton/internal/demoagent"
	"github.com/baton-voice/baton/cmd/baton/internal/termsafe"
)

// demoAgent is the demo agent of `baton dev`, served from this process.
type demoAgent struct {
	ln         net.Listener
	url, token string
	greeting   []byte
	handoff    []byte
	srv        *http.Server
	agent      *demoagent.Agent
}

// listenDemoAgent loads the demo audio and binds the agent's port, so its
// URL can go into ingress's config before the stack starts.
func listenDemoAgent(opts Options) (*demoAgent, error) {
	greeting, err := demoagent.LoadWAV(filepath.Join(opts.RepoDir, "deploy", "audio", "demo-greeting.wav"))
	if err != nil {
		return nil, err
	}
	handoff, err := demoagent.LoadWAV(filepath.Join(opts.RepoDir, "deploy", "audio", "demo-handoff.wav"))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo agent: %w", err)
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return &demoAgent{ln: ln, url: "ws://" + ln.Addr().String() + "/media", token: hex.EncodeToString(b[:]),
		greeting: greeting, handoff: handoff}, nil
}

// serve starts answering streams, asking api for the handoffs.
// numberRoute is demoagent.Options.NumberRoute.
func (d *demoAgent) serve(api, numberRoute string, logger *slog.Logger) {
	d.agent = demoagent.New(demoagent.Options{API: api, Token: d.token, Greeting: d.greeting, Handoff: d.handoff,
		Listen: 2 * time.Second, NumberRoute: numberRoute, Logger: logger})
	d.srv = &http.Server{Handler: d.agent.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := d.srv.Serve(d.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("demo agent stopped", "err", err)
		}
	}()
}

func (d *demoAgent) close() {
	if d.srv != nil {
		_ = d.srv.Close()
		return
	}
	_ = d.ln.Close()
}

// print says what the agent did on each call.
func (d *demoAgent) print(out io.Writer) {
	if d.agent == nil {
		return
	}
	results := d.agent.Results()
	fmt.Fprintf(out, "baton dev: the demo agent was in %d calls:\n", len(results))
	for _, r := range results {
		what := fmt.Sprintf("greeted the caller, heard %d frames of their audio", r.Heard)
		if r.Digit != "" {
			what += ", caller pressed " + r.Digit
		}
		if r.Refused != "" {
			what += ", asked for " + r.Asked + " as the caller wished: refused (" + r.Refused + "), so asked again"
		}
		switch {
		case r.Err != nil:
			what += ", then failed: " + r.Err.Error()
		case r.Status != 0:
			what += fmt.Sprintf(", said it was passing the call on, and asked for the handoff after that sentence played (API %d)", r.Status)
		}
		fmt.Fprint(out, termsafe.Sprintf("  %s: %s\n", r.CallID, what))
	}
}
