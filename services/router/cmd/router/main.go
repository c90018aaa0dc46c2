// Command router is Baton's decision stage: it consumes call facts and
// transfer outcomes and produces handoff commands, exactly once, in Kafka
// transactions.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/hops"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/pkg/opshttp"
	"github.com/baton-voice/baton/pkg/startup"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/services/router/internal/api"
	"github.com/baton-voice/baton/services/router/internal/callview"
	"github.com/baton-voice/baton/services/router/internal/config"
	"github.com/baton-voice/baton/services/router/internal/handoff"
	"github.com/baton-voice/baton/services/router/internal/precall"
	"github.com/baton-voice/baton/services/router/internal/push"
	"github.com/baton-voice/baton/services/router/internal/reload"
	"github.com/baton-voice/baton/services/router/internal/router"
)

// ensureTopicsTimeout bounds topic creation at start.
const ensureTopicsTimeout = 30 * time.Second

func main() {
	if len(os.Args) > 1 && os.Args[1] == replayCommand {
		os.Exit(replay(context.Background(), os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(run(context.Background(), os.Args[1:], os.Stderr))
}

// run is the whole service; it returns the process exit code.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	hostname, err := os.Hostname()
	if err != nil {
		hostname = "localhost"
	}
	var table *handoff.Table
	begun, code, done := startup.Begin("router", args, stderr, func(path string) (config.Config, error) {
		cfg, err := config.Load(path, hostname)
		if err == nil {
			table, err = cfg.Table()
		}
		return cfg, err
	}, func(c config.Config) observability.LogConfig { return c.Log })
	if done {
		return code
	}
	cfg, logger, flags := begun.Config, begun.Logger, begun.Flags
	var tokens []string
	if cfg.API.Listen != "" {
		for _, t := range strings.Split(os.Getenv(cfg.API.TokensEnv), ",") {
			if t = strings.TrimSpace(t); t != "" {
				tokens = append(tokens, t)
			}
		}
		if len(tokens) == 0 {
			return startup.ConfigError(stderr, "router", fmt.Errorf("api.tokens_env: $%s holds no token; the API needs at least one", cfg.API.TokensEnv))
		}
	}
	endpoints, err := webhookEndpoints(cfg.Webhooks)
	if err != nil {
		return startup.ConfigError(stderr, "router", err)
	}
	var preCallHeader http.Header
	if cfg.PreCall.URL != "" && cfg.PreCall.HeadersEnv != "" {
		if preCallHeader, err = precall.ParseHeaders(os.Getenv(cfg.PreCall.HeadersEnv)); err != nil {
			return startup.ConfigError(stderr, "router", fmt.Errorf("precall.headers_env: $%s: %w", cfg.PreCall.HeadersEnv, err))
		}
	}
	for _, w := range cfg.Warnings() {
		logger.WarnContext(ctx, "config warning", "warning", w)
	}
	holder, err := reload.New(table, flags.Config, reloader(cfg, hostname, logger), logger)
	if err != nil {
		return startup.ConfigError(stderr, "router", err)
	}

	// The first SIGINT/SIGTERM stops taking new batches; the one under way
	// is finished. After it, a second signal kills the process.
	ctx, stop := startup.Signals(ctx)
	defer stop()

	fold := handoff.New(holder, logger).WithMaxCalls(cfg.MaxCalls)
	reg := opshttp.NewRegistry()
	var hooks *push.Webhooks
	if len(endpoints) > 0 {
		// The owner's fold: each transition of the calls this instance
		// owns goes to the webhooks once it commits.
		hooks = push.NewWebhooks(endpoints, webhookClient(), logger, time.Now, push.NewWebhookMetrics(reg))
		fold.WithSink(hooks)
	}
	holders := map[string]router.Holder{"owner": fold}
	// A call idle for up to max_call_duration is live: its start must be
	// re-read by a restore and by the call view.
	lookback := max(router.DefaultRestoreLookback, cfg.MaxCallDuration)
	tp, shutdownTracing, err := tracing.Setup(ctx, cfg.Tracing, "router")
	if err != nil {
		logger.ErrorContext(ctx, "start tracing", "err", err)
		return startup.ExitFailed
	}
	defer func() {
		if err := shutdownTracing(context.WithoutCancel(ctx)); err != nil {
			logger.WarnContext(ctx, "stop tracing", "err", err)
		}
	}()

	// Facts the router writes outside its transactions (the agent API's
	// requests, pre-call data) go through a plain idempotent producer.
	var pub *api.KafkaPublisher
	if cfg.API.Listen != "" || cfg.PreCall.URL != "" {
		prod, err := kgo.NewClient(kafka.ClientOpts(cfg.Kafka, logger)...)
		if err != nil {
			logger.ErrorContext(ctx, "start facts producer", "err", err)
			return startup.ExitFailed
		}
		defer prod.Close() // after every user of it stopped (deferred below)
		pub = api.NewKafkaPublisher(prod, cfg.Kafka.Topics.Calls, cfg.Kafka.ProduceTimeout)
	}
	var fetcher *precall.Fetcher
	var started router.StartWatcher
	if cfg.PreCall.URL != "" {
		fetcher = precall.New(precall.Options{
			URL: cfg.PreCall.URL, Header: preCallHeader, Timeout: cfg.PreCall.Timeout, MaxAge: cfg.PreCall.MaxAge,
			MaxInFlight: cfg.PreCall.MaxInFlight, FetchedBy: cfg.TransactionalID,
		}, fold, pub, logger, time.Now)
		started = fetcher
	}
	hopLog, err := hops.FromEnv(os.Getenv)
	if err != nil {
		logger.ErrorContext(ctx, "start router", "err", err)
		return startup.ExitFailed
	}
	defer func() { _ = hopLog.Close() }()
	rt, err := router.New(router.Options{
		Kafka: cfg.Kafka, Group: cfg.Group, TransactionalID: cfg.TransactionalID,
		TransactionTimeout: cfg.TransactionTimeout, Started: started,
		Metrics: router.NewMetrics(reg), Tracer: tracing.Tracer(tp, "router"),
		RestoreLookback: lookback, MaxCallDuration: cfg.MaxCallDuration, Hops: hopLog,
	}, fold, logger)
	if err != nil {
		logger.ErrorContext(ctx, "start router", "err", err)
		return startup.ExitFailed
	}
	defer rt.Close()

	ensureCtx, cancel := context.WithTimeout(ctx, ensureTopicsTimeout)
	err = kafka.EnsureTopics(ensureCtx, rt.Client(), cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor, cfg.Kafka.Topics.All()...)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return startup.ExitOK
		}
		logger.ErrorContext(ctx, "ensure topics", "err", err)
		return startup.ExitFailed
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	if cfg.API.Listen != "" {
		// The API reads every partition's calls, not only this instance's.
		view := callview.New(holder, kafka.ClientOpts(cfg.Kafka, logger),
			[]string{cfg.Kafka.Topics.Calls, cfg.Kafka.Topics.Transfers}, lookback, logger).WithMaxCalls(cfg.MaxCalls)
		holders["view"] = view
		// Event streams are served from the view: any instance streams any call.
		hub := push.NewHub(cfg.API.MaxStreams, cfg.API.MaxStreamsPerCall, push.NewHubMetrics(reg))
		view.WithSink(hub, streamHistory)
		wg.Go(func() {
			if err := view.Run(ctx); err != nil {
				logger.ErrorContext(ctx, "call view stopped", "err", err)
			}
		})
		if err := serveAPI(ctx, &wg, cfg, view, hub, holder, pub, tokens, api.NewMetrics(reg), logger); err != nil {
			logger.ErrorContext(ctx, "start agent API", "err", err)
			return startup.ExitFailed
		}
	}
	router.RegisterHolders(reg, holders)
	if hooks != nil {
		wg.Go(func() { hooks.Run(ctx) })
	}
	if fetcher != nil {
		wg.Go(func() { fetcher.Run(ctx) })
	}
	if err := serveOps(ctx, &wg, cfg.Metrics, reg, rt, cfg.Group, logger); err != nil {
		logger.ErrorContext(ctx, "start metrics server", "err", err)
		stop()
		return startup.ExitFailed
	}

	// SIGHUP and file changes reload the destinations and rules.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	wg.Go(func() { holder.Run(ctx, hup, cfg.Reload.PollInterval) })

	logger.InfoContext(ctx, "router started", "group", cfg.Group, "transactional_id", cfg.TransactionalID,
		"destinations", len(table.Destinations), "default", table.Default, "rules", len(table.Rules), "api", cfg.API.Listen)
	if err := rt.Run(ctx); err != nil {
		logger.ErrorContext(ctx, "router stopped", "err", err)
		stop()
		return startup.ExitFailed
	}
	logger.InfoContext(ctx, "router stopped")
	return startup.ExitOK
}

// apiShutdownTimeout bounds the agent API's graceful shutdown.
const apiShutdownTimeout = 5 * time.Second

// serveAPI starts the agent API; it stops when ctx ends, and wg waits
// for it.
func serveAPI(ctx context.Context, wg *sync.WaitGroup, cfg config.Config, calls api.Calls, hub *push.Hub, tables handoff.Source,
	pub api.Publisher, tokens []string, metrics *api.Metrics, logger *slog.Logger) error {
	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.API.Listen, err)
	}
	// Read, write, idle and header limits: a tokenless client cannot
	// hold a connection by sending slowly or not at all.
	policy, err := cfg.OutboundPolicy()
	if err != nil {
		return errors.Join(fmt.Errorf("outbound policy: %w", err), ln.Close())
	}
	a := api.New(calls, tables, pub, tokens, logger, time.Now, metrics).WithMaxMarkWaits(cfg.API.MaxMarkWaits).
		WithStreams(hub, cfg.API.StreamHeartbeat).WithOutbound(policy)
	// Handoffs asked for after a mark wait here; they end with ctx.
	wg.Go(func() { a.Run(ctx) })
	srv := opshttp.NewHTTPServer(a, opshttp.DefaultLimits())
	srv.ErrorLog = slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.ErrorContext(ctx, "agent API stopped", "err", err)
		}
	})
	wg.Go(func() {
		<-ctx.Done()
		hub.Close() // event streams never go idle: end them, or Shutdown waits for them
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			logger.WarnContext(ctx, "agent API shutdown", "err", err)
		}
	})
	logger.InfoContext(ctx, "agent API listening", "addr", ln.Addr().String())
	return nil
}

// reloader loads the file again for a reload. Settings a reload cannot
// change (Kafka, group, API, logging) are reported and kept.
func reloader(started config.Config, hostname string, logger *slog.Logger) reload.Load {
	return func(path string) (*handoff.Table, []string, error) {
		cfg, err := config.Load(path, hostname)
		if err != nil {
			return nil, nil, err
		}
		table, err := cfg.Table()
		if err != nil {
			return nil, nil, err
		}
		if !reflect.DeepEqual(cfg.Kafka, started.Kafka) || cfg.Group != started.Group ||
			cfg.TransactionalID != started.TransactionalID || cfg.API != started.API ||
			cfg.TransactionTimeout != started.TransactionTimeout || cfg.PreCall != started.PreCall ||
			cfg.Log != started.Log || cfg.Reload != started.Reload || cfg.Metrics != started.Metrics ||
			cfg.Tracing != started.Tracing || cfg.MaxCallDuration != started.MaxCallDuration || cfg.MaxCalls != started.MaxCalls ||
			!reflect.DeepEqual(cfg.Webhooks, started.Webhooks) {
			logger.Warn("config reload: kafka, group, transactional_id, transaction_timeout, api, precall, log, reload, max_call_duration, max_calls and webhooks settings need a restart; kept as started")
		}
		return table, cfg.Warnings(), nil
	}
}

// streamHistory is how many transitions of each call the view keeps for
// event streams resumed with Last-Event-ID.
const streamHistory = 32

// webhookEndpoints reads each webhook's secret from the environment.
func webhookEndpoints(hooks []config.Webhook) ([]push.Endpoint, error) {
	var out []push.Endpoint
	for i, h := range hooks {
		secret := os.Getenv(h.SecretEnv)
		if secret == "" {
			return nil, fmt.Errorf("webhooks[%d].secret_env: $%s holds no secret", i, h.SecretEnv)
		}
		out = append(out, push.Endpoint{Name: h.Name, URL: h.URL, Secret: []byte(secret), Events: h.Events,
			MaxInFlight: h.MaxInFlight, MaxQueue: h.MaxQueue, Timeout: h.Timeout, MaxRetry: h.MaxRetry})
	}
	return out, nil
}

// webhookClient posts webhooks: no redirect is followed (the signed body
// goes only where configured); each POST is bounded by its context.
func webhookClient() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
