// Command transfer is Baton's outbound SIP stage: it consumes handoff
// commands and the call facts they depend on, sends REFER or BYE inside
// the caller's dialog, and publishes transfer outcomes.
package main

import (
	"context"
	"io"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/hops"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/pkg/opshttp"
	"github.com/baton-voice/baton/pkg/startup"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/services/transfer/internal/attempts"
	"github.com/baton-voice/baton/services/transfer/internal/bridge"
	"github.com/baton-voice/baton/services/transfer/internal/config"
	"github.com/baton-voice/baton/services/transfer/internal/pump"
	"github.com/baton-voice/baton/services/transfer/internal/request"
	"github.com/baton-voice/baton/services/transfer/internal/transfer"
	"github.com/baton-voice/baton/services/transfer/internal/uac"
	"github.com/baton-voice/baton/services/transfer/internal/whisper"
)

// ensureTopicsTimeout bounds topic creation at start.
const ensureTopicsTimeout = 30 * time.Second

// byeTimeout bounds the BYEs that end a bridged call (Timer F bounds each
// anyway; this caps them at shutdown).
const byeTimeout = 5 * time.Second

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stderr))
}

// run is the whole service; it returns the process exit code.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	begun, code, done := startup.Begin("transfer", args, stderr, config.Load,
		func(c config.Config) observability.LogConfig { return c.Log })
	if done {
		return code
	}
	cfg, logger := begun.Config, begun.Logger

	// The first SIGINT/SIGTERM stops taking commands; in-flight transfers
	// get shutdown_timeout. After it, a second signal kills the process.
	ctx, stop := startup.Signals(ctx)
	defer stop()

	trunkList, destinations, err := trunks(cfg, os.Getenv)
	if err != nil {
		return startup.ConfigError(stderr, "transfer", err)
	}
	sipOpts := uac.Options{Limits: cfg.SIP}
	tlsServer, tlsClient, err := cfg.TLSConfigs()
	if err != nil {
		return startup.ConfigError(stderr, "transfer", err)
	}
	if tlsServer != nil {
		sipOpts.TLS = &uac.TLS{Listen: cfg.TLS.Listen, Server: tlsServer, Client: tlsClient}
	}
	sipClient, err := uac.Listen(ctx, cfg.Listen, cfg.ViaHost(), logger, sipOpts)
	if err != nil {
		logger.ErrorContext(ctx, "start sip", "err", err)
		return startup.ExitFailed
	}
	defer func() {
		if err := sipClient.Close(); err != nil {
			logger.WarnContext(ctx, "close sip", "err", err)
		}
	}()

	ensureCtx, cancel := context.WithTimeout(ctx, ensureTopicsTimeout)
	defer cancel()
	attemptLog, err := attempts.Open(ensureCtx, kafka.ClientOpts(cfg.Kafka, logger), attempts.Options{
		Topic:             cfg.AttemptLog.Topic,
		Partitions:        cfg.Kafka.Partitions,
		ReplicationFactor: cfg.Kafka.ReplicationFactor,
		Retention:         cfg.AttemptLog.Retention,
		Instance:          cfg.InstanceName(),
	}, logger)
	if err != nil {
		if ctx.Err() != nil {
			return startup.ExitOK
		}
		logger.ErrorContext(ctx, "open attempt log", "err", err)
		return startup.ExitFailed
	}
	defer attemptLog.Close()

	opts := kafka.ClientOpts(cfg.Kafka, logger)
	opts = append(opts, kafka.ConsumerOpts(cfg.Group, cfg.Kafka.Topics.Handoffs, cfg.Kafka.Topics.Calls)...)
	opts = append(opts, kafka.StaticMember(cfg.Kafka)...)
	// Partitions taken over from another instance: read its attempts
	// before running their commands.
	opts = append(opts, kgo.OnPartitionsAssigned(attemptLog.OnAssigned))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		logger.ErrorContext(ctx, "start kafka client", "err", err)
		return startup.ExitFailed
	}
	// Close leaves the group, so the partitions move on at once.
	defer cl.Close()

	err = kafka.EnsureTopics(ensureCtx, cl, cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor, cfg.Kafka.Topics.All()...)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return startup.ExitOK
		}
		logger.ErrorContext(ctx, "ensure topics", "err", err)
		return startup.ExitFailed
	}

	reg := opshttp.NewRegistry()
	tp, shutdownTracing, err := tracing.Setup(ctx, cfg.Tracing, "transfer")
	if err != nil {
		logger.ErrorContext(ctx, "start tracing", "err", err)
		return startup.ExitFailed
	}
	defer func() {
		if err := shutdownTracing(context.WithoutCancel(ctx)); err != nil {
			logger.WarnContext(ctx, "stop tracing", "err", err)
		}
	}()

	mediaHost, _ := netip.ParseAddr(cfg.Media.Host) // validated
	// One pump reads every bridge's RTP sockets: a worker per core.
	mediaPump, err := pump.New(runtime.GOMAXPROCS(0), pump.DefaultLinger)
	if err != nil {
		logger.ErrorContext(ctx, "start media pump", "err", err)
		return startup.ExitFailed
	}
	defer func() { _ = mediaPump.Close() }()
	var routes *request.Allowlist
	if len(cfg.Routes.Allow) > 0 {
		if routes, err = request.NewAllowlist(cfg.Routes.Allow); err != nil {
			logger.Error("routes.allow", "err", err) // validated at load
			return startup.ExitFailed
		}
	}
	wc := cfg.Invite.Whisper
	whisperURLs, err := whisper.NewFetcher(whisper.FetchOptions{
		AllowHosts:   wc.AllowHosts,
		Timeout:      wc.Timeout,
		MaxBytes:     wc.MaxBytes,
		MaxDuration:  wc.MaxDuration,
		CacheEntries: wc.CacheEntries,
		CacheBytes:   wc.CacheBytes,
		CacheTTL:     wc.CacheTTL,
	}, whisper.NewMetrics(reg), logger)
	if err != nil {
		logger.ErrorContext(ctx, "invite.whisper", "err", err) // validated at load
		return startup.ExitFailed
	}
	defer whisperURLs.Close()
	whisperURLs.RegisterCache(reg)
	hopLog, err := hops.FromEnv(os.Getenv)
	if err != nil {
		logger.ErrorContext(ctx, "start transfer", "err", err)
		return startup.ExitFailed
	}
	defer func() { _ = hopLog.Close() }()
	svc := transfer.New(cl, sipClient, attemptLog, transfer.Options{
		Hops:            hopLog,
		Routes:          routes,
		Peers:           request.Peers{Networks: cfg.PeerNetworks()},
		Topics:          cfg.Kafka.Topics,
		NotifyTimeout:   cfg.NotifyTimeout,
		ByeAfterRefer:   cfg.ByeAfterRefer,
		MaxInFlight:     cfg.MaxInFlight,
		MaxCommandAge:   cfg.MaxCommandAge,
		ProduceTimeout:  cfg.Kafka.ProduceTimeout,
		ShutdownTimeout: cfg.ShutdownTimeout,
		Invite: transfer.InviteOptions{
			Ports: &bridge.Ports{Host: mediaHost, Min: cfg.Media.PortMin, Max: cfg.Media.PortMax,
				RTCPInterval: cfg.Media.RTCPInterval, Pump: mediaPump},
			MediaAddr:     cfg.MediaAddr(),
			IdleTimeout:   cfg.Media.IdleTimeout,
			AnswerTimeout: cfg.Invite.AnswerTimeout,
			CallerID: request.CallerID{Policy: cfg.Invite.CallerID.Policy, Number: cfg.Invite.CallerID.Number,
				DisplayName: cfg.Invite.CallerID.DisplayName, Host: cfg.ViaHost()},
			SRTPSuites:       cfg.Invite.SRTPSuites,
			AllowSDESOverUDP: cfg.Invite.AllowSDESOverUDP,
			ByeTimeout:       byeTimeout,
			TLS:              tlsServer != nil,
			TrunkHost:        cfg.Invite.TrunkHost,
			WhisperMax:       cfg.Invite.Whisper.MaxDuration,
			WhisperURLs:      whisperURLs,
		},
		Metrics:      transfer.NewMetrics(reg),
		Tracer:       tracing.Tracer(tp, "transfer"),
		Trunks:       trunkList,
		Destinations: destinations,
		Refusals:     attemptLog,
		BridgeLease:  cfg.AttemptLog.BridgeLease,
	}, logger)
	svc.RegisterInFlight(reg)
	sipClient.RegisterMetrics(reg)
	stopHealth, err := startHealth(ctx, cfg, tlsClient, reg, logger)
	if err != nil {
		logger.ErrorContext(ctx, "start health checks", "err", err)
		return startup.ExitFailed
	}
	defer stopHealth()
	var wg sync.WaitGroup
	defer wg.Wait()
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	defer stopOps() // after the drain: /readyz and the metrics stay up while in-flight transfers finish
	if err := serveOps(opsCtx, &wg, cfg.Metrics, reg, cl, sipClient, cfg.Group, logger); err != nil {
		logger.ErrorContext(ctx, "start metrics server", "err", err)
		return startup.ExitFailed
	}
	sipTLS := ""
	if a := sipClient.TLSAddr(); a != nil {
		sipTLS = a.String()
	}
	logger.InfoContext(ctx, "transfer started", "sip", sipClient.Addr().String(), "sip_tcp", sipClient.TCPAddr().String(), "sip_tls", sipTLS, "via_host", cfg.ViaHost(),
		"group", cfg.Group, "notify_timeout", cfg.NotifyTimeout.String())
	code = startup.ExitOK
	if err := svc.Run(ctx); err != nil {
		logger.ErrorContext(ctx, "transfer stopped", "err", err)
		code = startup.ExitFailed
	}

	flushCtx, cancelFlush := context.WithTimeout(context.WithoutCancel(ctx), cfg.Kafka.ProduceTimeout)
	defer cancelFlush()
	if err := cl.Flush(flushCtx); err != nil {
		logger.WarnContext(ctx, "flush producer", "err", err)
	}
	logger.InfoContext(ctx, "transfer stopped")
	return code
}
