// Command router is Baton's decision stage: it consumes call facts and
// transfer outcomes and produces handoff commands, exactly once, in Kafka
// transactions.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/services/router/internal/config"
	"github.com/baton-voice/baton/services/router/internal/handoff"
	"github.com/baton-voice/baton/services/router/internal/router"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitConfig = 2
)

// ensureTopicsTimeout bounds topic creation at start.
const ensureTopicsTimeout = 30 * time.Second

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stderr))
}

// run is the whole service; it returns the process exit code.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	flags := flag.NewFlagSet("router", flag.ContinueOnError)
	flags.SetOutput(stderr)
	configPath := flags.String("config", "", "YAML configuration `file` (without it, the defaults)")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitConfig
	}
	hostname, err := os.Hostname()
	if err != nil {
		hostname = "localhost"
	}
	cfg, err := config.Load(*configPath, hostname)
	if err != nil {
		return configError(stderr, err)
	}
	table, err := cfg.Table()
	if err != nil {
		return configError(stderr, err)
	}
	logger, err := observability.NewLogger(stderr, cfg.Log, "router")
	if err != nil {
		return configError(stderr, err)
	}

	// The first SIGINT/SIGTERM stops taking new batches; the one under way
	// is finished. After it, a second signal kills the process.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)

	fold := handoff.New(table, logger)
	rt, err := router.New(router.Options{Kafka: cfg.Kafka, Group: cfg.Group, TransactionalID: cfg.TransactionalID}, fold, logger)
	if err != nil {
		logger.ErrorContext(ctx, "start router", "err", err)
		return exitFailed
	}
	defer rt.Close()

	ensureCtx, cancel := context.WithTimeout(ctx, ensureTopicsTimeout)
	err = kafka.EnsureTopics(ensureCtx, rt.Client(), cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor, cfg.Kafka.Topics.All()...)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return exitOK
		}
		logger.ErrorContext(ctx, "ensure topics", "err", err)
		return exitFailed
	}

	logger.InfoContext(ctx, "router started", "group", cfg.Group, "transactional_id", cfg.TransactionalID,
		"destinations", len(table.Destinations), "default", table.Default, "rules", len(table.Rules))
	if err := rt.Run(ctx); err != nil {
		logger.ErrorContext(ctx, "router stopped", "err", err)
		return exitFailed
	}
	logger.InfoContext(ctx, "router stopped")
	return exitOK
}

// configError reports a configuration problem before the logger exists.
func configError(stderr io.Writer, err error) int {
	_, _ = fmt.Fprintf(stderr, "router: %v\n", err)
	return exitConfig
}
