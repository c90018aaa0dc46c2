// Package config is the configuration of the ingress service: where it
// listens for SIP, which address it gives out in Contact and SDP, the RTP
// port range of the media anchor, and how long a publish may take before
// an INVITE is refused.
package config

import (
	"errors"
	"io"
	"net"
	"regexp"
	"strconv"
	"time"

	"github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
)

// Config is the whole ingress configuration.
type Config struct {
	// Listen is the UDP host:port SIP arrives on; port 0 lets the OS choose.
	Listen string `yaml:"listen"`
	// ExternalHost is the host written into Contact and the SDP c= line;
	// empty means the listen host. Set it behind NAT.
	ExternalHost string `yaml:"external_host"`
	// Trunk names the trunk calls arrive on; it is copied into CallStarted.
	Trunk string `yaml:"trunk"`
	RTP   RTP    `yaml:"rtp"`
	// PublishTimeout bounds the publish of CallStarted; when Kafka does not
	// accept it in time the INVITE gets 503 and no call exists.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// ShutdownTimeout bounds the producer flush at shutdown.
	ShutdownTimeout time.Duration           `yaml:"shutdown_timeout"`
	Kafka           kafka.Config            `yaml:"kafka"`
	Log             observability.LogConfig `yaml:"log"`
}

// RTP is the media anchor's port range.
type RTP struct {
	// Host is the address RTP sockets bind to; empty means the listen host.
	Host string `yaml:"host"`
	// PortMin and PortMax bound the RTP ports (inclusive); even ports are used.
	PortMin int `yaml:"port_min"`
	PortMax int `yaml:"port_max"`
}

// Default returns the configuration used when no file is given.
func Default() Config {
	return Config{
		Listen:          "127.0.0.1:5060",
		Trunk:           "default",
		RTP:             RTP{PortMin: 20000, PortMax: 20999},
		PublishTimeout:  2 * time.Second,
		ShutdownTimeout: 5 * time.Second,
		Kafka:           kafka.DefaultConfig(),
		Log:             observability.DefaultLogConfig(),
	}
}

var trunkName = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// Validate returns every problem, each naming its field.
func (c Config) Validate() error {
	var errs []error
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		errs = append(errs, config.Errorf("listen", "%q is not host:port: %v", c.Listen, err))
	} else {
		if p, perr := strconv.Atoi(port); perr != nil || p < 0 || p > 65535 {
			errs = append(errs, config.Errorf("listen", "port %q, want 0-65535", port))
		}
		if host != "" && net.ParseIP(host) == nil {
			errs = append(errs, config.Errorf("listen", "host %q, want an IP address", host))
		}
		if ip := net.ParseIP(host); (host == "" || ip != nil && ip.IsUnspecified()) && c.ExternalHost == "" {
			errs = append(errs, config.Errorf("external_host", "required when listen host %q is a wildcard", host))
		}
	}
	if !validHost(c.ExternalHost) {
		errs = append(errs, config.Errorf("external_host", "%q, want an IP address or a host name", c.ExternalHost))
	}
	if !trunkName.MatchString(c.Trunk) {
		errs = append(errs, config.Errorf("trunk", "%q, want letters, digits, '.', '_' or '-'", c.Trunk))
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
	if c.PublishTimeout <= 0 {
		errs = append(errs, config.Errorf("publish_timeout", "%v, want a positive duration", c.PublishTimeout))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, config.Errorf("shutdown_timeout", "%v, want a positive duration", c.ShutdownTimeout))
	}
	if err := c.Kafka.Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := observability.NewLogger(io.Discard, c.Log, "check"); err != nil {
		errs = append(errs, config.Errorf("log", "%v", err))
	}
	return errors.Join(errs...)
}

// ContactHost is the host given out in Contact and SDP.
func (c Config) ContactHost() string {
	if c.ExternalHost != "" {
		return c.ExternalHost
	}
	host, _, _ := net.SplitHostPort(c.Listen)
	return host
}

// RTPHost is the address RTP sockets bind to.
func (c Config) RTPHost() string {
	if c.RTP.Host != "" {
		return c.RTP.Host
	}
	host, _, _ := net.SplitHostPort(c.Listen)
	return host
}

var hostName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

func validHost(h string) bool {
	return h == "" || net.ParseIP(h) != nil || hostName.MatchString(h)
}
