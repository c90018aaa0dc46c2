// Command ingress is Baton's SIP edge: it answers inbound calls and
// publishes what happens to them on the calls topic.
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

	"github.com/emiago/sipgo/sip"
	"github.com/twmb/franz-go/pkg/kgo"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/pkg/opshttp"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/services/ingress/internal/config"
	"github.com/baton-voice/baton/services/ingress/internal/metrics"
	"github.com/baton-voice/baton/services/ingress/internal/server"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("ingress", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML configuration `file` (defaults when absent)")
	checkOnly := fs.Bool("check-config", false, "load and validate the configuration, print what is wrong or \"config ok\", and exit (2 when invalid)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}

	cfg := config.Default()
	if *configPath != "" {
		if err := pkgconfig.Load(*configPath, &cfg); err != nil {
			_, _ = fmt.Fprintln(stderr, err) // stderr is all there is
			return 2
		}
	} else if err := cfg.Validate(); err != nil {
		_, _ = fmt.Fprintln(stderr, err) // stderr is all there is
		return 2
	}
	if *checkOnly {
		_, _ = fmt.Fprintln(stderr, "config ok")
		return 0
	}
	logger, err := observability.NewLogger(stderr, cfg.Log, "ingress")
	if err != nil {
		_, _ = fmt.Fprintln(stderr, err) // stderr is all there is
		return 2
	}

	// sipgo refuses to send UDP messages over 1300 bytes (RFC 3261
	// 18.1.1 asks for TCP there), but a 200 OK echoing a carrier's large
	// INVITE must go back the way the INVITE came.
	sip.UDPMTUSize = 65535

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// The first signal starts the drain (Serve); a second one kills the
	// process at once.
	go func() {
		<-ctx.Done()
		stop()
	}()

	reg := opshttp.NewRegistry()
	publishHook := metrics.NewHook(reg, cfg.Kafka.Topics.Calls)
	cl, err := kgo.NewClient(append(kafka.ClientOpts(cfg.Kafka, logger), kgo.WithHooks(publishHook))...)
	if err != nil {
		logger.Error("kafka client", "err", err)
		return 1
	}
	defer cl.Close()
	if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor, cfg.Kafka.Topics.All()...); err != nil {
		logger.Error("ensure topics", "err", err)
		return 1
	}

	tp, shutdownTracing, err := tracing.Setup(ctx, cfg.Tracing, "ingress")
	if err != nil {
		logger.Error("start tracing", "err", err)
		return 1
	}
	defer func() {
		if err := shutdownTracing(context.WithoutCancel(ctx)); err != nil {
			logger.Warn("stop tracing", "err", err)
		}
	}()

	srv, err := server.Listen(cfg, cl, logger, server.WithTracer(tracing.Tracer(tp, "ingress")))
	if err != nil {
		logger.Error("start sip", "err", err)
		return 1
	}
	// Calls an earlier run answered and never ended (it was killed) get
	// their CallEnded before a new call is taken.
	if n, err := srv.EndOrphans(ctx, time.Now().Add(-server.RestartLookback)); err != nil {
		logger.Error("end the calls of an earlier run", "ended", n, "err", err)
	} else if n > 0 {
		logger.Warn("ended the calls of an earlier run", "ended", n)
	}
	metrics.RegisterCounters(reg, srv.Counters)
	stopOps, err := serveOps(ctx, cfg.Metrics.Listen, reg, cl, srv.Addrs, logger)
	if err != nil {
		logger.Error("start metrics server", "err", err)
		return 1
	}
	defer stopOps() // after the drain: /metrics stays up while calls finish
	serveErr := srv.Serve(ctx)

	flushCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := cl.Flush(flushCtx); err != nil {
		logger.Warn("flush producer", "err", err)
	}
	if serveErr != nil {
		logger.Error("sip server stopped", "err", serveErr)
		return 1
	}
	logger.Info("stopped")
	return 0
}
