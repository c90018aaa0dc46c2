// Command ingress is Baton's SIP edge: it answers inbound calls and
// publishes what happens to them on the calls topic.
package main

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/twmb/franz-go/pkg/kgo"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/pkg/opshttp"
	"github.com/baton-voice/baton/pkg/startup"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/services/ingress/internal/config"
	"github.com/baton-voice/baton/services/ingress/internal/metrics"
	"github.com/baton-voice/baton/services/ingress/internal/server"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stderr))
}

// run is the whole service; it returns the process exit code.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	begun, code, done := startup.Begin("ingress", args, stderr, func(path string) (config.Config, error) {
		cfg := config.Default()
		if path == "" {
			return cfg, cfg.Validate()
		}
		return cfg, pkgconfig.Load(path, &cfg)
	}, func(c config.Config) observability.LogConfig { return c.Log })
	if done {
		return code
	}
	cfg, logger := begun.Config, begun.Logger

	// sipgo refuses to send UDP messages over 1300 bytes (RFC 3261
	// 18.1.1 asks for TCP there), but a 200 OK echoing a carrier's large
	// INVITE must go back the way the INVITE came.
	sip.UDPMTUSize = 65535

	// The first signal starts the drain (Serve); a second one kills the
	// process at once.
	ctx, stop := startup.Signals(ctx)
	defer stop()

	reg := opshttp.NewRegistry()
	publishHook := metrics.NewHook(reg, cfg.Kafka.Topics.Calls)
	cl, err := kgo.NewClient(append(kafka.ClientOpts(cfg.Kafka, logger), kgo.WithHooks(publishHook))...)
	if err != nil {
		logger.ErrorContext(ctx, "kafka client", "err", err)
		return startup.ExitFailed
	}
	defer cl.Close()
	if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor, cfg.Kafka.Topics.All()...); err != nil {
		logger.ErrorContext(ctx, "ensure topics", "err", err)
		return startup.ExitFailed
	}

	tp, shutdownTracing, err := tracing.Setup(ctx, cfg.Tracing, "ingress")
	if err != nil {
		logger.ErrorContext(ctx, "start tracing", "err", err)
		return startup.ExitFailed
	}
	defer func() {
		if err := shutdownTracing(context.WithoutCancel(ctx)); err != nil {
			logger.WarnContext(ctx, "stop tracing", "err", err)
		}
	}()

	srv, err := server.Listen(cfg, cl, logger, server.Options{Tracer: tracing.Tracer(tp, "ingress")})
	if err != nil {
		logger.ErrorContext(ctx, "start sip", "err", err)
		return startup.ExitFailed
	}
	// Calls an earlier run answered and never ended (it was killed) get
	// their CallEnded before a new call is taken.
	if n, err := srv.EndOrphans(ctx, time.Now().Add(-server.RestartLookback)); err != nil {
		logger.ErrorContext(ctx, "end the calls of an earlier run", "ended", n, "err", err)
	} else if n > 0 {
		logger.WarnContext(ctx, "ended the calls of an earlier run", "ended", n)
	}
	metrics.RegisterCounters(reg, srv.Counters)
	stopOps, err := serveOps(ctx, cfg.Metrics, reg, cl, srv.Addrs, logger)
	if err != nil {
		logger.ErrorContext(ctx, "start metrics server", "err", err)
		return startup.ExitFailed
	}
	defer stopOps() // after the drain: /metrics stays up while calls finish
	serveErr := srv.Serve(ctx)

	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := cl.Flush(flushCtx); err != nil {
		logger.WarnContext(ctx, "flush producer", "err", err)
	}
	if serveErr != nil {
		logger.ErrorContext(ctx, "sip server stopped", "err", serveErr)
		return startup.ExitFailed
	}
	logger.InfoContext(ctx, "stopped")
	return startup.ExitOK
}
