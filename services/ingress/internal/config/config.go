// Package config is the configuration of the ingress service: where it
// listens for SIP, which address it gives out in Contact and SDP, the RTP
// port range of the media anchor, and how long a publish may take before
// an INVITE is refused.
package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/connguard"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/pkg/opshttp"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/services/ingress/internal/audio"
	"github.com/baton-voice/baton/services/ingress/internal/numbers"
)

// Config is the whole ingress configuration.
type Config struct {
	// Listen is the UDP host:port SIP arrives on; port 0 lets the OS choose.
	// Ignored when Listeners is set.
	Listen string `yaml:"listen"`
	// Listeners are the SIP sockets (UDP, TCP, TLS; IPv4 or IPv6); empty
	// means one UDP listener on Listen.
	Listeners []Listener `yaml:"listeners"`
	// ExternalHost is the host written into Contact and the SDP c= line;
	// empty means the listen host. Set it behind NAT.
	ExternalHost string `yaml:"external_host"`
	// Trunk names the trunk calls arrive on; it is copied into CallStarted.
	// Only used when Trunks is empty: the one trunk then accepts any
	// source, which a listener that is not on loopback may do only with
	// AllowAnySource.
	Trunk string `yaml:"trunk"`
	// AllowAnySource lets a listener that is not on loopback take calls
	// from every address when no trunk lists its sources. Off by default:
	// such a config is refused at start (fail closed).
	AllowAnySource bool `yaml:"allow_any_source"`
	// Trunks identify callers by source address; a request from an address
	// no trunk lists is dropped without an answer and counted.
	Trunks []Trunk `yaml:"trunks"`
	// Limits bound the load ingress takes before it answers 503.
	Limits Limits `yaml:"limits"`
	RTP    RTP    `yaml:"rtp"`
	// Media is what ingress plays to the caller once the call is up.
	Media Media `yaml:"media"`
	// Agents are the voice-AI agents calls stream their audio to.
	Agents []Agent `yaml:"agents"`
	// AgentSelectionWait is how long an answered call waits for the
	// router's AgentSelected (a rule's agent action, the pre-call answer's
	// agent) before it dials its agent by number, trunk or default; 0 (the
	// default) dials at once and follows no selection.
	AgentSelectionWait time.Duration `yaml:"agent_selection_wait"`
	// Outbound places the calls agents ask for (outbound.go); off by
	// default.
	Outbound Outbound `yaml:"outbound"`
	// Refer is what ingress does with the far end's REFERs (refer.go);
	// refuse (405) by default.
	Refer Refer `yaml:"refer"`
	// PublishTimeout bounds the publish of CallStarted; when Kafka does not
	// accept it in time the INVITE gets 503 and no call exists.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// DrainTimeout bounds the drain at SIGTERM: new INVITEs get 503 while
	// the calls up are served (BYE, NOTIFY, ACK, INFO) until they end or
	// this passes.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// ShutdownTimeout bounds the producer flush at shutdown.
	ShutdownTimeout time.Duration           `yaml:"shutdown_timeout"`
	Kafka           kafka.Config            `yaml:"kafka"`
	Log             observability.LogConfig `yaml:"log"`
	// Metrics serves /metrics, /healthz and /readyz.
	Metrics opshttp.Config `yaml:"metrics"`
	// Tracing is the OpenTelemetry tracer's setup.
	Tracing tracing.Config `yaml:"tracing"`
}

// Transports of a listener.
const (
	UDP = "udp"
	TCP = "tcp"
	TLS = "tls"
)

// Listener is one SIP socket.
type Listener struct {
	// Transport is udp, tcp or tls.
	Transport string `yaml:"transport"`
	// Address is host:port; an IPv6 host is bracketed ([::1]:5060).
	Address string `yaml:"address"`
	// CertFile and KeyFile are the PEM certificate chain and key of a tls
	// listener.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// EffectiveListeners returns the listeners in force: the configured ones,
// or one UDP listener on Listen.
func (c Config) EffectiveListeners() []Listener {
	if len(c.Listeners) > 0 {
		return c.Listeners
	}
	return []Listener{{Transport: UDP, Address: c.Listen}}
}

// Trunk is one carrier or SBC: where its requests come from and how its
// numbers read.
type Trunk struct {
	// Name is copied into CallStarted.trunk.
	Name string `yaml:"name"`
	// Sources is the CIDR allowlist (a bare IP means a /32 or /128).
	Sources []string `yaml:"sources"`
	// Region is the ISO 3166 region national numbers belong to (US, DE);
	// empty means only numbers with a leading + are normalised.
	Region string `yaml:"region"`
	// CallerFrom and CalleeFrom list where numbers are read, first match
	// wins: from, to, request_uri, pai, rpid, diversion.
	CallerFrom []numbers.Source `yaml:"caller_from"`
	CalleeFrom []numbers.Source `yaml:"callee_from"`
	// MaxCalls and MaxCPS bound this trunk's share of the limits (0: only
	// the global limits apply), so a flood from one trunk gets 503 while
	// the others keep their capacity.
	MaxCalls int `yaml:"max_calls"`
	MaxCPS   int `yaml:"max_cps"`
}

// Limits are the overload bounds; beyond them a new INVITE gets 503 with
// Retry-After.
type Limits struct {
	// MaxCalls bounds the calls up or being set up at once. Each call holds
	// one even RTP port, so it may not exceed what rtp.port_min..port_max
	// carries (RTP.Calls): beyond that, un-ACKed INVITEs would hold every
	// port and real calls would fail for want of one.
	MaxCalls int `yaml:"max_calls"`
	// MaxCPS bounds new INVITEs accepted per second (a token bucket with a
	// burst of one second's worth); retransmissions are never counted.
	MaxCPS int `yaml:"max_cps"`
	// RetryAfter is the Retry-After of the 503 (whole seconds).
	RetryAfter time.Duration `yaml:"retry_after"`
	// MaxUnackedPerSource bounds the calls one source address has between
	// INVITE and ACK (in setup, or answered and not yet acknowledged);
	// beyond it a new INVITE from that address gets 503. It applies to a
	// source that has completed a handshake (sent an ACK) in the last hour,
	// or that came over TCP or TLS.
	MaxUnackedPerSource int `yaml:"max_unacked_per_source"`
	// MaxUnackedUnverified is the same bound for a UDP source that has not
	// completed a handshake. A forger of another's address never sees the
	// 200's To tag and so never ACKs: this caps what ingress reflects at a
	// forged address (each 200 is retransmitted up to 10 times over 32 s).
	MaxUnackedUnverified int `yaml:"max_unacked_unverified"`
	// Connections bound the TCP and TLS listeners: connections in all and
	// from one address (beyond them a connection is closed at accept, as is
	// one from an address no trunk allows), how long a new one has to send
	// its first bytes (the TLS handshake included) and how long an
	// established one may stay silent (CRLF keep-alives count).
	Connections connguard.Config `yaml:"connections"`
}

// EffectiveTrunks returns the trunks in force: the configured ones, or,
// when none are, one named Trunk accepting any source with numbers from
// From and To.
func (c Config) EffectiveTrunks() []Trunk {
	if len(c.Trunks) > 0 {
		out := make([]Trunk, len(c.Trunks))
		for i, t := range c.Trunks {
			if len(t.CallerFrom) == 0 {
				t.CallerFrom = []numbers.Source{numbers.From}
			}
			if len(t.CalleeFrom) == 0 {
				t.CalleeFrom = []numbers.Source{numbers.To}
			}
			out[i] = t
		}
		return out
	}
	return []Trunk{{
		Name: c.Trunk, Sources: []string{"0.0.0.0/0", "::/0"},
		CallerFrom: []numbers.Source{numbers.From}, CalleeFrom: []numbers.Source{numbers.To},
	}}
}

// Prefix parses a source entry: a CIDR or a bare address.
func Prefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// Media is the audio ingress sends on the agent leg.
type Media struct {
	// Greeting is a WAV file (8000 Hz mono 16-bit PCM) played once to
	// the caller after the ACK, in the negotiated G.711 law; empty plays
	// Silence instead.
	Greeting string `yaml:"greeting"`
	// Silence is how long to send G.711 silence when there is no greeting
	// (it opens NAT bindings and latches symmetric-RTP peers); 0 sends
	// nothing.
	Silence time.Duration `yaml:"silence"`
}

// RTP is the media anchor's port range.
type RTP struct {
	// Host is the address RTP sockets bind to; empty means the listen host.
	Host string `yaml:"host"`
	// PortMin and PortMax bound the RTP ports (inclusive); even ports are used.
	PortMin int `yaml:"port_min"`
	PortMax int `yaml:"port_max"`
	// MediaTimeout ends an answered call (BYE to the caller, CallEnded
	// reason media_timeout) when no RTP arrived on its port for this long
	// while the caller is expected to send; 0 disables it.
	MediaTimeout time.Duration `yaml:"media_timeout"`
	// Reuse keeps a call's RTP socket, bound and read, when the call ends
	// and gives it to a later call, oldest first (at most limits.max_calls
	// idle; the range bounds them all): a call then costs no socket
	// set-up and teardown system calls and no goroutine of its own.
	Reuse bool `yaml:"reuse"`
	// Quarantine is how long a released socket stays idle before it is
	// reused (unless the range has no other free port), and how long after
	// that the previous call's stream (its last source and SSRC) is
	// dropped on it: a late packet of one call is never heard in the next.
	Quarantine time.Duration `yaml:"quarantine"`
}

// Calls is how many calls the port range carries: one even port each.
func (r RTP) Calls() int {
	first := r.PortMin + r.PortMin%2
	if r.PortMax < first {
		return 0
	}
	return (r.PortMax-first)/2 + 1
}

// Default returns the configuration used when no file is given.
func Default() Config {
	return Config{
		Listen: "127.0.0.1:5060",
		Trunk:  "default",
		RTP:    RTP{PortMin: 20000, PortMax: 20999, MediaTimeout: 60 * time.Second, Reuse: true, Quarantine: 2 * time.Second},
		Limits: Limits{MaxCalls: 500, MaxCPS: 1000, RetryAfter: 5 * time.Second,
			MaxUnackedPerSource: 100, MaxUnackedUnverified: 8,
			Connections: connguard.DefaultConfig()},
		PublishTimeout:  2 * time.Second,
		DrainTimeout:    30 * time.Second,
		ShutdownTimeout: 5 * time.Second,
		Kafka:           kafka.DefaultConfig(),
		Log:             observability.DefaultLogConfig(),
		Metrics:         opshttp.Config{Listen: DefaultMetricsListen},
		Tracing:         tracing.DefaultConfig(),
	}
}

// DefaultMetricsListen is where /metrics, /healthz and /readyz are served.
const DefaultMetricsListen = "127.0.0.1:9461"

var trunkName = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// Validate returns every problem, each naming its field.
func (c Config) Validate() error {
	errs := []error{c.Metrics.Validate(), c.Tracing.Validate()}
	if len(c.Listeners) == 0 {
		errs = append(errs, c.validateAddress("listen", c.Listen)...)
	}
	for i, l := range c.Listeners {
		field := func(f string) string { return fmt.Sprintf("listeners[%d].%s", i, f) }
		errs = append(errs, c.validateAddress(field("address"), l.Address)...)
		switch l.Transport {
		case UDP, TCP:
			if l.CertFile != "" || l.KeyFile != "" {
				errs = append(errs, config.Errorf(field("cert_file"), "only for transport tls"))
			}
		case TLS:
			if l.CertFile == "" || l.KeyFile == "" {
				errs = append(errs, config.Errorf(field("cert_file"), "cert_file and key_file are required for tls"))
			} else if _, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile); err != nil {
				errs = append(errs, config.Errorf(field("cert_file"), "%v", err))
			}
		default:
			errs = append(errs, config.Errorf(field("transport"), "%q, want udp, tcp or tls", l.Transport))
		}
	}
	if !validHost(c.ExternalHost) {
		errs = append(errs, config.Errorf("external_host", "%q, want an IP address or a host name", c.ExternalHost))
	}
	if !trunkName.MatchString(c.Trunk) {
		errs = append(errs, config.Errorf("trunk", "%q, want letters, digits, '.', '_' or '-'", c.Trunk))
	}
	errs = append(errs, c.validateTrunks()...)
	errs = append(errs, c.validateAgents()...)
	errs = append(errs, c.validateOutbound()...)
	errs = append(errs, c.validateRefer()...)
	if len(c.Trunks) == 0 && !c.AllowAnySource {
		for _, l := range c.EffectiveListeners() {
			if !loopback(l.Address) {
				errs = append(errs, config.Errorf("trunks", "none listed, and %s listens on %s, which is not loopback: "+
					"calls would be taken from any address. List each carrier's source ranges in trunks[].sources, "+
					"or set allow_any_source: true to accept that", l.Transport, l.Address))
				break
			}
		}
	}
	if c.Limits.MaxCalls < 1 {
		errs = append(errs, config.Errorf("limits.max_calls", "%d, want at least 1", c.Limits.MaxCalls))
	} else if n := c.RTP.Calls(); c.Limits.MaxCalls > n && n > 0 {
		errs = append(errs, config.Errorf("limits.max_calls", "%d, more than the RTP port range carries: %d calls "+
			"(one even port each in rtp.port_min..port_max %d-%d); widen the range or lower max_calls",
			c.Limits.MaxCalls, n, c.RTP.PortMin, c.RTP.PortMax))
	}
	if c.Limits.MaxCPS < 1 {
		errs = append(errs, config.Errorf("limits.max_cps", "%d, want at least 1", c.Limits.MaxCPS))
	}
	if c.Limits.RetryAfter < time.Second || c.Limits.RetryAfter%time.Second != 0 {
		errs = append(errs, config.Errorf("limits.retry_after", "%v, want whole seconds, at least 1s", c.Limits.RetryAfter))
	}
	if c.Limits.MaxUnackedPerSource < 1 {
		errs = append(errs, config.Errorf("limits.max_unacked_per_source", "%d, want at least 1", c.Limits.MaxUnackedPerSource))
	}
	if c.Limits.MaxUnackedUnverified < 1 || c.Limits.MaxUnackedUnverified > c.Limits.MaxUnackedPerSource {
		errs = append(errs, config.Errorf("limits.max_unacked_unverified", "%d, want 1 to max_unacked_per_source (%d)",
			c.Limits.MaxUnackedUnverified, c.Limits.MaxUnackedPerSource))
	}
	if err := c.Limits.Connections.Validate("limits.connections"); err != nil {
		errs = append(errs, err)
	}
	if c.RTP.Host != "" && net.ParseIP(c.RTP.Host) == nil {
		errs = append(errs, config.Errorf("rtp.host", "%q, want an IP address", c.RTP.Host))
	}
	if c.RTP.PortMin < 1024 || c.RTP.PortMin > 65534 {
		errs = append(errs, config.Errorf("rtp.port_min", "%d, want 1024-65534", c.RTP.PortMin))
	}
	if c.RTP.PortMax < c.RTP.PortMin+1 || c.RTP.PortMax > 65535 {
		errs = append(errs, config.Errorf("rtp.port_max", "%d, want above port_min (%d) and at most 65535", c.RTP.PortMax, c.RTP.PortMin))
	}
	if t := c.RTP.MediaTimeout; t != 0 && (t < time.Second || t > 24*time.Hour) {
		errs = append(errs, config.Errorf("rtp.media_timeout", "%v, want 0 (off) or 1s to 24h", t))
	}
	if q := c.RTP.Quarantine; q < 100*time.Millisecond || q > time.Minute {
		errs = append(errs, config.Errorf("rtp.quarantine", "%v, want 100ms to 1m", q))
	}
	if c.Media.Greeting != "" {
		if _, err := audio.Load(c.Media.Greeting); err != nil {
			errs = append(errs, config.Errorf("media.greeting", "%v", err))
		}
	}
	if c.Media.Silence < 0 || c.Media.Silence > time.Hour {
		errs = append(errs, config.Errorf("media.silence", "%v, want 0 to 1h", c.Media.Silence))
	}
	if c.PublishTimeout <= 0 {
		errs = append(errs, config.Errorf("publish_timeout", "%v, want a positive duration", c.PublishTimeout))
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, config.Errorf("drain_timeout", "%v, want 0 or more", c.DrainTimeout))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, config.Errorf("shutdown_timeout", "%v, want a positive duration", c.ShutdownTimeout))
	}
	if err := c.Kafka.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// loopback reports whether a listener address binds to loopback only
// (127.0.0.0/8 or ::1); a wildcard or any other address does not.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func (c Config) validateAddress(field, addr string) []error {
	var errs []error
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return []error{config.Errorf(field, "%q is not host:port: %v", addr, err)}
	}
	if p, perr := strconv.Atoi(port); perr != nil || p < 0 || p > 65535 {
		errs = append(errs, config.Errorf(field, "port %q, want 0-65535", port))
	}
	if host != "" && net.ParseIP(host) == nil {
		errs = append(errs, config.Errorf(field, "host %q, want an IP address", host))
	}
	if ip := net.ParseIP(host); (host == "" || ip != nil && ip.IsUnspecified()) && c.ExternalHost == "" {
		errs = append(errs, config.Errorf("external_host", "required when %s host %q is a wildcard", field, host))
	}
	return errs
}

func (c Config) validateTrunks() []error {
	var errs []error
	names := map[string]bool{}
	for i, t := range c.Trunks {
		field := func(f string) string { return fmt.Sprintf("trunks[%d].%s", i, f) }
		if !trunkName.MatchString(t.Name) {
			errs = append(errs, config.Errorf(field("name"), "%q, want letters, digits, '.', '_' or '-'", t.Name))
		} else if names[t.Name] {
			errs = append(errs, config.Errorf(field("name"), "%q used twice", t.Name))
		}
		names[t.Name] = true
		if len(t.Sources) == 0 {
			errs = append(errs, config.Errorf(field("sources"), "empty, want at least one CIDR"))
		}
		for j, s := range t.Sources {
			if _, err := Prefix(s); err != nil {
				errs = append(errs, config.Errorf(fmt.Sprintf("trunks[%d].sources[%d]", i, j), "%q, want a CIDR or an IP address", s))
			}
		}
		if t.MaxCalls < 0 {
			errs = append(errs, config.Errorf(field("max_calls"), "%d, want 0 (only limits.max_calls) or more", t.MaxCalls))
		}
		if t.MaxCPS < 0 {
			errs = append(errs, config.Errorf(field("max_cps"), "%d, want 0 (only limits.max_cps) or more", t.MaxCPS))
		}
		if err := numbers.ValidRegion(t.Region); err != nil {
			errs = append(errs, config.Errorf(field("region"), "%v", err))
		}
		for _, l := range []struct {
			field string
			list  []numbers.Source
		}{{"caller_from", t.CallerFrom}, {"callee_from", t.CalleeFrom}} {
			for j, src := range l.list {
				if !src.Valid() {
					errs = append(errs, config.Errorf(fmt.Sprintf("trunks[%d].%s[%d]", i, l.field, j), "%q, want one of %v", src, numbers.Sources))
				}
			}
		}
	}
	return errs
}

// ContactHost is the host given out in Contact and SDP: external_host, or
// the host of the first listener.
func (c Config) ContactHost() string {
	if c.ExternalHost != "" {
		return c.ExternalHost
	}
	return c.listenHost()
}

// RTPHost is the address RTP sockets bind to: rtp.host, or the host of
// the first listener.
func (c Config) RTPHost() string {
	if c.RTP.Host != "" {
		return c.RTP.Host
	}
	return c.listenHost()
}

func (c Config) listenHost() string {
	host, _, _ := net.SplitHostPort(c.EffectiveListeners()[0].Address)
	return host
}

var hostName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

func validHost(h string) bool {
	return h == "" || net.ParseIP(h) != nil || hostName.MatchString(h)
}
