// Package observability builds the pieces every Baton service shares for
// being looked at: the structured logger.
package observability

import (
	"errors"
	"io"
	"log/slog"
	"strings"

	"github.com/baton-voice/baton/pkg/config"
)

// LogConfig is the log section of a service's configuration.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json or text.
	Format string `yaml:"format"`
}

// DefaultLogConfig logs JSON at info.
func DefaultLogConfig() LogConfig { return LogConfig{Level: "info", Format: "json"} }

// Validate checks the section; each problem is a config.FieldError
// (log.level, log.format), so it is reported with its file and line.
func (c LogConfig) Validate() error {
	var errs []error
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		errs = append(errs, config.Errorf("log.level", "%q: want debug, info, warn or error", c.Level))
	}
	if f := strings.ToLower(c.Format); f != "json" && f != "text" && f != "" {
		errs = append(errs, config.Errorf("log.format", "%q: want json or text", c.Format))
	}
	return errors.Join(errs...)
}

// NewLogger builds the service's logger; every line carries service.
func NewLogger(w io.Writer, c LogConfig, service string) (*slog.Logger, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if strings.EqualFold(c.Format, "text") {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With("service", service), nil
}
