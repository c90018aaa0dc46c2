// Package config is the analytics service's configuration: Kafka, logging,
// the consumer group, the dead-letter topic and the ClickHouse connection.
// The ClickHouse password comes from the environment only, never the file.
package config

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/pkg/tracing"
)

// PasswordEnv is the environment variable that holds the ClickHouse password.
const PasswordEnv = "BATON_CLICKHOUSE_PASSWORD"

// DashboardTokenEnv holds the token the dashboard page and API require
// (Authorization: Bearer TOKEN, or Basic with TOKEN as the password).
const DashboardTokenEnv = "BATON_DASHBOARD_TOKEN"

// Config is the analytics configuration file.
type Config struct {
	Kafka kafka.Config            `yaml:"kafka"`
	Log   observability.LogConfig `yaml:"log"`
	// ClickHouse is where the rows go.
	ClickHouse ClickHouse `yaml:"clickhouse"`
	// Group is the consumer group every analytics instance joins.
	Group string `yaml:"group"`
	// RetryPause is the wait before a batch whose insert failed is tried
	// again. A batch is never skipped.
	RetryPause time.Duration `yaml:"retry_pause"`
	// RetryMaxPause caps the pause between retries: it doubles from
	// RetryPause on every failed attempt of one batch, up to this.
	RetryMaxPause time.Duration `yaml:"retry_max_pause"`
	// DeadLetterTopic receives records that cannot be decoded, so they
	// never block their partition. It is created at start.
	DeadLetterTopic string `yaml:"dead_letter_topic"`
	// Batch is how records are gathered across polls into one insert.
	Batch Batch `yaml:"batch"`
	// HTTP serves the dashboard page, its JSON API, /metrics, /healthz and
	// /readyz.
	HTTP HTTP `yaml:"http"`
	// Tracing is the OpenTelemetry tracer's setup.
	Tracing tracing.Config `yaml:"tracing"`
}

// Batch bounds one insert: it is written when it holds MaxRows records or
// MaxWait after its first record arrived, whichever comes first. Each
// insert makes one part per table that ClickHouse writes and later merges,
// so a backlog is written fastest in large batches (50,000 by default,
// decision 0008); under light load MaxWait cuts the batch and bounds the
// lag.
type Batch struct {
	MaxRows int           `yaml:"max_rows"`
	MaxWait time.Duration `yaml:"max_wait"`
}

// HTTP is the dashboard's listener.
type HTTP struct {
	// Listen is host:port; "" disables the dashboard and /metrics.
	// Off loopback the page and its API need Token.
	Listen string `yaml:"listen"`
	// Token is read from BATON_DASHBOARD_TOKEN only; a token key in the
	// file is an error.
	Token string `yaml:"-"`
	// Context are the call variables (X- headers as CallStarted names
	// them: Customer-Id for X-Customer-Id) the recent-handoffs table shows
	// as columns; at most 16, checked when the dashboard starts.
	Context []string `yaml:"context"`
}

// ClickHouse is the connection to the ClickHouse server (native protocol).
type ClickHouse struct {
	// Addr is the native TCP host:port (not the HTTP port).
	Addr string `yaml:"addr"`
	// Database is created by the migrator when missing.
	Database string `yaml:"database"`
	Username string `yaml:"username"`
	// Password is read from BATON_CLICKHOUSE_PASSWORD only; a password key
	// in the file is an error.
	Password string `yaml:"-"`
	// DialTimeout bounds one connection attempt.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// Cluster, when set, is the ClickHouse cluster (as remote_servers
	// names it) the schema is created on: ON CLUSTER DDL, replicated
	// *_local tables, Distributed tables in front (migrate.ForCluster).
	// Empty: one server.
	Cluster string `yaml:"cluster"`
}

// Default returns the configuration before the file is read.
func Default() Config {
	k := kafka.DefaultConfig()
	k.ClientID = "baton-analytics"
	return Config{
		Kafka: k,
		Log:   observability.DefaultLogConfig(),
		ClickHouse: ClickHouse{
			Addr:        "127.0.0.1:19000",
			Database:    "baton",
			Username:    "default",
			DialTimeout: 5 * time.Second,
		},
		Group:           "baton-analytics",
		RetryPause:      time.Second,
		RetryMaxPause:   30 * time.Second,
		DeadLetterTopic: "baton.dlq",
		Batch:           Batch{MaxRows: 50000, MaxWait: time.Second},
		HTTP:            HTTP{Listen: "127.0.0.1:8081"},
		Tracing:         tracing.DefaultConfig(),
	}
}

// Load reads the file at path over the defaults, takes the password from
// getenv and validates the result; with an empty path the defaults alone
// are validated.
func Load(path string, getenv func(string) string) (Config, error) {
	c := Default()
	c.ClickHouse.Password = getenv(PasswordEnv)
	c.HTTP.Token = getenv(DashboardTokenEnv)
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

// identifier is what a database name may be: it is written into SQL.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// loopback reports whether a listen address binds to loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback() || host == "localhost"
}

// Validate returns every problem, each naming its field.
func (c *Config) Validate() error {
	errs := []error{c.Tracing.Validate()}
	if err := c.Kafka.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	if strings.TrimSpace(c.Group) == "" {
		errs = append(errs, pkgconfig.Errorf("group", "a consumer group id is required"))
	}
	if c.RetryPause <= 0 {
		errs = append(errs, pkgconfig.Errorf("retry_pause", "%v: want a positive duration", c.RetryPause))
	}
	if c.RetryMaxPause < c.RetryPause {
		errs = append(errs, pkgconfig.Errorf("retry_max_pause", "%v: want at least retry_pause (%v)", c.RetryMaxPause, c.RetryPause))
	}
	if c.Batch.MaxRows < 1 {
		errs = append(errs, pkgconfig.Errorf("batch.max_rows", "%d: want at least 1", c.Batch.MaxRows))
	}
	if c.Batch.MaxWait <= 0 {
		errs = append(errs, pkgconfig.Errorf("batch.max_wait", "%v: want a positive duration", c.Batch.MaxWait))
	}
	if len(c.HTTP.Context) > 16 {
		errs = append(errs, pkgconfig.Errorf("http.context", "%d variables: at most 16", len(c.HTTP.Context)))
	}
	for i, name := range c.HTTP.Context {
		if name == "" || len(name) > 64 || strings.ContainsFunc(name, notNameRune) {
			errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("http.context[%d]", i), "%q: want 1-64 letters, digits, '-' or '_'", name))
		}
	}
	if c.HTTP.Listen != "" {
		if _, port, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
			errs = append(errs, pkgconfig.Errorf("http.listen", "%q: want host:port, or \"\" to disable", c.HTTP.Listen))
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			errs = append(errs, pkgconfig.Errorf("http.listen", "%q: port must be 0-65535", c.HTTP.Listen))
		} else if c.HTTP.Token == "" && !loopback(c.HTTP.Listen) {
			errs = append(errs, pkgconfig.Errorf("http.listen", "%q is not loopback and %s is unset: the dashboard shows call ids "+
				"and dialed numbers; set the token (clients send Authorization: Bearer TOKEN), or listen on loopback "+
				"behind an authenticating proxy", c.HTTP.Listen, DashboardTokenEnv))
		}
	}
	switch {
	case strings.TrimSpace(c.DeadLetterTopic) == "":
		errs = append(errs, pkgconfig.Errorf("dead_letter_topic", "a topic name is required"))
	case slices.Contains(c.Kafka.Topics.All(), c.DeadLetterTopic):
		errs = append(errs, pkgconfig.Errorf("dead_letter_topic", "%q is a consumed topic; dead letters would loop", c.DeadLetterTopic))
	}
	errs = append(errs, c.ClickHouse.validate()...)
	return errors.Join(errs...)
}

func (c ClickHouse) validate() []error {
	var errs []error
	if host, port, err := net.SplitHostPort(c.Addr); err != nil || host == "" {
		errs = append(errs, pkgconfig.Errorf("clickhouse.addr", "%q: want host:port of the native TCP port", c.Addr))
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		errs = append(errs, pkgconfig.Errorf("clickhouse.addr", "%q: port must be 1-65535", c.Addr))
	}
	if !identifier.MatchString(c.Database) {
		errs = append(errs, pkgconfig.Errorf("clickhouse.database", "%q: want letters, digits and '_', not starting with a digit", c.Database))
	}
	if c.Cluster != "" && !identifier.MatchString(c.Cluster) {
		errs = append(errs, pkgconfig.Errorf("clickhouse.cluster", "%q: want a cluster name of letters, digits and '_', not starting with a digit, or nothing for one server", c.Cluster))
	}
	if c.Username == "" {
		errs = append(errs, pkgconfig.Errorf("clickhouse.username", "a user name is required"))
	}
	if c.DialTimeout <= 0 {
		errs = append(errs, pkgconfig.Errorf("clickhouse.dial_timeout", "%v: want a positive duration", c.DialTimeout))
	}
	return errs
}

// notNameRune reports a rune a call variable's name cannot hold: not a
// letter, digit, '-' or '_'.
func notNameRune(r rune) bool {
	return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-' && r != '_'
}
