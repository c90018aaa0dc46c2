// Package config is the transfer service's configuration: the SIP socket
// it sends from, the consumer group, timeouts, Kafka and logging.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/connguard"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/pkg/opshttp"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/services/transfer/internal/health"
	"github.com/baton-voice/baton/services/transfer/internal/request"
	"github.com/baton-voice/baton/services/transfer/internal/whisper"
)

// Config is the transfer service's configuration file.
type Config struct {
	// Listen is the host:port of transfer's SIP: UDP requests leave from
	// it and their responses come back to it, and TCP listens on the same
	// port (legs and dialogs over TCP). Port 0 lets the OS choose (tests).
	Listen string `yaml:"listen"`
	// ExternalHost goes into the Via sent-by (with the listen port), so the
	// far end answers there; empty means the listen host.
	ExternalHost string `yaml:"external_host"`
	// SIP bounds what peers can make the TCP and TLS listeners hold.
	SIP SIP `yaml:"sip"`
	// Routes is transfer's own allowlist of the routes it dials (REFER's
	// Refer-To, a new leg's INVITE), checked whatever the router decided:
	// whoever can write to the handoffs topic can otherwise make transfer
	// call any number.
	Routes Routes `yaml:"routes"`
	// Peers are networks of SBCs on non-public addresses that in-dialog
	// requests may go to when a command's dialog carries no next hop
	// decided by ingress (events from before Dialog.next_hop).
	Peers Peers `yaml:"peers"`
	// Trunks are the SBCs and carriers transfer sends to: digest
	// credentials, and how long a REFER refusal is remembered.
	Trunks []Trunk `yaml:"trunks"`
	// Destinations are transfer's own settings of the router's
	// destinations, by name: the REFER fallback and a new leg's
	// credentials.
	Destinations map[string]Destination `yaml:"destinations"`
	// Group is the consumer group every transfer instance joins.
	Group string `yaml:"group"`
	// NotifyTimeout bounds the wait for the final NOTIFY after a REFER was
	// accepted, when the command carries no answer_timeout.
	NotifyTimeout time.Duration `yaml:"notify_timeout"`
	// ByeAfterRefer is how long transfer waits, after a successful REFER
	// (final 2xx NOTIFY), for the far end to end the agent leg before it
	// sends BYE itself; 0 never sends it.
	ByeAfterRefer time.Duration `yaml:"bye_after_refer"`
	// MaxInFlight bounds the transfers executing at once; a command beyond
	// it fails at once instead of queueing behind the others.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxCommandAge skips commands whose event time is older than this
	// (a replayed or long-delayed command must not send SIP into a dialog
	// that is surely gone); 0 disables the check.
	MaxCommandAge time.Duration `yaml:"max_command_age"`
	// ShutdownTimeout bounds how long in-flight transfers may run on after
	// a shutdown signal.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Media is where warm transfers' bridges bind and what SDP names.
	Media Media `yaml:"media"`
	// Invite configures warm transfers (new legs).
	Invite Invite `yaml:"invite"`
	// TLS is the TLS transport of new legs (encryption tls_srtp, sips:).
	TLS TLS `yaml:"tls"`
	// AttemptLog is where attempts are recorded before SIP is sent.
	AttemptLog AttemptLog              `yaml:"attempt_log"`
	Kafka      kafka.Config            `yaml:"kafka"`
	Log        observability.LogConfig `yaml:"log"`
	// Metrics serves /metrics, /healthz and /readyz.
	Metrics opshttp.Config `yaml:"metrics"`
	// Tracing is the OpenTelemetry tracer's setup.
	Tracing tracing.Config `yaml:"tracing"`
	// HealthChecks sends OPTIONS to destinations on a schedule and
	// exposes their health as metrics; off by default.
	HealthChecks health.Config `yaml:"health_checks"`
}

// Routes is the route allowlist of transfer.
type Routes struct {
	// Allow lists route patterns in the router's allowlist.routes syntax
	// (a glob such as "sip:*@pbx.example.com", or "re:" and a regular
	// expression matching the whole route); they must cover the router's
	// destinations too. A route with a second '@' or a maddr parameter is
	// refused whatever they say.
	Allow []string `yaml:"allow"`
	// AllowAny turns the check off. With a listener off loopback, an empty
	// Allow is a config error unless AllowAny is set (fail closed).
	AllowAny bool `yaml:"allow_any"`
}

// Peers widens where in-dialog requests may go.
type Peers struct {
	// Networks are CIDRs (a bare IP is one address).
	Networks []string `yaml:"networks"`
}

// PeerNetworks parses Peers.Networks (validated at load).
func (c *Config) PeerNetworks() []netip.Prefix {
	var out []netip.Prefix
	for _, n := range c.Peers.Networks {
		if p, err := parsePrefix(n); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func (c *Config) validateRoutes(listenHost string) []error {
	var errs []error
	for i, p := range c.Routes.Allow {
		if _, err := sipx.NewRoutePattern(p); err != nil {
			errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("routes.allow[%d]", i), "%q: %v", p, err))
		}
	}
	ip := net.ParseIP(listenHost)
	if len(c.Routes.Allow) == 0 && !c.Routes.AllowAny && (ip == nil || !ip.IsLoopback()) {
		errs = append(errs, pkgconfig.Errorf("routes.allow",
			"empty with listen %q off loopback: list the routes transfer may dial (they must cover the router's destinations), or set routes.allow_any: true",
			c.Listen))
	}
	for i, n := range c.Peers.Networks {
		if _, err := parsePrefix(n); err != nil {
			errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("peers.networks[%d]", i), "%q: want a CIDR or an IP address", n))
		}
	}
	return errs
}

// DefaultMetricsListen is where /metrics, /healthz and /readyz are served.
const DefaultMetricsListen = "127.0.0.1:9463"

// SIP bounds the SIP TCP listener (on the listen port) and the TLS one
// (tls.listen). Anyone may connect (transfer has no trunk list: any SBC or
// destination may have to send a BYE in one of its legs), so these are
// the bound on what strangers can hold.
type SIP = connguard.Config

// Media configures the RTP/SRTP bridge of warm transfers.
type Media struct {
	// Host is the local IP bridge sockets bind to.
	Host string `yaml:"host"`
	// ExternalHost is the IP written into SDP (c=); empty means Host.
	// Required when Host is a wildcard.
	ExternalHost string `yaml:"external_host"`
	// PortMin and PortMax bound the media ports (RTP on even ports); 0
	// and 0 let the OS choose.
	PortMin int `yaml:"port_min"`
	PortMax int `yaml:"port_max"`
	// IdleTimeout tears a bridge down when a leg sent nothing for it.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// RTCPInterval is how often each leg gets a generated RTCP report
	// (RFC 3550 SR/RR with SDES, RTCP on the RTP port + 1); 0 turns RTCP
	// off.
	RTCPInterval time.Duration `yaml:"rtcp_interval"`
}

// Invite configures the new leg of a warm transfer.
type Invite struct {
	// AnswerTimeout bounds ringing (then CANCEL) when the command has no
	// answer_timeout.
	AnswerTimeout time.Duration `yaml:"answer_timeout"`
	// CallerID is what the new leg's From shows.
	CallerID CallerID `yaml:"caller_id"`
	// SRTPSuites are the SDES suites offered on SRTP legs, in order.
	SRTPSuites []string `yaml:"srtp_suites"`
	// AllowSDESOverUDP accepts commands with encryption udp_srtp, whose
	// SDES keys travel in clear UDP signalling.
	AllowSDESOverUDP bool `yaml:"allow_sdes_over_udp"`
	// TrunkHost (host or host:port) is where tel: routes
	// (sip:<number>@TrunkHost;user=phone) and extensions
	// (sip:<ext>@TrunkHost) are dialled; empty refuses them.
	TrunkHost string `yaml:"trunk_host"`
	// Whisper configures the audio played to a destination before the
	// bridge.
	Whisper Whisper `yaml:"whisper"`
}

// Whisper configures whispers: a command's whisper is a local file or an
// http(s) URL.
type Whisper struct {
	// MaxDuration refuses longer whisper files and URLs (the caller waits
	// through them).
	MaxDuration time.Duration `yaml:"max_duration"`
	// AllowHosts are the hosts whisper URLs may name: exact hosts (a name
	// or an IP address, any port) or "*." and a domain (any host below
	// it). Empty refuses every URL.
	AllowHosts []string `yaml:"allow_hosts"`
	// Timeout bounds one fetch, from the request to the last byte; the
	// handoff waits for it before any SIP.
	Timeout time.Duration `yaml:"timeout"`
	// MaxBytes refuses a longer body without reading beyond it.
	MaxBytes int64 `yaml:"max_bytes"`
	// CacheEntries, CacheBytes (of decoded samples) and CacheTTL bound
	// the cache of fetched whispers; cache_entries 0 turns it off.
	CacheEntries int           `yaml:"cache_entries"`
	CacheBytes   int64         `yaml:"cache_bytes"`
	CacheTTL     time.Duration `yaml:"cache_ttl"`
}

// TLS configures SIP over TLS for new legs. An empty Listen disables it:
// tls_srtp commands then fail before any SIP is sent.
type TLS struct {
	// Listen is the TLS listener (host:port): the Via and Contact of legs
	// over TLS name it, and peers send in-dialog requests (BYE) to it.
	Listen string `yaml:"listen"`
	// CertFile and KeyFile (PEM) are the listener's certificate, also
	// offered to peers that ask for a client certificate.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CAFile (PEM) verifies the peers dialled; empty means the system roots.
	CAFile string `yaml:"ca_file"`
	// InsecureSkipVerify accepts any peer certificate: tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// CallerID is the caller-id policy of new legs.
type CallerID struct {
	// Policy: caller (the caller's number), callee (the dialled number) or
	// fixed (Number).
	Policy      string `yaml:"policy"`
	Number      string `yaml:"number"`
	DisplayName string `yaml:"display_name"`
}

// AttemptLog configures the attempt log (docs/decisions/0007).
type AttemptLog struct {
	// Topic is the compacted topic, keyed by command id.
	Topic string `yaml:"topic"`
	// Retention is how long an attempt is remembered (topic retention.ms
	// when the topic is created, and the in-memory index). It should be
	// well above max_command_age.
	Retention time.Duration `yaml:"retention"`
	// Instance names this process in its attempt records; empty means
	// the host name and the process id.
	Instance string `yaml:"instance"`
	// BridgeLease is how long a bridge is held on the log without a
	// heartbeat (renewed every third of it) before another instance ends
	// the call as lost (docs/decisions/0020); 0 turns it off: a bridge
	// whose instance dies is then lost silently.
	BridgeLease time.Duration `yaml:"bridge_lease"`
}

// Default returns the configuration used when no file is given.
func Default() Config {
	return Config{
		Listen:          "127.0.0.1:5070",
		SIP:             connguard.DefaultConfig(),
		Group:           "baton-transfer",
		NotifyTimeout:   32 * time.Second,
		ByeAfterRefer:   4 * time.Second,
		MaxInFlight:     1024,
		MaxCommandAge:   5 * time.Minute,
		ShutdownTimeout: 10 * time.Second,
		AttemptLog:      AttemptLog{Topic: "baton.transfer-attempts", Retention: 24 * time.Hour, BridgeLease: 15 * time.Second},
		Media:           Media{Host: "127.0.0.1", IdleTimeout: 30 * time.Second, RTCPInterval: 5 * time.Second},
		Invite: Invite{
			AnswerTimeout: 30 * time.Second,
			CallerID:      CallerID{Policy: "caller"},
			SRTPSuites:    []string{"AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"},
			Whisper: Whisper{MaxDuration: 30 * time.Second, Timeout: 3 * time.Second, MaxBytes: 2 << 20,
				CacheEntries: 256, CacheBytes: 64 << 20, CacheTTL: 10 * time.Minute},
		},
		Kafka:        kafka.DefaultConfig(),
		Log:          observability.DefaultLogConfig(),
		Metrics:      opshttp.Config{Listen: DefaultMetricsListen},
		Tracing:      tracing.DefaultConfig(),
		HealthChecks: health.DefaultConfig(),
	}
}

// Load reads the file at path over the defaults and validates the result;
// with an empty path the defaults alone are validated.
func Load(path string) (Config, error) {
	c := Default()
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

var hostName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

// Validate returns every problem, each naming its field.
func (c *Config) Validate() error {
	errs := []error{c.Metrics.Validate(), c.Tracing.Validate()}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		errs = append(errs, pkgconfig.Errorf("listen", "%q is not host:port: %v", c.Listen, err))
	} else {
		if p, perr := strconv.Atoi(port); perr != nil || p < 0 || p > 65535 {
			errs = append(errs, pkgconfig.Errorf("listen", "port %q, want 0-65535", port))
		}
		ip := net.ParseIP(host)
		if host != "" && ip == nil {
			errs = append(errs, pkgconfig.Errorf("listen", "host %q, want an IP address", host))
		}
		if (host == "" || ip != nil && ip.IsUnspecified()) && c.ExternalHost == "" {
			errs = append(errs, pkgconfig.Errorf("external_host",
				"required when listen host %q is a wildcard: the Via must name a reachable address", host))
		}
	}
	if c.ExternalHost != "" && net.ParseIP(c.ExternalHost) == nil && !hostName.MatchString(c.ExternalHost) {
		errs = append(errs, pkgconfig.Errorf("external_host", "%q, want an IP address or a host name", c.ExternalHost))
	}
	errs = append(errs, c.SIP.Validate("sip"))
	listenHost, _, _ := net.SplitHostPort(c.Listen)
	errs = append(errs, c.validateRoutes(listenHost)...)
	if strings.TrimSpace(c.Group) == "" {
		errs = append(errs, pkgconfig.Errorf("group", "a consumer group id is required"))
	}
	if c.NotifyTimeout <= 0 {
		errs = append(errs, pkgconfig.Errorf("notify_timeout", "%v, want a positive duration", c.NotifyTimeout))
	}
	if c.ByeAfterRefer < 0 {
		errs = append(errs, pkgconfig.Errorf("bye_after_refer", "%v, want 0 (never) or a positive duration", c.ByeAfterRefer))
	}
	if c.MaxInFlight < 1 {
		errs = append(errs, pkgconfig.Errorf("max_in_flight", "%d, want at least 1", c.MaxInFlight))
	}
	if c.MaxCommandAge < 0 {
		errs = append(errs, pkgconfig.Errorf("max_command_age", "%v, want 0 (off) or a positive duration", c.MaxCommandAge))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, pkgconfig.Errorf("shutdown_timeout", "%v, want a positive duration", c.ShutdownTimeout))
	}
	errs = append(errs, c.validateMedia()...)
	errs = append(errs, c.validateTrunks()...)
	errs = append(errs, c.validateTLS()...)
	if strings.TrimSpace(c.AttemptLog.Topic) == "" {
		errs = append(errs, pkgconfig.Errorf("attempt_log.topic", "a topic name is required"))
	}
	for _, t := range c.Kafka.Topics.All() {
		if t == c.AttemptLog.Topic {
			errs = append(errs, pkgconfig.Errorf("attempt_log.topic", "%q is also a kafka.topics entry; it needs its own topic", t))
		}
	}
	if l := c.AttemptLog.BridgeLease; l != 0 && (l < time.Second || l >= c.AttemptLog.Retention) {
		errs = append(errs, pkgconfig.Errorf("attempt_log.bridge_lease", "%v, want 0 (off) or 1s up to below attempt_log.retention", l))
	}
	if c.AttemptLog.Retention <= 0 {
		errs = append(errs, pkgconfig.Errorf("attempt_log.retention", "%v, want a positive duration", c.AttemptLog.Retention))
	} else if c.MaxCommandAge > 0 && c.AttemptLog.Retention <= c.MaxCommandAge {
		errs = append(errs, pkgconfig.Errorf("attempt_log.retention",
			"%v, want more than max_command_age %v: a redelivered command older than the retention would run again",
			c.AttemptLog.Retention, c.MaxCommandAge))
	}
	errs = append(errs, c.HealthChecks.Validate("health_checks", c.HealthRoute, c.routeAllowed)...)
	if err := c.Kafka.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Config) validateMedia() []error {
	var errs []error
	m := c.Media
	host, err := netip.ParseAddr(m.Host)
	if err != nil {
		errs = append(errs, pkgconfig.Errorf("media.host", "%q, want an IP address", m.Host))
	}
	if m.ExternalHost != "" {
		if _, err := netip.ParseAddr(m.ExternalHost); err != nil {
			errs = append(errs, pkgconfig.Errorf("media.external_host", "%q, want an IP address", m.ExternalHost))
		}
	} else if err == nil && host.IsUnspecified() {
		errs = append(errs, pkgconfig.Errorf("media.external_host", "required when media.host %q is a wildcard", m.Host))
	}
	switch {
	case m.PortMin == 0 && m.PortMax == 0:
	case m.PortMin < 1024 || m.PortMax > 65535 || m.PortMin > m.PortMax:
		errs = append(errs, pkgconfig.Errorf("media.port_min", "range %d-%d, want 1024 <= port_min <= port_max <= 65535 (or both 0)",
			m.PortMin, m.PortMax))
	}
	if m.RTCPInterval < 0 || m.RTCPInterval > 0 && m.RTCPInterval < 100*time.Millisecond {
		errs = append(errs, pkgconfig.Errorf("media.rtcp_interval", "%v, want 0 (off) or at least 100ms", m.RTCPInterval))
	}
	if m.IdleTimeout <= 0 {
		errs = append(errs, pkgconfig.Errorf("media.idle_timeout", "%v, want a positive duration", m.IdleTimeout))
	}
	if c.Invite.AnswerTimeout <= 0 {
		errs = append(errs, pkgconfig.Errorf("invite.answer_timeout", "%v, want a positive duration", c.Invite.AnswerTimeout))
	}
	switch c.Invite.CallerID.Policy {
	case "caller", "callee":
	case "fixed":
		if !callerNumber.MatchString(c.Invite.CallerID.Number) {
			errs = append(errs, pkgconfig.Errorf("invite.caller_id.number", "%q, want digits with an optional leading +",
				c.Invite.CallerID.Number))
		}
	default:
		errs = append(errs, pkgconfig.Errorf("invite.caller_id.policy", "%q, want caller, callee or fixed", c.Invite.CallerID.Policy))
	}
	if strings.ContainsAny(c.Invite.CallerID.DisplayName, "\"\r\n\x00") {
		errs = append(errs, pkgconfig.Errorf("invite.caller_id.display_name", "must not contain quotes or control characters"))
	}
	if len(c.Invite.SRTPSuites) == 0 {
		errs = append(errs, pkgconfig.Errorf("invite.srtp_suites", "at least one suite is required"))
	}
	for i, s := range c.Invite.SRTPSuites {
		if s != "AES_CM_128_HMAC_SHA1_80" && s != "AEAD_AES_128_GCM" {
			errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("invite.srtp_suites[%d]", i),
				"%q, want AES_CM_128_HMAC_SHA1_80 or AEAD_AES_128_GCM", s))
		}
	}
	return errs
}

func (c *Config) validateTLS() []error {
	var errs []error
	if t := c.Invite.TrunkHost; t != "" {
		host, port, err := net.SplitHostPort(t)
		if err != nil {
			host, port = t, ""
		}
		if net.ParseIP(host) == nil && !hostName.MatchString(host) {
			errs = append(errs, pkgconfig.Errorf("invite.trunk_host", "%q, want host or host:port", t))
		}
		if p, err := strconv.Atoi(port); port != "" && (err != nil || p < 1 || p > 65535) {
			errs = append(errs, pkgconfig.Errorf("invite.trunk_host", "port %q, want 1-65535", port))
		}
	}
	errs = append(errs, c.validateWhisper()...)
	t := c.TLS
	if t.Listen == "" {
		if t.CertFile != "" || t.KeyFile != "" || t.CAFile != "" {
			errs = append(errs, pkgconfig.Errorf("tls.listen", "required when tls.cert_file, key_file or ca_file is set"))
		}
		return errs
	}
	if _, port, err := net.SplitHostPort(t.Listen); err != nil {
		errs = append(errs, pkgconfig.Errorf("tls.listen", "%q is not host:port: %v", t.Listen, err))
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		errs = append(errs, pkgconfig.Errorf("tls.listen", "port %q, want 0-65535", port))
	}
	if t.CertFile == "" || t.KeyFile == "" {
		errs = append(errs, pkgconfig.Errorf("tls.cert_file", "tls.cert_file and tls.key_file are required with tls.listen"))
		return errs
	}
	if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
		errs = append(errs, pkgconfig.Errorf("tls.cert_file", "%v", err))
	}
	if t.CAFile != "" {
		if _, err := caPool(t.CAFile); err != nil {
			errs = append(errs, pkgconfig.Errorf("tls.ca_file", "%v", err))
		}
	}
	return errs
}

func (c *Config) validateWhisper() []error {
	var errs []error
	w := c.Invite.Whisper
	if w.MaxDuration <= 0 {
		errs = append(errs, pkgconfig.Errorf("invite.whisper.max_duration", "%v, want a positive duration", w.MaxDuration))
	}
	for i, h := range w.AllowHosts {
		if err := whisper.CheckHostPattern(h); err != nil {
			errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("invite.whisper.allow_hosts[%d]", i), "%q: %v", h, err))
		}
	}
	if w.Timeout <= 0 {
		errs = append(errs, pkgconfig.Errorf("invite.whisper.timeout", "%v, want a positive duration", w.Timeout))
	}
	if w.MaxBytes < minWhisperBytes {
		errs = append(errs, pkgconfig.Errorf("invite.whisper.max_bytes", "%d, want at least %d (a WAV header and one frame)", w.MaxBytes, minWhisperBytes))
	}
	if w.CacheEntries < 0 {
		errs = append(errs, pkgconfig.Errorf("invite.whisper.cache_entries", "%d, want 0 (no cache) or more", w.CacheEntries))
	}
	if w.CacheEntries > 0 && w.CacheBytes < w.MaxBytes {
		errs = append(errs, pkgconfig.Errorf("invite.whisper.cache_bytes", "%d, want at least invite.whisper.max_bytes %d", w.CacheBytes, w.MaxBytes))
	}
	if w.CacheEntries > 0 && w.CacheTTL <= 0 {
		errs = append(errs, pkgconfig.Errorf("invite.whisper.cache_ttl", "%v, want a positive duration", w.CacheTTL))
	}
	return errs
}

// minWhisperBytes is a WAV header and one 20 ms frame.
const minWhisperBytes = 44 + 2*160

func caPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return pool, nil
}

// TLSConfigs returns the listener's and the dialler's TLS configurations;
// nil, nil when TLS is off (tls.listen empty).
func (c *Config) TLSConfigs() (server, client *tls.Config, err error) {
	t := c.TLS
	if t.Listen == "" {
		return nil, nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("tls certificate: %w", err)
	}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // tests only, documented
	if t.CAFile != "" {
		pool, err := caPool(t.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("tls ca: %w", err)
		}
		client.RootCAs = pool
	}
	return server, client, nil
}

// HealthRoute is the SIP URI a health check of route dials: the route
// as a command's would be dialled (request.Target: tel: routes and
// extensions through invite.trunk_host).
func (c *Config) HealthRoute(route string) (string, error) {
	u, err := request.Target(route, request.LegOptions{TrunkHost: c.Invite.TrunkHost})
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

// routeAllowed checks a route against routes.allow, as a command's is
// (an empty list allows every route, as at run time).
func (c *Config) routeAllowed(route string) error {
	if len(c.Routes.Allow) == 0 {
		return nil
	}
	a, err := request.NewAllowlist(c.Routes.Allow)
	if err != nil {
		return nil // reported under routes.allow
	}
	return a.Check(route)
}

var callerNumber = regexp.MustCompile(`^\+?[0-9]{1,20}$`)

// MediaAddr is the address written into SDP.
func (c *Config) MediaAddr() netip.Addr {
	if a, err := netip.ParseAddr(c.Media.ExternalHost); err == nil {
		return a
	}
	a, _ := netip.ParseAddr(c.Media.Host)
	return a
}

// InstanceName is AttemptLog.Instance or, when empty, host name and pid.
func (c *Config) InstanceName() string {
	if c.AttemptLog.Instance != "" {
		return c.AttemptLog.Instance
	}
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return host + "/" + strconv.Itoa(os.Getpid())
}

// ViaHost is the host written into the Via sent-by.
func (c *Config) ViaHost() string {
	if c.ExternalHost != "" {
		return c.ExternalHost
	}
	host, _, _ := net.SplitHostPort(c.Listen)
	return host
}
