// Command analytics is Baton's analytics stage: it consumes every topic and
// writes ClickHouse, at least once from Kafka and exactly once in
// ClickHouse.
package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/baton-voice/baton/pkg/hops"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/pkg/opshttp"
	"github.com/baton-voice/baton/pkg/startup"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/schemas"
	"github.com/baton-voice/baton/services/analytics/internal/chconn"
	"github.com/baton-voice/baton/services/analytics/internal/config"
	"github.com/baton-voice/baton/services/analytics/internal/migrate"
	"github.com/baton-voice/baton/services/analytics/internal/writer"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stderr, os.Getenv))
}

// run is the whole service; it returns the process exit code.
func run(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) int {
	begun, code, done := startup.Begin("analytics", args, stderr,
		func(path string) (config.Config, error) { return config.Load(path, getenv) },
		func(c config.Config) observability.LogConfig { return c.Log })
	if done {
		return code
	}
	cfg, logger := begun.Config, begun.Logger
	migrations, err := fs.Sub(schemas.ClickHouse, "clickhouse")
	if err != nil {
		logger.ErrorContext(ctx, "embedded migrations", "err", err)
		return startup.ExitFailed
	}

	// The first SIGINT/SIGTERM stops taking new batches; the one under way
	// is inserted and committed. After it, a second signal kills the process.
	ctx, stop := startup.Signals(ctx)
	defer stop()

	logger.InfoContext(ctx, "analytics starting", "clickhouse", cfg.ClickHouse.Addr, "database", cfg.ClickHouse.Database,
		"group", cfg.Group)
	tp, shutdownTracing, err := tracing.Setup(ctx, cfg.Tracing, "analytics")
	if err != nil {
		logger.ErrorContext(ctx, "start tracing", "err", err)
		return startup.ExitFailed
	}
	defer func() {
		if err := shutdownTracing(context.WithoutCancel(ctx)); err != nil {
			logger.WarnContext(ctx, "stop tracing", "err", err)
		}
	}()
	if err := serve(ctx, cfg, migrations, tracing.Tracer(tp, "analytics"), logger); err != nil {
		logger.ErrorContext(ctx, "analytics stopped", "err", err)
		return startup.ExitFailed
	}
	logger.InfoContext(ctx, "analytics stopped")
	return startup.ExitOK
}

// startTimeout bounds migrations and topic creation at start.
const startTimeout = 60 * time.Second

// serve connects to ClickHouse (waiting for it), applies migrations
// (NNNN_name.sql files at the root of the FS), creates the Kafka client
// and the topics, serves the dashboard and the ops endpoints, samples the
// lag, and runs the writer until ctx ends. The batch under way when ctx
// ends is inserted and committed before serve returns. It returns nil when
// it stopped because ctx ended.
func serve(ctx context.Context, cfg config.Config, migrations fs.FS, tracer trace.Tracer, logger *slog.Logger) error {
	ch := cfg.ClickHouse
	// Wait for the server through the default database: the target one
	// may not exist yet.
	probe, err := chconn.Open(ctx, chconn.Options(ch, "default"), logger)
	if err != nil {
		return stopped(ctx, err)
	}
	if err := probe.Close(); err != nil {
		logger.WarnContext(ctx, "close clickhouse probe", "err", err)
	}

	startCtx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	applied, err := migrate.Run(startCtx, chconn.Options(ch, ch.Database), migrations, ch.Cluster, logger)
	if err != nil {
		return stopped(ctx, fmt.Errorf("migrate: %w", err))
	}
	logger.InfoContext(ctx, "migrations done", "database", ch.Database, "applied", len(applied))

	conn, err := chconn.Open(ctx, chconn.Options(ch, ch.Database), logger)
	if err != nil {
		return stopped(ctx, err)
	}
	defer func() {
		if err := conn.Close(); err != nil {
			logger.WarnContext(ctx, "close clickhouse", "err", err)
		}
	}()

	cl, err := kgo.NewClient(writer.ClientOpts(cfg.Kafka, cfg.Group, logger)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	// Close leaves the group; offsets were committed batch by batch.
	defer cl.Close()
	err = kafka.EnsureTopics(startCtx, cl, cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor,
		append(cfg.Kafka.Topics.All(), cfg.DeadLetterTopic)...)
	if err != nil {
		return stopped(ctx, fmt.Errorf("ensure topics: %w", err))
	}
	cancel()

	reg := opshttp.NewRegistry()
	var wg sync.WaitGroup
	defer wg.Wait()
	opsCtx, stopOps := context.WithCancel(ctx)
	defer stopOps()
	serveOps(opsCtx, &wg, cfg, reg, conn, cl, logger)

	hopLog, err := hops.FromEnv(os.Getenv)
	if err != nil {
		return err
	}
	defer func() { _ = hopLog.Close() }()
	w := writer.New(cl, conn, writer.Options{Config: cfg, Metrics: writer.NewMetrics(reg), Tracer: tracer, Hops: hopLog}, logger)
	return w.Run(ctx)
}

// stopped turns an error caused by the end of ctx into a clean stop.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
