package broker

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Config is what the broker needs to start.
type Config struct {
	// Listen is the host:port the broker binds.
	Listen string
	// Advertise is the host:port clients are told to connect to; empty
	// means the bound address. Required when Listen binds all interfaces.
	Advertise string
	// DataDir holds the log segments and the cluster state.
	DataDir string
	// SyncWrites fsyncs every produced batch before acknowledging it.
	SyncWrites bool
	// Partitions is the partition count of topics created at start and of
	// topics clients auto-create.
	Partitions int32
	// Topics are created at start if missing.
	Topics []string
	// AutoCreateTopics lets a client's metadata request create a topic
	// that does not exist.
	AutoCreateTopics bool
}

// DefaultConfig is the local stack's broker.
func DefaultConfig() Config {
	return Config{
		Listen:     "127.0.0.1:9092",
		DataDir:    "./.run/broker",
		Partitions: 6,
		Topics:     []string{"baton.calls", "baton.handoffs", "baton.transfers"},
	}
}

// Validate names every flag that is wrong.
func (c Config) Validate() error {
	var errs []error
	host, err := checkHostPort(c.Listen)
	if err != nil {
		errs = append(errs, fmt.Errorf("--listen %q: %w", c.Listen, err))
	}
	if c.Advertise != "" {
		if _, err := checkHostPort(c.Advertise); err != nil {
			errs = append(errs, fmt.Errorf("--advertise %q: %w", c.Advertise, err))
		}
	} else if err == nil && isWildcard(host) {
		errs = append(errs, fmt.Errorf("--advertise: required when --listen %q binds all interfaces; clients need an address they can reach", c.Listen))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir: empty"))
	}
	if c.Partitions < 1 {
		errs = append(errs, fmt.Errorf("--partitions: %d, want at least 1", c.Partitions))
	}
	for i, t := range c.Topics {
		if err := checkTopic(t); err != nil {
			errs = append(errs, fmt.Errorf("--topics[%d] %q: %w", i, t, err))
		}
	}
	return errors.Join(errs...)
}

func checkHostPort(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", errors.New("want host:port, e.g. 127.0.0.1:9092")
	}
	if host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /") {
		return "", fmt.Errorf("bad host %q", host)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("bad port %q: want 0-65535", port)
	}
	return host, nil
}

func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// checkTopic applies Kafka's topic name rules.
func checkTopic(t string) error {
	switch {
	case t == "":
		return errors.New("empty topic name")
	case t == "." || t == "..":
		return fmt.Errorf("topic name cannot be %q", t)
	case len(t) > 249:
		return errors.New("topic name longer than 249 characters")
	}
	for _, r := range t {
		if !validTopicRune(r) {
			return fmt.Errorf("topic name has %q; want letters, digits, '.', '_' or '-'", r)
		}
	}
	return nil
}

func validTopicRune(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return r == '.' || r == '_' || r == '-'
}
