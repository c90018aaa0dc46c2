package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/services/ingress/internal/audio"
)

// Agent is a voice-AI agent that answered calls stream their audio to,
// over a WebSocket speaking the Twilio Media Streams protocol. A call
// goes to the agent listing its dialed number, else to the one listing
// its trunk, else to the default one; with none, no agent is in the
// call (the greeting or silence plays, as before).
type Agent struct {
	// Name names the agent in logs and events.
	Name string `yaml:"name"`
	// URL is the agent's ws:// or wss:// address.
	URL string `yaml:"url"`
	// Numbers are dialed numbers (CallStarted's callee number) whose
	// calls go to this agent.
	Numbers []string `yaml:"numbers"`
	// Trunks are trunk names whose calls go to this agent.
	Trunks []string `yaml:"trunks"`
	// Default takes the calls no agent's numbers or trunks matched.
	Default bool `yaml:"default"`
	// Auth is a header sent with the WebSocket handshake, its value
	// from the environment (never from the file).
	Auth AgentAuth `yaml:"auth"`
	// Format is the audio on the stream: mulaw (G.711 µ-law, 8 kHz, the
	// protocol's default) or l16 (16-bit linear, 16 kHz).
	Format string `yaml:"format"`
	// ConnectTimeout bounds the handshake; default 3s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// PlayoutBuffer bounds the agent's audio queued for the caller:
	// beyond it the oldest is dropped and counted; default 10s.
	PlayoutBuffer time.Duration `yaml:"playout_buffer"`
	// WriteTimeout is how long a message to the agent may take: an agent
	// that stops reading fails the stream after it; default 2s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// MaxMessageBytes bounds a message from the agent; default 1 MiB.
	MaxMessageBytes int64 `yaml:"max_message_bytes"`
	// OnFailure is what happens to the call when the agent cannot be
	// reached or drops mid-call.
	OnFailure AgentFailure `yaml:"on_agent_failure"`
}

// AgentAuth is a handshake header whose value is in an environment
// variable.
type AgentAuth struct {
	Header string `yaml:"header"`
	Env    string `yaml:"env"`
}

// AgentFailure is on_agent_failure.
type AgentFailure struct {
	// Action is hangup (the default), play_then_hangup (WAV, then BYE)
	// or handoff (a HandoffRequested to Destination).
	Action string `yaml:"action"`
	// Destination is the router's destination name, for handoff.
	Destination string `yaml:"destination"`
	// WAV is played before hanging up (8000 Hz mono 16-bit PCM).
	WAV string `yaml:"wav"`
}

// MaxAgentSelectionWait bounds agent_selection_wait.
const MaxAgentSelectionWait = 10 * time.Second

// on_agent_failure actions.
const (
	FailHangup         = "hangup"
	FailPlayThenHangup = "play_then_hangup"
	FailHandoff        = "handoff"
)

// Agent audio formats.
const (
	FormatMulaw = "mulaw"
	FormatL16   = "l16"
)

// WithDefaults fills the fields left empty.
func (a Agent) WithDefaults() Agent {
	if a.Format == "" {
		a.Format = FormatMulaw
	}
	if a.ConnectTimeout == 0 {
		a.ConnectTimeout = 3 * time.Second
	}
	if a.PlayoutBuffer == 0 {
		a.PlayoutBuffer = 10 * time.Second
	}
	if a.WriteTimeout == 0 {
		a.WriteTimeout = 2 * time.Second
	}
	if a.MaxMessageBytes == 0 {
		a.MaxMessageBytes = 1 << 20
	}
	if a.OnFailure.Action == "" {
		a.OnFailure.Action = FailHangup
	}
	return a
}

// AuthValue is the auth header's value, read from the environment.
func (a Agent) AuthValue() string {
	if a.Auth.Env == "" {
		return ""
	}
	return os.Getenv(a.Auth.Env)
}

// AgentFor picks the agent of a call: by dialed number, then trunk, then
// the default. source says which matched; nil when none.
func (c Config) AgentFor(callee, trunk string) (*Agent, string) {
	for i := range c.Agents {
		for _, n := range c.Agents[i].Numbers {
			if n == callee && callee != "" {
				return &c.Agents[i], "number"
			}
		}
	}
	for i := range c.Agents {
		for _, t := range c.Agents[i].Trunks {
			if t == trunk {
				return &c.Agents[i], "trunk"
			}
		}
	}
	for i := range c.Agents {
		if c.Agents[i].Default {
			return &c.Agents[i], "default"
		}
	}
	return nil, ""
}

func (c Config) validateAgents() []error {
	var errs []error
	if w := c.AgentSelectionWait; w < 0 || w > MaxAgentSelectionWait {
		errs = append(errs, config.Errorf("agent_selection_wait", "%v, want 0 (do not wait) to %v", w, MaxAgentSelectionWait))
	} else if w > 0 && len(c.Agents) == 0 {
		errs = append(errs, config.Errorf("agent_selection_wait", "set, but no agents are listed"))
	}
	names := map[string]bool{}
	numbers := map[string]string{}
	trunkOf := map[string]string{}
	defaults := 0
	known := map[string]bool{c.Trunk: true}
	for _, t := range c.Trunks {
		known[t.Name] = true
	}
	for i, raw := range c.Agents {
		a := raw.WithDefaults()
		field := func(f string) string { return fmt.Sprintf("agents[%d].%s", i, f) }
		if !trunkName.MatchString(a.Name) {
			errs = append(errs, config.Errorf(field("name"), "%q, want letters, digits, '.', '_' or '-'", a.Name))
		} else if names[a.Name] {
			errs = append(errs, config.Errorf(field("name"), "%q used twice", a.Name))
		}
		names[a.Name] = true
		if u, err := url.Parse(a.URL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			errs = append(errs, config.Errorf(field("url"), "%q, want a ws:// or wss:// URL", a.URL))
		} else if u.User != nil {
			errs = append(errs, config.Errorf(field("url"), "user info in the URL would reach logs; use auth.header and auth.env"))
		}
		for j, n := range a.Numbers {
			if n == "" {
				errs = append(errs, config.Errorf(fmt.Sprintf("agents[%d].numbers[%d]", i, j), "empty"))
			} else if other, ok := numbers[n]; ok {
				errs = append(errs, config.Errorf(fmt.Sprintf("agents[%d].numbers[%d]", i, j), "%q already goes to agent %q", n, other))
			}
			numbers[n] = a.Name
		}
		for j, t := range a.Trunks {
			f := fmt.Sprintf("agents[%d].trunks[%d]", i, j)
			if !known[t] {
				errs = append(errs, config.Errorf(f, "%q is not a configured trunk", t))
			} else if other, ok := trunkOf[t]; ok {
				errs = append(errs, config.Errorf(f, "%q already goes to agent %q", t, other))
			}
			trunkOf[t] = a.Name
		}
		if a.Default {
			defaults++
			if defaults > 1 {
				errs = append(errs, config.Errorf(field("default"), "a second default agent; at most one"))
			}
		}
		if (a.Auth.Header == "") != (a.Auth.Env == "") {
			errs = append(errs, config.Errorf(field("auth"), "header and env go together"))
		} else if a.Auth.Env != "" && strings.TrimSpace(a.AuthValue()) == "" {
			errs = append(errs, config.Errorf(field("auth.env"), "$%s is empty or unset", a.Auth.Env))
		}
		if a.Format != FormatMulaw && a.Format != FormatL16 {
			errs = append(errs, config.Errorf(field("format"), "%q, want mulaw or l16", a.Format))
		}
		if a.ConnectTimeout < 100*time.Millisecond || a.ConnectTimeout > 30*time.Second {
			errs = append(errs, config.Errorf(field("connect_timeout"), "%v, want 100ms to 30s", a.ConnectTimeout))
		}
		if a.PlayoutBuffer < time.Second || a.PlayoutBuffer > 5*time.Minute {
			errs = append(errs, config.Errorf(field("playout_buffer"), "%v, want 1s to 5m", a.PlayoutBuffer))
		}
		if a.WriteTimeout < 100*time.Millisecond || a.WriteTimeout > 30*time.Second {
			errs = append(errs, config.Errorf(field("write_timeout"), "%v, want 100ms to 30s", a.WriteTimeout))
		}
		if a.MaxMessageBytes < 4096 || a.MaxMessageBytes > 16<<20 {
			errs = append(errs, config.Errorf(field("max_message_bytes"), "%d, want 4096 to 16777216", a.MaxMessageBytes))
		}
		errs = append(errs, a.OnFailure.validate(field("on_agent_failure"))...)
	}
	return errs
}

func (f AgentFailure) validate(field string) []error {
	var errs []error
	switch f.Action {
	case FailHangup:
	case FailPlayThenHangup:
		if f.WAV == "" {
			errs = append(errs, config.Errorf(field+".wav", "required for play_then_hangup"))
		}
	case FailHandoff:
		if !trunkName.MatchString(f.Destination) {
			errs = append(errs, config.Errorf(field+".destination", "%q, want the router's destination name", f.Destination))
		}
	default:
		errs = append(errs, config.Errorf(field+".action", "%q, want hangup, play_then_hangup or handoff", f.Action))
	}
	if f.WAV != "" {
		if _, err := audio.Load(f.WAV); err != nil {
			errs = append(errs, config.Errorf(field+".wav", "%v", err))
		}
	}
	return errs
}
