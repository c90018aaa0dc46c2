// Package sipprobe checks that a SIP destination answers before calls are
// sent there: an OPTIONS request (RFC 3261 11) over the destination's
// transport (UDP, TCP or TLS), its round-trip time, what the far end
// advertises (Allow, Supported: does it take REFER?), and for TLS the
// certificate it presents (valid for the host? when does it expire?).
// `baton probe` and transfer's scheduled health checks both use it, so a
// destination is judged by one rule.
package sipprobe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Transports a target is probed over.
const (
	UDP = "UDP"
	TCP = "TCP"
	TLS = "TLS"
)

// DefaultTimeout bounds one probe when Options.Timeout is 0.
const DefaultTimeout = 5 * time.Second

// DefaultExpiryWarning is how close a certificate's expiry may come before
// a probe warns, when Options.ExpiryWarning is 0.
const DefaultExpiryWarning = 14 * 24 * time.Hour

// ErrTarget is wrapped by every error about a target that cannot be
// probed as given (a route that is not a SIP URI, an unknown transport).
var ErrTarget = errors.New("probe target")

// Target is one thing to probe: a destination or a trunk.
type Target struct {
	// Name is the destination's or trunk's name in the configuration.
	Name string `json:"name"`
	// Kind is "destination" or "trunk" (free text; reported as is).
	Kind string `json:"kind"`
	// URI is the sip: or sips: URI requests go to.
	URI string `json:"uri"`
	// Transport is UDP, TCP or TLS; empty follows the URI (sips: or
	// ;transport=, else UDP).
	Transport string `json:"transport"`
}

// Cert is what a TLS target's certificate says.
type Cert struct {
	Subject  string    `json:"subject"`
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"not_after"`
	// Valid is true when the chain verifies against the roots for the
	// target's host, now.
	Valid bool `json:"valid"`
	// VerifyError says why it does not, when Valid is false.
	VerifyError string `json:"verify_error,omitempty"`
	// ExpiresInDays is the whole days left until NotAfter (negative once
	// expired).
	ExpiresInDays int `json:"expires_in_days"`
}

// Result is what one probe found.
type Result struct {
	Target
	// Addr is the host:port the request went to.
	Addr string `json:"addr"`
	// Up is true when the far end answered the OPTIONS with a final
	// status below 500: 2xx, and also 3xx/4xx (a SIP stack that answers is
	// reachable, even if it will not say more to OPTIONS). 5xx, 6xx, a
	// timeout or a transport error are down.
	Up bool `json:"up"`
	// Status and Reason are the final response's, 0 and "" without one.
	Status int    `json:"status"`
	Reason string `json:"reason,omitempty"`
	// RTT is the time from sending the request to its final response;
	// for TCP and TLS it includes the connection and handshake when the
	// probe opened one.
	RTT time.Duration `json:"rtt_ns"`
	// Allow and Supported are the methods and extensions the far end
	// advertised, in its order.
	Allow     []string `json:"allow,omitempty"`
	Supported []string `json:"supported,omitempty"`
	// AcceptsRefer is true when Allow lists REFER.
	AcceptsRefer bool `json:"accepts_refer"`
	// Cert is the TLS certificate, for TLS targets that completed a
	// handshake.
	Cert *Cert `json:"cert,omitempty"`
	// Error says why the target is down, when it is.
	Error string `json:"error,omitempty"`
	// Warnings are problems short of down (a certificate that expires
	// soon, REFER not advertised by a REFER destination is the caller's to
	// add).
	Warnings []string `json:"warnings,omitempty"`
}

// Options configures a Prober.
type Options struct {
	// Timeout bounds one probe (0: DefaultTimeout).
	Timeout time.Duration
	// TLS verifies TLS targets: RootCAs (nil: the system roots),
	// Certificates (a client certificate). ServerName is set per target.
	TLS *tls.Config
	// ExpiryWarning is how close expiry may come before a warning (0:
	// DefaultExpiryWarning).
	ExpiryWarning time.Duration
	// UserAgent is the User-Agent header (empty: "baton-probe").
	UserAgent string
	// Logger receives sipgo's logs (nil: discarded).
	Logger *slog.Logger
	// Now is the clock certificates are judged by (nil: time.Now).
	Now func() time.Time
}

// Prober sends OPTIONS. It is safe for concurrent use; Close it when done.
type Prober struct {
	opts   Options
	ua     *sipgo.UserAgent
	client *sipgo.Client
}

// New makes a Prober with its own SIP user agent (ephemeral sockets; it
// listens on nothing but the connections it opens).
func New(opts Options) (*Prober, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.ExpiryWarning <= 0 {
		opts.ExpiryWarning = DefaultExpiryWarning
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "baton-probe"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	uaOpts := []sipgo.UserAgentOption{
		sipgo.WithUserAgent(opts.UserAgent),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(opts.Logger)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(opts.Logger)),
	}
	if opts.TLS != nil {
		uaOpts = append(uaOpts, sipgo.WithUserAgenTLSConfig(opts.TLS.Clone()))
	}
	ua, err := sipgo.NewUA(uaOpts...)
	if err != nil {
		return nil, fmt.Errorf("new sip user agent: %w", err)
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientLogger(opts.Logger))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("new sip client: %w", err), ua.Close())
	}
	return &Prober{opts: opts, ua: ua, client: client}, nil
}

// Close releases the user agent and its connections.
func (p *Prober) Close() error {
	return errors.Join(p.client.Close(), p.ua.Close())
}

// Client is the prober's SIP client, for a test call (see Call).
func (p *Prober) Client() *sipgo.Client { return p.client }

// Resolve checks a target and returns its URI parsed, with the transport
// it is probed over and the host:port the request goes to.
func Resolve(t Target) (sip.Uri, string, string, error) {
	var uri sip.Uri
	if err := sip.ParseUri(t.URI, &uri); err != nil {
		return uri, "", "", fmt.Errorf("%w %s: %q is not a SIP URI: %w", ErrTarget, t.Name, t.URI, err)
	}
	if uri.Scheme != "sip" && uri.Scheme != "sips" {
		return uri, "", "", fmt.Errorf("%w %s: %q: want a sip: or sips: URI", ErrTarget, t.Name, t.URI)
	}
	transport := strings.ToUpper(t.Transport)
	if transport == "" {
		transport = UDP
		if uri.Scheme == "sips" {
			transport = TLS
		} else if v, ok := uri.UriParams.Get("transport"); ok {
			transport = strings.ToUpper(v)
		}
	}
	if transport != UDP && transport != TCP && transport != TLS {
		return uri, "", "", fmt.Errorf("%w %s: transport %q: want UDP, TCP or TLS", ErrTarget, t.Name, transport)
	}
	port := uri.Port
	if port == 0 {
		port = 5060
		if transport == TLS {
			port = 5061
		}
	}
	host := strings.TrimSuffix(strings.TrimPrefix(uri.Host, "["), "]") // an IPv6 reference
	return uri, transport, net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// Probe sends one OPTIONS to t and reports what came back. A target that
// cannot be probed as given is reported down with the reason; Probe never
// fails otherwise.
func (p *Prober) Probe(ctx context.Context, t Target) Result {
	res := Result{Target: t}
	uri, transport, addr, err := Resolve(t)
	res.Transport, res.Addr = transport, addr
	if err != nil {
		res.Error = err.Error()
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	if transport == TLS {
		res.Cert = p.certificate(ctx, strings.TrimSuffix(strings.TrimPrefix(uri.Host, "["), "]"), addr)
		if res.Cert != nil {
			res.Warnings = append(res.Warnings, p.certWarnings(res.Cert)...)
		}
	}
	req := sip.NewRequest(sip.OPTIONS, optionsURI(uri))
	req.SetTransport(transport)
	req.SetDestination(addr)
	req.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	start := time.Now()
	resp, err := p.client.Do(ctx, req)
	if err != nil {
		res.Error = describe(ctx, err)
		return res
	}
	res.RTT = time.Since(start)
	res.Status, res.Reason = resp.StatusCode, resp.Reason
	res.Allow = headerList(resp, "Allow")
	res.Supported = headerList(resp, "Supported")
	res.AcceptsRefer = slices.ContainsFunc(res.Allow, func(m string) bool { return strings.EqualFold(m, "REFER") })
	res.Up = resp.StatusCode < 500
	if !res.Up {
		res.Error = fmt.Sprintf("answered %d %s", resp.StatusCode, resp.Reason)
	}
	return res
}

// optionsURI is the Request-URI of the OPTIONS: the target's URI without
// its URI headers.
func optionsURI(u sip.Uri) sip.Uri {
	out := u
	out.Headers = nil
	return out
}

// describe words a transport or transaction error.
func describe(ctx context.Context, err error) string {
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		return "no answer (timeout)"
	}
	return err.Error()
}

// headerList splits the comma-separated values of every header named name.
func headerList(resp *sip.Response, name string) []string {
	var out []string
	for _, h := range resp.GetHeaders(name) {
		for v := range strings.SplitSeq(h.Value(), ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

// certificate opens its own TLS connection to read the certificate the
// target presents, and verifies it against the configured roots for host
// (the chain is read even when it does not verify, so an expired or
// mis-issued certificate is reported as such, not only as a handshake
// failure). nil when no handshake completed.
func (p *Prober) certificate(ctx context.Context, host, addr string) *Cert {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if p.opts.TLS != nil {
		cfg = p.opts.TLS.Clone()
	}
	// Verified below, by hand, so the chain is read whatever it holds.
	cfg.InsecureSkipVerify = true //nolint:gosec // the chain is verified below with x509.Verify and the result reported
	cfg.ServerName = host
	d := tls.Dialer{Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil
	}
	defer func() { _ = conn.Close() }()
	chain := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(chain) == 0 {
		return nil
	}
	leaf := chain[0]
	now := p.opts.Now()
	c := &Cert{
		Subject: leaf.Subject.String(), Issuer: leaf.Issuer.String(), NotAfter: leaf.NotAfter,
		ExpiresInDays: int(leaf.NotAfter.Sub(now).Hours() / 24),
	}
	if leaf.NotAfter.Before(now) {
		c.ExpiresInDays = -int(now.Sub(leaf.NotAfter).Hours()/24) - 1
	}
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	var roots *x509.CertPool
	if p.opts.TLS != nil {
		roots = p.opts.TLS.RootCAs
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host, CurrentTime: now}); err != nil {
		c.VerifyError = err.Error()
	} else {
		c.Valid = true
	}
	return c
}

// certWarnings are the warnings a certificate earns: invalid, expired,
// or expiring within ExpiryWarning.
func (p *Prober) certWarnings(c *Cert) []string {
	left := c.NotAfter.Sub(p.opts.Now())
	if left <= 0 {
		return []string{fmt.Sprintf("TLS certificate expired on %s", c.NotAfter.UTC().Format(time.RFC3339))}
	}
	var out []string
	if left < p.opts.ExpiryWarning {
		out = append(out, fmt.Sprintf("TLS certificate expires in %s (on %s), within %s", roundDuration(left),
			c.NotAfter.UTC().Format(time.RFC3339), roundDuration(p.opts.ExpiryWarning)))
	}
	if !c.Valid {
		out = append(out, "TLS certificate does not verify: "+c.VerifyError)
	}
	return out
}

// roundDuration prints d in days when it is a day or more, else to the
// second.
func roundDuration(d time.Duration) string {
	if d >= 24*time.Hour {
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	return d.Round(time.Second).String()
}
