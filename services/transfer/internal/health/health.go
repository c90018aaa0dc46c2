// Package health runs transfer's scheduled destination health checks: an
// OPTIONS (pkg/sipprobe, the check `baton probe` makes) to every
// destination of health_checks.destinations every interval, and each
// destination's health as Prometheus metrics. It is off by default
// (interval 0). With a Publisher (transfer's KafkaPublisher) each change
// of a destination's state is also a DestinationHealth in every partition
// of the calls topic, which the router folds to pass over a
// destination with skip_when_down while it is down
// (docs/decisions/0016-destination-health.md).
package health

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/sipprobe"
)

// Bounds of health_checks.
const (
	MinInterval      = time.Second
	MaxInterval      = time.Hour
	DefaultTimeout   = 5 * time.Second
	DefaultWarnDays  = 14
	MaxDestinations  = 256
	maxParallelCheck = 8
)

// Config is health_checks in transfer's configuration.
type Config struct {
	// Interval between two rounds of checks; 0 (the default) turns the
	// checks off.
	Interval time.Duration `yaml:"interval"`
	// Timeout bounds one check; at most Interval.
	Timeout time.Duration `yaml:"timeout"`
	// WarnDays: a TLS certificate expiring within this many days counts
	// in baton_transfer_destination_cert_expiring.
	WarnDays int `yaml:"warn_days"`
	// Destinations are what is checked.
	Destinations []Destination `yaml:"destinations"`
	// Publish writes each change of a destination's state as a
	// DestinationHealth to every partition of the calls topic, for
	// the router's skip_when_down. Off by default.
	Publish bool `yaml:"publish"`
}

// Destination is one destination to check.
type Destination struct {
	// Name labels its metrics (the router's destination name).
	Name string `yaml:"name"`
	// Route is dialled as transfer dials a command's route: a sip: or
	// sips: URI, or a tel: URI or extension through invite.trunk_host. It
	// must pass routes.allow, like any route transfer dials.
	Route string `yaml:"route"`
	// Transport is udp, tcp or tls; empty follows the route (sips: or
	// ;transport=, else udp).
	Transport string `yaml:"transport"`
}

// DefaultConfig is off.
func DefaultConfig() Config {
	return Config{Timeout: DefaultTimeout, WarnDays: DefaultWarnDays}
}

// Validate checks the config; resolve turns a route into the SIP URI
// transfer dials (request.Target) and allowed checks it against
// routes.allow. Errors name their field under path.
func (c Config) Validate(path string, resolve func(route string) (string, error), allowed func(route string) error) []error {
	if c.Interval == 0 {
		return nil
	}
	var errs []error
	if c.Interval < MinInterval || c.Interval > MaxInterval {
		errs = append(errs, pkgconfig.Errorf(path+".interval", "%v, want 0 (off) or %v to %v", c.Interval, MinInterval, MaxInterval))
	}
	if c.Timeout <= 0 || c.Timeout > c.Interval {
		errs = append(errs, pkgconfig.Errorf(path+".timeout", "%v, want a positive duration up to interval %v", c.Timeout, c.Interval))
	}
	if c.WarnDays < 0 || c.WarnDays > 3650 {
		errs = append(errs, pkgconfig.Errorf(path+".warn_days", "%d, want 0 to 3650", c.WarnDays))
	}
	if len(c.Destinations) == 0 {
		errs = append(errs, pkgconfig.Errorf(path+".destinations", "empty with checks on (interval %v): list what to check", c.Interval))
	}
	if len(c.Destinations) > MaxDestinations {
		errs = append(errs, pkgconfig.Errorf(path+".destinations", "%d, at most %d", len(c.Destinations), MaxDestinations))
	}
	seen := map[string]int{}
	for i, d := range c.Destinations {
		p := fmt.Sprintf("%s.destinations[%d]", path, i)
		if d.Name == "" {
			errs = append(errs, pkgconfig.Errorf(p+".name", "a name is required"))
		} else if j, dup := seen[d.Name]; dup {
			errs = append(errs, pkgconfig.Errorf(p+".name", "duplicate %q (also destinations[%d])", d.Name, j))
		} else {
			seen[d.Name] = i
		}
		uri, err := resolve(d.Route)
		if err != nil {
			errs = append(errs, pkgconfig.Errorf(p+".route", "%v", err))
			continue
		}
		if err := allowed(d.Route); err != nil {
			errs = append(errs, pkgconfig.Errorf(p+".route", "%v", err))
		}
		if _, _, _, err := sipprobe.Resolve(sipprobe.Target{Name: d.Name, URI: uri, Transport: d.Transport}); err != nil {
			errs = append(errs, pkgconfig.Errorf(p+".transport", "%v", err))
		}
	}
	return errs
}

// Metrics are each destination's health, by destination name (bounded by
// the config).
type Metrics struct {
	// Up is 1 when the last check got a final answer below 500, else 0.
	Up *prometheus.GaugeVec
	// RTT is the last successful check's round-trip time.
	RTT *prometheus.GaugeVec
	// CertExpiry is the TLS certificate's NotAfter (unix seconds), for
	// TLS destinations whose handshake completed.
	CertExpiry *prometheus.GaugeVec
	// CertExpiring is 1 when that certificate expires within warn_days,
	// is expired or does not verify.
	CertExpiring *prometheus.GaugeVec
	// Checks counts checks by destination and result (up, down).
	Checks *prometheus.CounterVec
}

// NewMetrics registers the health metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_transfer_destination_up",
			Help: "1 when the destination's last OPTIONS check got a final answer below 500, else 0 (health_checks).",
		}, []string{"destination"}),
		RTT: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_transfer_destination_rtt_seconds",
			Help: "Round-trip time of the destination's last answered OPTIONS check.",
		}, []string{"destination"}),
		CertExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_transfer_destination_cert_expiry_timestamp_seconds",
			Help: "NotAfter of the TLS certificate the destination presented at its last check (unix seconds).",
		}, []string{"destination"}),
		CertExpiring: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_transfer_destination_cert_warning",
			Help: "1 when the destination's TLS certificate expires within health_checks.warn_days, is expired or does not verify.",
		}, []string{"destination"}),
		Checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_transfer_destination_checks_total",
			Help: "OPTIONS health checks made, by destination and result (up, down).",
		}, []string{"destination", "result"}),
	}
	reg.MustRegister(m.Up, m.RTT, m.CertExpiry, m.CertExpiring, m.Checks)
	return m
}

// Checker checks the destinations every interval.
type Checker struct {
	cfg     Config
	targets []sipprobe.Target
	prober  *sipprobe.Prober
	metrics *Metrics
	logger  *slog.Logger
	// pub, when set, hears of each change of state (SetPublisher).
	pub Publisher

	mu   sync.Mutex
	last map[string]sipprobe.Result
	// published is the state last published per destination: a change
	// whose publication failed is published again at the next check.
	published map[string]bool
}

// New builds a Checker; resolve turns a route into the SIP URI transfer
// dials. tlsCfg verifies TLS destinations (transfer's dialler config; nil:
// the system roots). Close it when done.
func New(cfg Config, resolve func(route string) (string, error), tlsCfg *tls.Config, metrics *Metrics, logger *slog.Logger) (*Checker, error) {
	c := &Checker{cfg: cfg, metrics: metrics, logger: logger, last: map[string]sipprobe.Result{}, published: map[string]bool{}}
	for _, d := range cfg.Destinations {
		uri, err := resolve(d.Route)
		if err != nil {
			return nil, fmt.Errorf("health check %s: %w", d.Name, err)
		}
		c.targets = append(c.targets, sipprobe.Target{Name: d.Name, Kind: "destination", URI: uri, Transport: d.Transport})
	}
	p, err := sipprobe.New(sipprobe.Options{Timeout: cfg.Timeout, TLS: tlsCfg,
		ExpiryWarning: time.Duration(cfg.WarnDays) * 24 * time.Hour, UserAgent: "baton-transfer-health",
		Logger: logger.With("component", "health")})
	if err != nil {
		return nil, err
	}
	c.prober = p
	return c, nil
}

// SetPublisher makes pub hear of every change of a destination's state
// (and of its first check); call it before Run.
func (c *Checker) SetPublisher(pub Publisher) { c.pub = pub }

// Close releases the prober's SIP user agent.
func (c *Checker) Close() error { return c.prober.Close() }

// Run checks every destination at once, then every interval, until ctx
// ends.
func (c *Checker) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		c.Round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Round checks every destination once, at most maxParallelCheck at a
// time, and updates the metrics.
func (c *Checker) Round(ctx context.Context) {
	sem := make(chan struct{}, maxParallelCheck)
	var wg sync.WaitGroup
	for _, t := range c.targets {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			c.record(ctx, c.prober.Probe(ctx, t))
		})
	}
	wg.Wait()
}

// publish tells the publisher of r when its state is not the one last
// published (checks of one destination never overlap: Round waits).
func (c *Checker) publish(ctx context.Context, r sipprobe.Result) {
	if c.pub == nil {
		return
	}
	c.mu.Lock()
	up, done := c.published[r.Name]
	c.mu.Unlock()
	if done && up == r.Up {
		return
	}
	if err := c.pub.Changed(ctx, r); err != nil {
		c.logger.WarnContext(ctx, "publish destination health; again at the next check", "destination", r.Name, "up", r.Up, "err", err)
		return
	}
	c.mu.Lock()
	c.published[r.Name] = r.Up
	c.mu.Unlock()
}

// Last returns the last result of the destination named name.
func (c *Checker) Last(name string) (sipprobe.Result, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.last[name]
	return r, ok
}

func (c *Checker) record(ctx context.Context, r sipprobe.Result) {
	if ctx.Err() != nil && !r.Up {
		return // shutting down: the check was cut short, not the destination
	}
	c.mu.Lock()
	prev, seen := c.last[r.Name]
	c.last[r.Name] = r
	c.mu.Unlock()
	name := r.Name
	result := "down"
	if r.Up {
		result = "up"
		c.metrics.Up.WithLabelValues(name).Set(1)
		c.metrics.RTT.WithLabelValues(name).Set(r.RTT.Seconds())
	} else {
		c.metrics.Up.WithLabelValues(name).Set(0)
	}
	c.metrics.Checks.WithLabelValues(name, result).Inc()
	if r.Cert != nil {
		c.metrics.CertExpiry.WithLabelValues(name).Set(float64(r.Cert.NotAfter.Unix()))
		warn := 0.0
		if len(r.Warnings) > 0 {
			warn = 1
		}
		c.metrics.CertExpiring.WithLabelValues(name).Set(warn)
	}
	c.publish(ctx, r)
	if !seen || prev.Up != r.Up {
		// Log changes only: a destination down for hours is one line.
		if r.Up {
			c.logger.InfoContext(ctx, "destination up", "destination", name, "status", r.Status, "rtt", r.RTT.String())
		} else {
			c.logger.WarnContext(ctx, "destination down", "destination", name, "status", r.Status, "err", r.Error)
		}
	}
	if !seen || !slices.Equal(prev.Warnings, r.Warnings) {
		for _, w := range r.Warnings {
			c.logger.WarnContext(ctx, "destination warning", "destination", name, "warning", w)
		}
	}
}

// Enabled reports whether the checks are on.
func (c Config) Enabled() bool { return c.Interval > 0 }
