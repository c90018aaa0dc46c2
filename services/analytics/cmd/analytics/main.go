// Command analytics is Baton's analytics stage: it consumes every topic and
// writes ClickHouse, at least once from Kafka and exactly once in
// ClickHouse.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"syscall"

	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/pkg/opshttp"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/schemas"
	"github.com/baton-voice/baton/services/analytics/internal/config"
	"github.com/baton-voice/baton/services/analytics/internal/writer"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitConfig = 2
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stderr, os.Getenv))
}

// run is the whole service; it returns the process exit code.
func run(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) int {
	flags := flag.NewFlagSet("analytics", flag.ContinueOnError)
	flags.SetOutput(stderr)
	configPath := flags.String("config", "", "YAML configuration `file` (without it, the defaults)")
	checkOnly := flags.Bool("check-config", false, "load and validate the configuration, print what is wrong or \"config ok\", and exit (2 when invalid)")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitConfig
	}
	cfg, err := config.Load(*configPath, getenv)
	if err != nil {
		return configError(stderr, err)
	}
	if *checkOnly {
		_, _ = fmt.Fprintln(stderr, "config ok")
		return exitOK
	}
	logger, err := observability.NewLogger(stderr, cfg.Log, "analytics")
	if err != nil {
		return configError(stderr, err)
	}
	migrations, err := fs.Sub(schemas.ClickHouse, "clickhouse")
	if err != nil {
		logger.ErrorContext(ctx, "embedded migrations", "err", err)
		return exitFailed
	}

	// The first SIGINT/SIGTERM stops taking new batches; the one under way
	// is inserted and committed. After it, a second signal kills the process.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)

	logger.InfoContext(ctx, "analytics starting", "clickhouse", cfg.ClickHouse.Addr, "database", cfg.ClickHouse.Database,
		"group", cfg.Group)
	tp, shutdownTracing, err := tracing.Setup(ctx, cfg.Tracing, "analytics")
	if err != nil {
		logger.ErrorContext(ctx, "start tracing", "err", err)
		return exitFailed
	}
	defer func() {
		if err := shutdownTracing(context.WithoutCancel(ctx)); err != nil {
			logger.WarnContext(ctx, "stop tracing", "err", err)
		}
	}()
	opts := []writer.Option{writer.WithRegistry(opshttp.NewRegistry()), writer.WithTracer(tracing.Tracer(tp, "analytics"))}
	if err := writer.New(cfg, migrations, logger, opts...).Run(ctx); err != nil {
		logger.ErrorContext(ctx, "analytics stopped", "err", err)
		return exitFailed
	}
	logger.InfoContext(ctx, "analytics stopped")
	return exitOK
}

// configError reports a configuration problem before the logger exists.
func configError(stderr io.Writer, err error) int {
	_, _ = fmt.Fprintf(stderr, "analytics: %v\n", err)
	return exitConfig
}
