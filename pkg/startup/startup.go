// Package startup is what every Baton service's main does before its own
// wiring: the shared command line (--config, --check-config), the exit
// codes, loading and checking the configuration, the logger, and the
// signal handling (the first SIGINT or SIGTERM starts a graceful stop, a
// second one kills the process).
package startup

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/baton-voice/baton/pkg/observability"
)

// Exit codes of every service.
const (
	ExitOK     = 0
	ExitFailed = 1 // the service could not start or stopped on an error
	ExitConfig = 2 // a bad command line or configuration
)

// Flags is the command line every service shares.
type Flags struct {
	// Config is the YAML file; empty means the defaults.
	Config string
	// CheckOnly asks to validate the configuration and exit.
	CheckOnly bool
}

// Parse reads args for the service named name. extra, when not nil, adds
// the service's own flags to the set before parsing. When done is true the
// caller returns code at once (--help, or a bad flag, reported on stderr).
func Parse(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (f Flags, code int, done bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.Config, "config", "", "YAML configuration `file` (without it, the defaults)")
	fs.BoolVar(&f.CheckOnly, "check-config", false, "load and validate the configuration, print what is wrong or \"config ok\", and exit (2 when invalid)")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return f, ExitOK, true
		}
		return f, ExitConfig, true
	}
	return f, 0, false
}

// ConfigError reports a configuration problem on stderr (the logger may
// not exist yet) and returns ExitConfig.
func ConfigError(stderr io.Writer, name string, err error) int {
	_, _ = fmt.Fprintf(stderr, "%s: %v\n", name, err)
	return ExitConfig
}

// Checked ends a --check-config run that found nothing wrong.
func Checked(stderr io.Writer) int {
	_, _ = fmt.Fprintln(stderr, "config ok")
	return ExitOK
}

// Logger builds the service's logger from its log section; a bad section
// is reported as ConfigError would.
func Logger(stderr io.Writer, name string, c observability.LogConfig) (*slog.Logger, int, bool) {
	logger, err := observability.NewLogger(stderr, c, name)
	if err != nil {
		return nil, ConfigError(stderr, name, err), false
	}
	return logger, 0, true
}

// Signals returns a context cancelled at the first SIGINT or SIGTERM; the
// service then stops gracefully. From that moment the signals have their
// default effect again, so a second one kills the process at once. stop
// releases the handler.
func Signals(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	return ctx, stop
}

// Begun is what Begin read: the command line, the configuration and the
// logger built from it.
type Begun[C any] struct {
	Flags  Flags
	Config C
	Logger *slog.Logger
}

// Begin is the start every service shares: parse the command line, load
// the configuration (load gets the --config path, "" for the defaults,
// and returns every problem), end a --check-config run, and build the
// logger from the configuration's log section (logOf). When done is true
// the caller returns code at once.
func Begin[C any](name string, args []string, stderr io.Writer, load func(path string) (C, error),
	logOf func(C) observability.LogConfig) (b Begun[C], code int, done bool) {
	flags, code, done := Parse(name, args, stderr, nil)
	if done {
		return b, code, true
	}
	cfg, err := load(flags.Config)
	if err != nil {
		return b, ConfigError(stderr, name, err), true
	}
	if flags.CheckOnly {
		return b, Checked(stderr), true
	}
	logger, code, ok := Logger(stderr, name, logOf(cfg))
	if !ok {
		return b, code, true
	}
	return Begun[C]{Flags: flags, Config: cfg, Logger: logger}, 0, false
}
