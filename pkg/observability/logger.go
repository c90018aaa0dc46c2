// Package observability builds the pieces every Baton service shares for
// being looked at: the structured logger.
package observability

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
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

// NewLogger builds the service's logger; every line carries service.
func NewLogger(w io.Writer, c LogConfig, service string) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level %q: want debug, info, warn or error", c.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch strings.ToLower(c.Format) {
	case "json", "":
		h = slog.NewJSONHandler(w, opts)
	case "text":
		h = slog.NewTextHandler(w, opts)
	default:
		return nil, fmt.Errorf("log.format %q: want json or text", c.Format)
	}
	return slog.New(h).With("service", service), nil
}
