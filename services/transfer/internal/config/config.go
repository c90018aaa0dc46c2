// Package config is the transfer service's configuration: the SIP socket
// it sends from, the consumer group, timeouts, Kafka and logging.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
)

// Config is the transfer service's configuration file.
type Config struct {
	// Listen is the UDP host:port transfer sends its requests from and
	// receives their responses on. Port 0 lets the OS choose (tests).
	Listen string `yaml:"listen"`
	// ExternalHost goes into the Via sent-by (with the listen port), so the
	// far end answers there; empty means the listen host.
	ExternalHost string `yaml:"external_host"`
	// Group is the consumer group every transfer instance joins.
	Group string `yaml:"group"`
	// NotifyTimeout bounds the wait for the final NOTIFY after a REFER was
	// accepted, when the command carries no answer_timeout.
	NotifyTimeout time.Duration `yaml:"notify_timeout"`
	// MaxInFlight bounds the transfers executing at once; a command beyond
	// it fails at once instead of queueing behind the others.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxCommandAge skips commands whose event time is older than this
	// (a replayed or long-delayed command must not send SIP into a dialog
	// that is surely gone); 0 disables the check.
	MaxCommandAge time.Duration `yaml:"max_command_age"`
	// ShutdownTimeout bounds how long in-flight transfers may run on after
	// a shutdown signal.
	ShutdownTimeout time.Duration           `yaml:"shutdown_timeout"`
	Kafka           kafka.Config            `yaml:"kafka"`
	Log             observability.LogConfig `yaml:"log"`
}

// Default returns the configuration used when no file is given.
func Default() Config {
	return Config{
		Listen:          "127.0.0.1:5070",
		Group:           "baton-transfer",
		NotifyTimeout:   32 * time.Second,
		MaxInFlight:     1024,
		MaxCommandAge:   5 * time.Minute,
		ShutdownTimeout: 10 * time.Second,
		Kafka:           kafka.DefaultConfig(),
		Log:             observability.DefaultLogConfig(),
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
	var errs []error
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
	if strings.TrimSpace(c.Group) == "" {
		errs = append(errs, pkgconfig.Errorf("group", "a consumer group id is required"))
	}
	if c.NotifyTimeout <= 0 {
		errs = append(errs, pkgconfig.Errorf("notify_timeout", "%v, want a positive duration", c.NotifyTimeout))
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
	if err := c.Kafka.Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := observability.NewLogger(io.Discard, c.Log, "check"); err != nil {
		errs = append(errs, pkgconfig.Errorf("log", "%v", err))
	}
	return errors.Join(errs...)
}

// ViaHost is the host written into the Via sent-by.
func (c *Config) ViaHost() string {
	if c.ExternalHost != "" {
		return c.ExternalHost
	}
	host, _, _ := net.SplitHostPort(c.Listen)
	return host
}
