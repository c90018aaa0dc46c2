// Package config is the router's configuration: Kafka, logging, the
// consumer group and transactional id, the handoff destinations and the
// routing rules. Validate checks everything a handoff depends on, so a
// router that started can never meet a bad destination mid-call.
package config

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/pkg/opshttp"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/services/router/internal/handoff"
	"github.com/baton-voice/baton/services/router/internal/route"
	"github.com/baton-voice/baton/services/router/internal/rules"
	"github.com/baton-voice/baton/services/router/internal/template"
)

// DefaultAnswerTimeout is a destination's answer timeout when none is set.
const DefaultAnswerTimeout = 30 * time.Second

// MaxAnswerTimeout bounds answer_timeout; longer is surely a typo.
const MaxAnswerTimeout = 10 * time.Minute

// DefaultMaxAttempts is max_attempts when none is set.
const DefaultMaxAttempts = 3

// DefaultMaxHandoffsPerCall is max_handoffs_per_call when none is set.
const DefaultMaxHandoffsPerCall = 3

// MaxMaxHandoffsPerCall bounds max_handoffs_per_call.
const MaxMaxHandoffsPerCall = 100

// Per-call state caps (max_state_keys_per_call, max_state_bytes_per_call):
// defaults and bounds.
const (
	DefaultMaxStateKeysPerCall  = 256
	MaxMaxStateKeysPerCall      = 4096
	DefaultMaxStateBytesPerCall = 64 << 10
	MinMaxStateBytesPerCall     = 1 << 10
	MaxMaxStateBytesPerCall     = 4 << 20
)

// max_call_duration and max_calls: defaults and bounds.
const (
	DefaultMaxCallDuration = 4 * time.Hour
	MinMaxCallDuration     = time.Minute
	MaxMaxCallDuration     = 7 * 24 * time.Hour
	DefaultMaxCalls        = 200_000
	MinMaxCalls            = 100
	MaxMaxCalls            = 10_000_000
)

// DefaultPollInterval is reload.poll_interval when none is set.
const DefaultPollInterval = 2 * time.Second

// on_all_failed values.
const (
	OnAllFailedHangup        = "hangup"
	OnAllFailedReturnToAgent = "return_to_agent"
)

// on_missing_variable values.
const (
	OnMissingEmpty  = "empty"
	OnMissingRefuse = "refuse"
)

// encryption values.
const (
	EncryptionTLSSRTP = "tls_srtp"
	EncryptionUDPRTP  = "udp_rtp"
)

// Config is the router's configuration file.
type Config struct {
	Kafka kafka.Config            `yaml:"kafka"`
	Log   observability.LogConfig `yaml:"log"`
	// Group is the consumer group every router instance joins.
	Group string `yaml:"group"`
	// TransactionalID names this instance's transactional producer. It must
	// be unique per instance and stable across its restarts, so a restarted
	// instance fences its own unfinished transaction.
	TransactionalID string `yaml:"transactional_id"`
	// TransactionTimeout is how long the broker keeps a transaction of a
	// dead instance open before aborting it; 0 is franz-go's default (40s).
	TransactionTimeout time.Duration `yaml:"transaction_timeout"`
	// Destinations are where calls can be handed off.
	Destinations []Destination `yaml:"destinations"`
	// Trunks are the carriers and SBCs destinations are reached through,
	// with their integration constraints.
	Trunks []Trunk `yaml:"trunks"`
	// Rules are tried in order when a call starts and when a handoff
	// request names no destination.
	Rules []Rule `yaml:"rules"`
	// Allowlist admits routes a handoff request may name directly; any
	// other target that is not a configured destination is refused.
	Allowlist Allowlist `yaml:"allowlist"`
	// MaxAttempts bounds the commands of one handoff, fallbacks included.
	MaxAttempts uint32 `yaml:"max_attempts"`
	// MaxHandoffsPerCall bounds the handoffs one call may start (rules and
	// requests alike); a request beyond it is refused (too_many_handoffs).
	MaxHandoffsPerCall uint32 `yaml:"max_handoffs_per_call"`
	// MaxStateKeysPerCall and MaxStateBytesPerCall bound one call's state
	// (what the agent API's PATCH /v1/calls/{id}/state and rules' set.state
	// write): its keys, and the bytes of its keys and values together. The
	// API refuses a write that would grow the state past either (422), and
	// the fold does not apply one from the log.
	MaxStateKeysPerCall  int `yaml:"max_state_keys_per_call"`
	MaxStateBytesPerCall int `yaml:"max_state_bytes_per_call"`
	// OnAllFailed is hangup (a BYE ends the call) or return_to_agent.
	OnAllFailed string `yaml:"on_all_failed"`
	// MaxCallDuration evicts a call that had no event for this long: its
	// owner publishes a CallEvicted (reason max_call_duration) and every
	// fold of the log forgets the call. It also stretches the restore's
	// and the call view's re-read of the log to at least this far back.
	MaxCallDuration time.Duration `yaml:"max_call_duration"`
	// MaxCalls bounds the calls one instance holds, in its own fold and
	// in its call view each: a call that starts beyond it is not held
	// (logged once, counted in baton_router_calls_dropped_total).
	MaxCalls int `yaml:"max_calls"`
	// API is the agent HTTP API.
	API API `yaml:"api"`
	// Reload is how configuration changes are picked up.
	Reload Reload `yaml:"reload"`
	// Metrics serves /metrics, /healthz and /readyz.
	Metrics opshttp.Config `yaml:"metrics"`
	// Tracing is the OpenTelemetry tracer's setup.
	Tracing tracing.Config `yaml:"tracing"`
	// PreCall is the pre-call webhook.
	PreCall PreCall `yaml:"precall"`
	// Webhooks receive the handoff transitions of the calls this instance
	// owns (package push); none by default.
	Webhooks []Webhook `yaml:"webhooks"`
	// Outbound is the policy of the calls agents place (POST /v1/calls);
	// none by default, which refuses every outbound call.
	Outbound Outbound `yaml:"outbound"`

	// compiled holds the rule conditions Validate compiled (nil: no when).
	compiled []*rules.Condition
	// warnings are problems that do not stop the router; see Warnings.
	warnings []string
}

// Trunk is a carrier or SBC and what it allows.
type Trunk struct {
	Name string `yaml:"name"`
	// Method, when set, is the only method the trunk accepts; a destination
	// on the trunk without a method takes it.
	Method string `yaml:"method"`
	// Route, when set, is fixed by the carrier; a destination on the trunk
	// without a route takes it.
	Route string `yaml:"route"`
	// HeadersSupported false says the trunk drops custom headers (Twilio
	// on REFER, say); a destination with headers on it is warned about.
	HeadersSupported *bool `yaml:"headers_supported"`
}

// Allowlist is the transfer-target allowlist.
type Allowlist struct {
	// Routes are patterns: a glob ("sip:*@pbx.example.com", '*' matches any
	// run of characters but '/') or "re:" and a regular expression that
	// must match the whole route.
	Routes []string `yaml:"routes"`
	// DenyNumbers are number prefixes no handoff may dial, whatever
	// allows the route (premium-rate ranges: "+1900", "+44 9"). They are
	// matched against the number a route dials (route.Number: the user
	// part of a SIP URI, escapes decoded, or the tel: number, visual
	// separators removed), literally: list "+1900" and "001900" both if
	// the carrier takes both forms. A configured destination whose route
	// is denied is a configuration error.
	DenyNumbers []string `yaml:"deny_numbers"`
}

// API configures the agent HTTP API.
type API struct {
	// Listen is the address to serve on; empty turns the API off.
	Listen string `yaml:"listen"`
	// TokensEnv names the environment variable that holds the accepted
	// bearer tokens, comma-separated. Tokens never live in the file.
	TokensEnv string `yaml:"tokens_env"`
	// MaxMarkWaits bounds the handoff requests (with after_mark) this
	// instance holds until their mark plays; beyond it a request is
	// answered 429 with Retry-After.
	MaxMarkWaits int `yaml:"max_mark_waits"`
	// MaxStreams and MaxStreamsPerCall bound the event streams (GET
	// /v1/calls/{id}/events) open on this instance, and for one call;
	// beyond either a stream is refused 429.
	MaxStreams        int `yaml:"max_streams"`
	MaxStreamsPerCall int `yaml:"max_streams_per_call"`
	// StreamHeartbeat is how often an idle event stream gets a comment
	// line, so proxies and clients see it alive.
	StreamHeartbeat time.Duration `yaml:"stream_heartbeat"`
}

// Webhook is one receiver of handoff transitions.
type Webhook struct {
	// Name labels the endpoint's metrics and logs (default webhook-<n>).
	Name string `yaml:"name"`
	// URL is an absolute http(s) URL, without credentials.
	URL string `yaml:"url"`
	// SecretEnv names the environment variable holding the HMAC secret
	// the Baton-Signature header is keyed with.
	SecretEnv string `yaml:"secret_env"`
	// Events are the transition types sent (requested, refused,
	// command_issued, accepted, progress, succeeded, failed,
	// returned_to_agent, call_ended, call_evicted); empty sends all.
	Events []string `yaml:"events"`
	// MaxInFlight bounds the POSTs under way at once; a call's
	// transitions still go one at a time, in order.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxQueue bounds the transitions waiting; when full the oldest is
	// dropped (baton_router_webhook_dropped_total).
	MaxQueue int `yaml:"max_queue"`
	// Timeout bounds one POST; MaxRetry the retries of one transition
	// (exponential backoff from 200 ms to 30 s).
	Timeout  time.Duration `yaml:"timeout"`
	MaxRetry time.Duration `yaml:"max_retry"`
}

// Bounds and defaults of api streams and webhooks.
const (
	DefaultMaxStreams         = 1000
	DefaultMaxStreamsPerCall  = 4
	DefaultStreamHeartbeat    = 15 * time.Second
	DefaultWebhookMaxInFlight = 4
	DefaultWebhookMaxQueue    = 10_000
	DefaultWebhookTimeout     = 5 * time.Second
	DefaultWebhookMaxRetry    = 10 * time.Minute
	MaxWebhookMaxInFlight     = 64
	MaxWebhookMaxQueue        = 1_000_000
	MaxWebhookTimeout         = 30 * time.Second
	MaxWebhookMaxRetry        = 24 * time.Hour
	MinStreamHeartbeat        = time.Second
	MaxStreamHeartbeat        = 5 * time.Minute
)

// Bounds of api.max_mark_waits.
const (
	DefaultMaxMarkWaits = 1000
	MaxMaxMarkWaits     = 100_000
)

// Reload configures configuration reloading. SIGHUP always reloads.
type Reload struct {
	// PollInterval is how often the file is checked for changes; 0 turns
	// polling off.
	PollInterval time.Duration `yaml:"poll_interval"`
}

// Pre-call defaults and bounds.
const (
	DefaultPreCallTimeout     = 2 * time.Second
	MaxPreCallTimeout         = 30 * time.Second
	DefaultPreCallMaxAge      = time.Minute
	DefaultPreCallMaxInFlight = 16
)

// PreCall configures the pre-call webhook: when a call starts (its
// CallStarted committed), the router POSTs the call to URL and publishes
// the answer, or why there is none, as a PreCallData fact.
type PreCall struct {
	// URL is the webhook, http or https; empty turns fetching off (the
	// fold still uses PreCallData found in the log, as in a replay).
	URL string `yaml:"url"`
	// Timeout bounds one webhook call, connection to last byte.
	Timeout time.Duration `yaml:"timeout"`
	// HeadersEnv names an environment variable holding extra request
	// headers ("Name: value" lines), such as Authorization. Secrets never
	// live in the file.
	HeadersEnv string `yaml:"headers_env"`
	// MaxAge skips calls whose CallStarted is older than this (by its
	// event time): a group that re-reads old history fetches nothing.
	MaxAge time.Duration `yaml:"max_age"`
	// MaxInFlight bounds concurrent webhook calls; calls started beyond it
	// wait in a bounded queue, and are skipped (logged) when it is full.
	MaxInFlight int `yaml:"max_in_flight"`
}

// Rule after values.
const (
	AfterStart   = ""
	AfterPreCall = "precall"
)

// Destination is one handoff destination as configured.
type Destination struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Method is REFER (default), INVITE or BYE, any case.
	Method string `yaml:"method"`
	// Route is a sip: or sips: URI, a tel: URI, or an extension of digits.
	Route string `yaml:"route"`
	// Headers maps an X- header name to its value template.
	Headers map[string]string `yaml:"headers"`
	// Default marks the destination used when none is named; when no
	// destination is marked, the first one is the default.
	Default bool `yaml:"default"`
	// AnswerTimeout bounds how long the destination may take to answer;
	// 0 means DefaultAnswerTimeout.
	AnswerTimeout time.Duration `yaml:"answer_timeout"`
	// Trunk names the trunk the destination is reached through.
	Trunk string `yaml:"trunk"`
	// Encryption of an INVITE leg: tls_srtp (default) or udp_rtp.
	Encryption string `yaml:"encryption"`
	// Whisper is the audio (an absolute path or an http(s) URL) played to
	// the destination before the caller is bridged; INVITE only.
	Whisper string `yaml:"whisper"`
	// ContextIn is where a REFER carries the destination's headers:
	// refer_to (default: ?headers of the Refer-To URI, which the
	// transferee copies into its INVITE), headers (the REFER's own
	// headers, for an SBC that reads them there) or both. REFER only.
	ContextIn string `yaml:"context_in"`
	// WhisperHosts are the hosts an agent may name in a handoff's own
	// whisper_url (exact host, or *.domain for the hosts below it);
	// empty, the default, refuses whisper URLs. INVITE only.
	WhisperHosts []string `yaml:"whisper_hosts"`
	// Fallback names the destinations tried, in order, when this one fails.
	Fallback []string `yaml:"fallback"`
	// OnMissingVariable is empty (render "" and log, the default) or refuse.
	OnMissingVariable string `yaml:"on_missing_variable"`
	// SkipWhenDown passes the destination over while transfer's
	// health_checks report it down (its fallbacks, then the default, are
	// tried; refused destination_down when all are down). Off by default.
	SkipWhenDown bool `yaml:"skip_when_down"`
}

// Rule is a routing rule: a CEL condition and its actions (see package
// rules for what a condition sees).
type Rule struct {
	Name string `yaml:"name"`
	// When is a CEL bool expression; empty matches every call.
	When string `yaml:"when"`
	// Set writes variables or state when the rule matches.
	Set RuleSet `yaml:"set"`
	// Handoff names the destination a matching call is handed off to at once.
	Handoff string `yaml:"handoff"`
	// Agent names the voice-AI agent (an entry of ingress's agents) the
	// call streams to, overriding ingress's choice by number, trunk or
	// default (AgentSelected; ingress waits agent_selection_wait for it).
	Agent string `yaml:"agent"`
	// Continue goes on to the next rule after a match without a handoff;
	// otherwise a match stops the rules and leaves the call to the agent.
	Continue bool `yaml:"continue"`
	// After is "" (the rule runs when the call starts) or "precall" (it
	// runs when the call's pre-call data is folded, and sees it). Both
	// kinds run for a handoff request without destination.
	After string `yaml:"after"`
}

// RuleSet is a rule's set action.
type RuleSet struct {
	Variables map[string]string `yaml:"variables"`
	State     map[string]string `yaml:"state"`
}

// DefaultMetricsListen is where /metrics, /healthz and /readyz are served.
const DefaultMetricsListen = "127.0.0.1:9462"

// Default returns the configuration before the file is read. hostname
// makes the default transactional id unique per host.
func Default(hostname string) Config {
	return Config{
		Kafka:           kafka.DefaultConfig(),
		Log:             observability.DefaultLogConfig(),
		Group:           "baton-router",
		TransactionalID: "baton-router-" + hostname,
		MaxAttempts:     DefaultMaxAttempts,
		OnAllFailed:     OnAllFailedHangup,

		MaxHandoffsPerCall: DefaultMaxHandoffsPerCall,

		MaxStateKeysPerCall:  DefaultMaxStateKeysPerCall,
		MaxStateBytesPerCall: DefaultMaxStateBytesPerCall,

		MaxCallDuration: DefaultMaxCallDuration,
		MaxCalls:        DefaultMaxCalls,

		API: API{TokensEnv: "BATON_API_TOKENS", MaxMarkWaits: DefaultMaxMarkWaits, MaxStreams: DefaultMaxStreams,
			MaxStreamsPerCall: DefaultMaxStreamsPerCall, StreamHeartbeat: DefaultStreamHeartbeat},
		Reload:  Reload{PollInterval: DefaultPollInterval},
		Metrics: opshttp.Config{Listen: DefaultMetricsListen},
		Tracing: tracing.DefaultConfig(),
		PreCall: PreCall{
			Timeout: DefaultPreCallTimeout, MaxAge: DefaultPreCallMaxAge, MaxInFlight: DefaultPreCallMaxInFlight,
		},
	}
}

// Warnings returns the problems Validate found that do not stop the
// router, each as "field: problem".
func (c *Config) Warnings() []string { return c.warnings }

// Load reads the file at path over the defaults and validates the result;
// with an empty path the defaults alone are validated. This is exactly what
// the router's main does.
func Load(path, hostname string) (Config, error) {
	c := Default(hostname)
	if path == "" {
		if err := c.Validate(); err != nil {
			return Config{}, fmt.Errorf("invalid configuration (no --config given): %w", err)
		}
		return c, nil
	}
	if err := pkgconfig.Load(path, &c); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate returns every problem, each naming its field, and collects
// the warnings (see Warnings).
func (c *Config) Validate() error {
	c.warnings = nil
	var errs []error
	if err := c.Kafka.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	if strings.TrimSpace(c.Group) == "" {
		errs = append(errs, pkgconfig.Errorf("group", "a consumer group id is required"))
	}
	if strings.TrimSpace(c.TransactionalID) == "" {
		errs = append(errs, pkgconfig.Errorf("transactional_id", "a transactional id, unique per instance, is required"))
	}
	errs = append(errs, c.Metrics.Validate(), c.Tracing.Validate())
	if c.TransactionTimeout < 0 {
		errs = append(errs, pkgconfig.Errorf("transaction_timeout", "%v: want 0 (default) or a positive duration", c.TransactionTimeout))
	}
	errs = append(errs, c.validateTrunks()...)
	errs = append(errs, c.validateDestinations()...)
	errs = append(errs, c.validateFallback()...)
	errs = append(errs, c.validateRules()...)
	for i, p := range c.Allowlist.Routes {
		if _, err := sipx.NewRoutePattern(p); err != nil {
			errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("allowlist.routes[%d]", i), "%q: %v", p, err))
		}
	}
	deny, denyErrs := c.denyNumbers()
	errs = append(errs, denyErrs...)
	errs = append(errs, c.validateDenied(deny)...)
	if c.MaxAttempts < 1 || c.MaxAttempts > 10 {
		errs = append(errs, pkgconfig.Errorf("max_attempts", "%d: want 1 to 10", c.MaxAttempts))
	}
	if c.MaxHandoffsPerCall < 1 || c.MaxHandoffsPerCall > MaxMaxHandoffsPerCall {
		errs = append(errs, pkgconfig.Errorf("max_handoffs_per_call", "%d: want 1 to %d", c.MaxHandoffsPerCall, MaxMaxHandoffsPerCall))
	}
	if n := c.MaxStateKeysPerCall; n < 1 || n > MaxMaxStateKeysPerCall {
		errs = append(errs, pkgconfig.Errorf("max_state_keys_per_call", "%d: want 1 to %d", n, MaxMaxStateKeysPerCall))
	}
	if n := c.MaxStateBytesPerCall; n < MinMaxStateBytesPerCall || n > MaxMaxStateBytesPerCall {
		errs = append(errs, pkgconfig.Errorf("max_state_bytes_per_call", "%d: want %d to %d",
			n, MinMaxStateBytesPerCall, MaxMaxStateBytesPerCall))
	}
	if d := c.MaxCallDuration; d < MinMaxCallDuration || d > MaxMaxCallDuration {
		errs = append(errs, pkgconfig.Errorf("max_call_duration", "%v: want %v to %v", d, MinMaxCallDuration, MaxMaxCallDuration))
	}
	if n := c.MaxCalls; n < MinMaxCalls || n > MaxMaxCalls {
		errs = append(errs, pkgconfig.Errorf("max_calls", "%d: want %d to %d", n, MinMaxCalls, MaxMaxCalls))
	}
	if p := c.OnAllFailed; p != OnAllFailedHangup && p != OnAllFailedReturnToAgent {
		errs = append(errs, pkgconfig.Errorf("on_all_failed", "%q: want %s or %s", p, OnAllFailedHangup, OnAllFailedReturnToAgent))
	}
	if c.API.Listen != "" {
		if _, _, err := net.SplitHostPort(c.API.Listen); err != nil {
			errs = append(errs, pkgconfig.Errorf("api.listen", "%q: want host:port", c.API.Listen))
		}
		if strings.TrimSpace(c.API.TokensEnv) == "" {
			errs = append(errs, pkgconfig.Errorf("api.tokens_env", "the environment variable holding the API tokens is required"))
		}
		if n := c.API.MaxMarkWaits; n < 1 || n > MaxMaxMarkWaits {
			errs = append(errs, pkgconfig.Errorf("api.max_mark_waits", "%d: want 1 to %d", n, MaxMaxMarkWaits))
		}
		if n := c.API.MaxStreams; n < 1 || n > 100_000 {
			errs = append(errs, pkgconfig.Errorf("api.max_streams", "%d: want 1 to 100000", n))
		}
		if n := c.API.MaxStreamsPerCall; n < 1 || n > 100 {
			errs = append(errs, pkgconfig.Errorf("api.max_streams_per_call", "%d: want 1 to 100", n))
		}
		if d := c.API.StreamHeartbeat; d < MinStreamHeartbeat || d > MaxStreamHeartbeat {
			errs = append(errs, pkgconfig.Errorf("api.stream_heartbeat", "%v: want %v to %v", d, MinStreamHeartbeat, MaxStreamHeartbeat))
		}
	}
	if c.Reload.PollInterval < 0 {
		errs = append(errs, pkgconfig.Errorf("reload.poll_interval", "%v: want 0 (off) or a positive duration", c.Reload.PollInterval))
	}
	errs = append(errs, c.validatePreCall()...)
	errs = append(errs, c.validateWebhooks()...)
	errs = append(errs, c.validateOutbound()...)
	return errors.Join(errs...)
}

// denyNumbers normalises allowlist.deny_numbers.
func (c *Config) denyNumbers() ([]string, []error) {
	var out []string
	var errs []error
	for i, p := range c.Allowlist.DenyNumbers {
		n, err := route.NumberPrefix(p)
		if err != nil {
			errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("allowlist.deny_numbers[%d]", i), "%v", err))
			continue
		}
		out = append(out, n)
	}
	return out, errs
}

// validateDenied refuses destinations and trunks whose route dials a
// denied number: the operator contradicts themselves.
func (c *Config) validateDenied(deny []string) []error {
	var errs []error
	for i, t := range c.Trunks {
		if p, ok := route.Denied(t.Route, deny); ok {
			errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("trunks[%d].route", i), "%q dials a denied number (allowlist.deny_numbers %q)", t.Route, p))
		}
	}
	for i, d := range c.Destinations {
		if p, ok := route.Denied(d.Route, deny); ok {
			errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("destinations[%d].route", i), "%q dials a denied number (allowlist.deny_numbers %q)", d.Route, p))
		}
	}
	return errs
}

func (c *Config) validatePreCall() []error {
	var errs []error
	p := c.PreCall
	if p.URL != "" {
		u, err := url.Parse(p.URL)
		switch {
		case err != nil:
			errs = append(errs, pkgconfig.Errorf("precall.url", "%v", err))
		case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
			errs = append(errs, pkgconfig.Errorf("precall.url", "%q: want an absolute http(s) URL", p.URL))
		case u.User != nil:
			errs = append(errs, pkgconfig.Errorf("precall.url", "credentials in the URL; put them in the variable named by precall.headers_env"))
		}
	}
	if p.Timeout <= 0 || p.Timeout > MaxPreCallTimeout {
		errs = append(errs, pkgconfig.Errorf("precall.timeout", "%v: want a positive duration up to %v", p.Timeout, MaxPreCallTimeout))
	}
	if p.MaxAge <= 0 {
		errs = append(errs, pkgconfig.Errorf("precall.max_age", "%v: want a positive duration", p.MaxAge))
	}
	if p.MaxInFlight < 1 || p.MaxInFlight > 1024 {
		errs = append(errs, pkgconfig.Errorf("precall.max_in_flight", "%d: want 1 to 1024", p.MaxInFlight))
	}
	if p.URL == "" {
		for i, r := range c.Rules {
			if r.After == AfterPreCall {
				c.warnf(fmt.Sprintf("rules[%d].after", i),
					"precall.url is empty: rule %q runs only for pre-call data already in the log (a replay)", r.Name)
			}
		}
	}
	return errs
}

// validateWebhooks checks the webhooks and fills their defaults.
func (c *Config) validateWebhooks() []error {
	var errs []error
	names := map[string]int{}
	for i := range c.Webhooks {
		w := &c.Webhooks[i]
		path := fmt.Sprintf("webhooks[%d]", i)
		if w.Name == "" {
			w.Name = fmt.Sprintf("webhook-%d", i)
		}
		if !destinationName.MatchString(w.Name) {
			errs = append(errs, pkgconfig.Errorf(path+".name", "%q: want letters, digits, '_', '-' or '.'", w.Name))
		} else if j, dup := names[w.Name]; dup {
			errs = append(errs, pkgconfig.Errorf(path+".name", "duplicate webhook %q (also webhooks[%d])", w.Name, j))
		}
		names[w.Name] = i
		u, err := url.Parse(w.URL)
		switch {
		case err != nil:
			errs = append(errs, pkgconfig.Errorf(path+".url", "%v", err))
		case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
			errs = append(errs, pkgconfig.Errorf(path+".url", "%q: want an absolute http(s) URL", w.URL))
		case u.User != nil:
			errs = append(errs, pkgconfig.Errorf(path+".url", "credentials in the URL; the body is signed with the secret of secret_env"))
		}
		if strings.TrimSpace(w.SecretEnv) == "" {
			errs = append(errs, pkgconfig.Errorf(path+".secret_env", "the environment variable holding the signing secret is required"))
		}
		for j, e := range w.Events {
			if !slices.Contains(handoff.TransitionTypes, e) {
				errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("%s.events[%d]", path, j), "%q: want one of %s", e,
					strings.Join(handoff.TransitionTypes, ", ")))
			}
		}
		w.MaxInFlight = cmp.Or(w.MaxInFlight, DefaultWebhookMaxInFlight)
		w.MaxQueue = cmp.Or(w.MaxQueue, DefaultWebhookMaxQueue)
		w.Timeout = cmp.Or(w.Timeout, DefaultWebhookTimeout)
		w.MaxRetry = cmp.Or(w.MaxRetry, DefaultWebhookMaxRetry)
		if w.MaxInFlight < 1 || w.MaxInFlight > MaxWebhookMaxInFlight {
			errs = append(errs, pkgconfig.Errorf(path+".max_in_flight", "%d: want 1 to %d", w.MaxInFlight, MaxWebhookMaxInFlight))
		}
		if w.MaxQueue < w.MaxInFlight || w.MaxQueue > MaxWebhookMaxQueue {
			errs = append(errs, pkgconfig.Errorf(path+".max_queue", "%d: want max_in_flight (%d) to %d", w.MaxQueue, w.MaxInFlight, MaxWebhookMaxQueue))
		}
		if w.Timeout < 0 || w.Timeout > MaxWebhookTimeout {
			errs = append(errs, pkgconfig.Errorf(path+".timeout", "%v: want a positive duration up to %v", w.Timeout, MaxWebhookTimeout))
		}
		if w.MaxRetry < 0 || w.MaxRetry > MaxWebhookMaxRetry {
			errs = append(errs, pkgconfig.Errorf(path+".max_retry", "%v: want a positive duration up to %v", w.MaxRetry, MaxWebhookMaxRetry))
		}
	}
	return errs
}

func (c *Config) warnf(path, format string, args ...any) {
	c.warnings = append(c.warnings, path+": "+fmt.Sprintf(format, args...))
}

func (c *Config) validateTrunks() []error {
	var errs []error
	seen := map[string]int{}
	for i, t := range c.Trunks {
		path := fmt.Sprintf("trunks[%d]", i)
		switch {
		case !destinationName.MatchString(t.Name):
			errs = append(errs, pkgconfig.Errorf(path+".name", "%q: want letters, digits, '_', '-' or '.'", t.Name))
		default:
			if j, dup := seen[strings.ToLower(t.Name)]; dup {
				errs = append(errs, pkgconfig.Errorf(path+".name", "duplicate trunk %q (also trunks[%d])", t.Name, j))
			}
			seen[strings.ToLower(t.Name)] = i
		}
		if t.Method != "" {
			if _, err := ParseMethod(t.Method); err != nil {
				errs = append(errs, pkgconfig.Errorf(path+".method", "%v", err))
			}
		}
		if t.Route != "" {
			if _, err := RouteKind(t.Route); err != nil {
				errs = append(errs, pkgconfig.Errorf(path+".route", "%v", err))
			}
		}
	}
	return errs
}

// trunk returns the trunk named name, ignoring case.
func (c *Config) trunk(name string) (Trunk, bool) {
	for _, t := range c.Trunks {
		if strings.EqualFold(t.Name, name) {
			return t, true
		}
	}
	return Trunk{}, false
}

// effective returns the method and route a destination uses: its own, or
// its trunk's where it gives none.
func (c *Config) effective(d Destination) (method, route string) {
	method, route = d.Method, d.Route
	if t, ok := c.trunk(d.Trunk); ok {
		if method == "" {
			method = t.Method
		}
		if route == "" {
			route = t.Route
		}
	}
	return method, route
}

var destinationName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func (c *Config) validateDestinations() []error {
	if len(c.Destinations) == 0 {
		return []error{pkgconfig.Errorf("destinations", "at least one destination is required")}
	}
	var errs []error
	seen := map[string]int{}
	var defaults []int
	for i, d := range c.Destinations {
		path := fmt.Sprintf("destinations[%d]", i)
		switch {
		case d.Name == "":
			errs = append(errs, pkgconfig.Errorf(path+".name", "a name is required"))
		case !destinationName.MatchString(d.Name):
			errs = append(errs, pkgconfig.Errorf(path+".name", "%q: want letters, digits, '_', '-' or '.'", d.Name))
		default:
			key := strings.ToLower(d.Name)
			if j, dup := seen[key]; dup {
				errs = append(errs, pkgconfig.Errorf(path+".name", "duplicate destination %q (also destinations[%d])", d.Name, j))
			} else {
				seen[key] = i
			}
		}
		if d.Default {
			defaults = append(defaults, i)
		}
		methodName, route := c.effective(d)
		method, err := ParseMethod(methodName)
		if err != nil {
			errs = append(errs, pkgconfig.Errorf(path+".method", "%v", err))
		}
		errs = append(errs, c.validateTrunkUse(path, d, method)...)
		errs = append(errs, validateRoute(path, route, method)...)
		errs = append(errs, validateHeaders(path, d.Headers)...)
		if d.AnswerTimeout < 0 || d.AnswerTimeout > MaxAnswerTimeout {
			errs = append(errs, pkgconfig.Errorf(path+".answer_timeout", "%v: want a positive duration up to %v", d.AnswerTimeout, MaxAnswerTimeout))
		}
		errs = append(errs, validateMedia(path, d, method, route)...)
		if p := d.OnMissingVariable; p != "" && p != OnMissingEmpty && p != OnMissingRefuse {
			errs = append(errs, pkgconfig.Errorf(path+".on_missing_variable", "%q: want %s or %s", p, OnMissingEmpty, OnMissingRefuse))
		}
	}
	if len(defaults) > 1 {
		var names []string
		for _, i := range defaults {
			names = append(names, fmt.Sprintf("%q (destinations[%d])", c.Destinations[i].Name, i))
		}
		errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("destinations[%d].default", defaults[1]),
			"more than one default destination: %s; mark exactly one", strings.Join(names, " and ")))
	}
	return errs
}

// validateTrunkUse checks a destination against its trunk's constraints.
// A locked method or a fixed route that the destination breaks is an
// error: the carrier would reject the transfer. Headers on a trunk that
// drops them are a warning: the transfer works, only the context is lost.
func (c *Config) validateTrunkUse(path string, d Destination, method batonv1.Method) []error {
	if d.Trunk == "" {
		return nil
	}
	t, ok := c.trunk(d.Trunk)
	if !ok {
		return []error{pkgconfig.Errorf(path+".trunk", "unknown trunk %q", d.Trunk)}
	}
	var errs []error
	if t.Method != "" {
		if locked, err := ParseMethod(t.Method); err == nil && locked != method {
			errs = append(errs, pkgconfig.Errorf(path+".method", "%s: trunk %q only accepts %s", methodName(method), t.Name, methodName(locked)))
		}
	}
	if t.Route != "" && d.Route != "" && d.Route != t.Route {
		errs = append(errs, pkgconfig.Errorf(path+".route", "%q: trunk %q fixes the route to %q; omit route or use it", d.Route, t.Name, t.Route))
	}
	if t.HeadersSupported != nil && !*t.HeadersSupported && len(d.Headers) > 0 {
		c.warnf(path+".headers", "trunk %q drops custom headers; %d header(s) will not reach the destination", t.Name, len(d.Headers))
	}
	return errs
}

// validateMedia checks encryption and whisper, which only INVITE uses.
func validateMedia(path string, d Destination, method batonv1.Method, route string) []error {
	var errs []error
	invite := method == batonv1.Method_METHOD_INVITE
	switch d.Encryption {
	case "":
	case EncryptionTLSSRTP, EncryptionUDPRTP:
		if !invite {
			errs = append(errs, pkgconfig.Errorf(path+".encryption", "applies to INVITE only; %s has no media leg of its own", methodName(method)))
		} else if d.Encryption == EncryptionUDPRTP && strings.HasPrefix(strings.ToLower(route), "sips:") {
			errs = append(errs, pkgconfig.Errorf(path+".encryption", "udp_rtp contradicts the sips: route %q", route))
		}
	default:
		errs = append(errs, pkgconfig.Errorf(path+".encryption", "%q: want %s (default) or %s", d.Encryption, EncryptionTLSSRTP, EncryptionUDPRTP))
	}
	if d.Whisper != "" {
		switch {
		case !invite:
			errs = append(errs, pkgconfig.Errorf(path+".whisper", "applies to INVITE only: the whisper plays on the new leg before the bridge"))
		case !strings.HasPrefix(d.Whisper, "/") && !strings.HasPrefix(d.Whisper, "http://") && !strings.HasPrefix(d.Whisper, "https://"):
			errs = append(errs, pkgconfig.Errorf(path+".whisper", "%q: want an absolute path or an http(s) URL", d.Whisper))
		case strings.ContainsAny(d.Whisper, "\r\n\x00"):
			errs = append(errs, pkgconfig.Errorf(path+".whisper", "contains a control character"))
		}
	}
	switch d.ContextIn {
	case "", "refer_to", "headers", "both":
		if d.ContextIn != "" && method != batonv1.Method_METHOD_REFER {
			errs = append(errs, pkgconfig.Errorf(path+".context_in", "applies to REFER only: %s carries its headers itself", methodName(method)))
		}
	default:
		errs = append(errs, pkgconfig.Errorf(path+".context_in", "%q: want refer_to (default), headers or both", d.ContextIn))
	}
	for j, h := range d.WhisperHosts {
		field := fmt.Sprintf("%s.whisper_hosts[%d]", path, j)
		switch {
		case !invite:
			errs = append(errs, pkgconfig.Errorf(field, "applies to INVITE only: the whisper plays on the new leg before the bridge"))
		case !whisperHost.MatchString(h):
			errs = append(errs, pkgconfig.Errorf(field, "%q: want a host name or IP address, or *.domain (lower case, no scheme or port)", h))
		}
	}
	return errs
}

// whisperHost is a whisper_hosts entry: a lower-case host name or IPv4
// address, optionally *. and a domain of at least two labels.
var whisperHost = regexp.MustCompile(`^(\*\.[a-z0-9-]+(\.[a-z0-9-]+)+|[a-z0-9-]+(\.[a-z0-9-]+)*)$`)

// validateFallback checks that every fallback names another destination
// once, and that the fallback lists form no cycle.
func (c *Config) validateFallback() []error {
	var errs []error
	graph := map[string][]string{}
	for i, d := range c.Destinations {
		seen := map[string]bool{}
		for j, name := range d.Fallback {
			path := fmt.Sprintf("destinations[%d].fallback[%d]", i, j)
			k := c.destination(name)
			switch {
			case k < 0:
				errs = append(errs, pkgconfig.Errorf(path, "unknown destination %q", name))
				continue
			case k == i:
				errs = append(errs, pkgconfig.Errorf(path, "%q falls back to itself", name))
				continue
			case seen[strings.ToLower(name)]:
				errs = append(errs, pkgconfig.Errorf(path, "%q is listed twice", name))
				continue
			}
			seen[strings.ToLower(name)] = true
			graph[strings.ToLower(d.Name)] = append(graph[strings.ToLower(d.Name)], strings.ToLower(c.Destinations[k].Name))
		}
	}
	// Depth-first search; a back edge is a cycle.
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var cycle []string
	var visit func(n string, stack []string) bool
	visit = func(n string, stack []string) bool {
		color[n] = grey
		stack = append(stack, n)
		for _, m := range graph[n] {
			switch color[m] {
			case grey:
				at := 0
				for i, s := range stack {
					if s == m {
						at = i
					}
				}
				cycle = append(append([]string{}, stack[at:]...), m)
				return true
			case white:
				if visit(m, stack) {
					return true
				}
			}
		}
		color[n] = black
		return false
	}
	for i, d := range c.Destinations {
		if color[strings.ToLower(d.Name)] == white && visit(strings.ToLower(d.Name), nil) {
			errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("destinations[%d].fallback", i), "fallback cycle: %s", strings.Join(cycle, " -> ")))
			break
		}
	}
	return errs
}

// ParseMethod reads a method name, any case; empty means REFER.
func ParseMethod(s string) (batonv1.Method, error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "", "REFER":
		return batonv1.Method_METHOD_REFER, nil
	case "INVITE":
		return batonv1.Method_METHOD_INVITE, nil
	case "BYE":
		return batonv1.Method_METHOD_BYE, nil
	}
	return batonv1.Method_METHOD_UNSPECIFIED, fmt.Errorf("unknown method %q: want REFER, INVITE or BYE", s)
}

// RouteKind classifies a route (route.Parse): "sip" (sip: or sips: URI),
// "tel" or "extension"; it returns an error for anything else.
func RouteKind(r string) (string, error) {
	kind, err := route.Parse(r)
	return string(kind), err
}

func validateRoute(path, r string, method batonv1.Method) []error {
	if r == "" {
		if method == batonv1.Method_METHOD_BYE {
			return nil // BYE hands the call back to the SBC; no target needed.
		}
		return []error{pkgconfig.Errorf(path+".route", "a route is required for %s", methodName(method))}
	}
	kind, err := route.Parse(r)
	if err != nil {
		return []error{pkgconfig.Errorf(path+".route", "%v", err)}
	}
	if method == batonv1.Method_METHOD_REFER && kind != route.SIP {
		return []error{pkgconfig.Errorf(path+".route", "%q: REFER needs a sip: or sips: route, because the headers ride in the Refer-To URI; use INVITE for %s routes", r, kind)}
	}
	return nil
}

func methodName(m batonv1.Method) string {
	return strings.TrimPrefix(m.String(), "METHOD_")
}

func validateHeaders(path string, headers map[string]string) []error {
	var errs []error
	seen := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(headers)) {
		hpath := path + ".headers." + name
		if err := sipx.ValidateCustom(name, ""); err != nil {
			errs = append(errs, pkgconfig.Errorf(hpath, "%v", err))
			continue
		}
		if other, dup := seen[strings.ToLower(name)]; dup {
			errs = append(errs, pkgconfig.Errorf(hpath, "header %s repeats %s (names ignore case)", name, other))
			continue
		}
		seen[strings.ToLower(name)] = name
		tpl, err := template.Parse(headers[name])
		if err != nil {
			errs = append(errs, pkgconfig.Errorf(hpath, "%v", err))
			continue
		}
		// The literal text alone must already be a valid header value.
		literal, _ := tpl.Render(template.NewScope())
		if err := sipx.ValidateCustom(name, literal); err != nil {
			errs = append(errs, pkgconfig.Errorf(hpath, "%v", err))
		}
	}
	return errs
}

// ReservedRuleName is the rule label of the decisions no rule made
// (baton_router_rule_hits_total); no rule may take it.
const ReservedRuleName = "(none)"

func (c *Config) validateRules() []error {
	var errs []error
	c.compiled = make([]*rules.Condition, len(c.Rules))
	var env *rules.Env
	names := map[string]int{}
	stopper := map[string]string{} // after → the rule that stops its pass
	for i, r := range c.Rules {
		path := fmt.Sprintf("rules[%d]", i)
		if r.Name == "" {
			errs = append(errs, pkgconfig.Errorf(path+".name", "a name is required"))
		} else if r.Name == ReservedRuleName {
			errs = append(errs, pkgconfig.Errorf(path+".name", "%q is reserved: the rule-hits metric counts decisions no rule made under it", r.Name))
		} else if j, dup := names[r.Name]; dup {
			errs = append(errs, pkgconfig.Errorf(path+".name", "duplicate rule %q (also rules[%d])", r.Name, j))
		} else {
			names[r.Name] = i
		}
		if r.When != "" {
			if env == nil {
				var err error
				if env, err = rules.NewEnv(); err != nil {
					return append(errs, err)
				}
			}
			cond, err := env.Compile(r.When)
			if err != nil {
				errs = append(errs, pkgconfig.Errorf(path+".when", "%v", err))
			}
			c.compiled[i] = cond
		}
		if r.Handoff != "" && c.destination(r.Handoff) < 0 {
			errs = append(errs, pkgconfig.Errorf(path+".handoff", "unknown destination %q", r.Handoff))
		}
		if r.Agent != "" && !handoff.ValidAgentName(r.Agent) {
			errs = append(errs, pkgconfig.Errorf(path+".agent", "%q, want an agent name of ingress's agents (letters, digits, '.', '_', '-')", r.Agent))
		}
		if r.Handoff != "" && r.Continue {
			errs = append(errs, pkgconfig.Errorf(path+".continue", "a rule that hands off ends the rules; remove continue"))
		}
		for _, k := range slices.Sorted(maps.Keys(r.Set.Variables)) {
			if err := sipx.ValidateValue(r.Set.Variables[k]); err != nil || k == "" {
				errs = append(errs, pkgconfig.Errorf(path+".set.variables."+k, "invalid variable: %v", err))
			}
		}
		for _, k := range slices.Sorted(maps.Keys(r.Set.State)) {
			if k == "" {
				errs = append(errs, pkgconfig.Errorf(path+".set.state", "an empty key"))
			}
		}
		if r.After != AfterStart && r.After != AfterPreCall {
			errs = append(errs, pkgconfig.Errorf(path+".after", "%q: want %s, or nothing (when the call starts)", r.After, AfterPreCall))
		}
		// A rule without a condition matches every call, and stops the
		// rules of its pass unless it continues: the next rule of the same
		// pass (after) is unreachable.
		if name, ok := stopper[r.After]; ok {
			errs = append(errs, pkgconfig.Errorf(path, "unreachable: rule %q before it matches every call and stops the rules", name))
			delete(stopper, r.After) // report once per stopping rule
		}
		if r.When == "" && !r.Continue {
			stopper[r.After] = r.Name
		}
	}
	return errs
}

// destination returns the index of the destination named name, or -1.
func (c *Config) destination(name string) int {
	for i, d := range c.Destinations {
		if d.Name == name {
			return i
		}
	}
	return -1
}

// DefaultDestination names the default: the one marked, else the first.
func (c *Config) DefaultDestination() string {
	for _, d := range c.Destinations {
		if d.Default {
			return d.Name
		}
	}
	if len(c.Destinations) == 0 {
		return ""
	}
	return c.Destinations[0].Name
}

// Table turns a validated configuration into the router's decision table.
func (c *Config) Table() (*handoff.Table, error) {
	if c.compiled == nil && len(c.Rules) > 0 {
		if err := c.Validate(); err != nil {
			return nil, err
		}
	}
	t := &handoff.Table{
		Destinations:       map[string]handoff.Destination{},
		Default:            c.DefaultDestination(),
		MaxAttempts:        c.MaxAttempts,
		MaxHandoffs:        c.MaxHandoffsPerCall,
		MaxStateKeys:       c.MaxStateKeysPerCall,
		MaxStateBytes:      c.MaxStateBytesPerCall,
		AdHocAnswerTimeout: DefaultAnswerTimeout,
	}
	deny, errs := c.denyNumbers()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	t.DeniedNumbers = deny
	if c.OnAllFailed == OnAllFailedReturnToAgent {
		t.OnAllFailed = handoff.EndReturnToAgent
	}
	for i, d := range c.Destinations {
		methodName, route := c.effective(d)
		method, err := ParseMethod(methodName)
		if err != nil {
			return nil, fmt.Errorf("destinations[%d].method: %w", i, err)
		}
		timeout := d.AnswerTimeout
		if timeout == 0 {
			timeout = DefaultAnswerTimeout
		}
		hd := handoff.Destination{
			Name: d.Name, Method: method, Route: route, AnswerTimeout: timeout,
			Fallback: slices.Clone(d.Fallback), SkipWhenDown: d.SkipWhenDown,
		}
		if method == batonv1.Method_METHOD_INVITE {
			hd.Encryption = handoff.EncryptionTLSSRTP
			if d.Encryption == EncryptionUDPRTP {
				hd.Encryption = handoff.EncryptionUDPRTP
			}
			hd.Whisper = d.Whisper
			hd.WhisperHosts = slices.Clone(d.WhisperHosts)
		}
		if d.OnMissingVariable == OnMissingRefuse {
			hd.OnMissing = handoff.MissingRefuse
		}
		if method == batonv1.Method_METHOD_REFER {
			hd.ContextIn = d.ContextIn
		}
		for _, name := range slices.Sorted(maps.Keys(d.Headers)) {
			tpl, err := template.Parse(d.Headers[name])
			if err != nil {
				return nil, fmt.Errorf("destinations[%d].headers.%s: %w", i, name, err)
			}
			hd.Headers = append(hd.Headers, handoff.Header{Name: name, Value: tpl})
		}
		t.Destinations[d.Name] = hd
	}
	for i, r := range c.Rules {
		hr := handoff.Rule{
			Name: r.Name, Destination: r.Handoff, Continue: r.Continue, Agent: r.Agent,
			SetVariables: r.Set.Variables, SetState: r.Set.State,
			AfterPreCall: r.After == AfterPreCall,
		}
		if cond := c.compiled[i]; cond != nil {
			hr.When = cond
		}
		t.Rules = append(t.Rules, hr)
	}
	for i, p := range c.Allowlist.Routes {
		pat, err := sipx.NewRoutePattern(p)
		if err != nil {
			return nil, fmt.Errorf("allowlist.routes[%d]: %w", i, err)
		}
		t.AllowedRoutes = append(t.AllowedRoutes, pat)
	}
	return t, nil
}
