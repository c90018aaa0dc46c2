package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/kafkahealth"
	"github.com/baton-voice/baton/pkg/opshttp"
	"github.com/baton-voice/baton/services/analytics/internal/config"
	"github.com/baton-voice/baton/services/analytics/internal/dashboard"
)

// lagEvery is how often the consumer group's lag is sampled.
const lagEvery = 5 * time.Second

// serveOps serves the dashboard on http.listen (with it /metrics,
// /healthz and /readyz; ready: Kafka answers, the instance is in its
// consumer group and ClickHouse answers) and samples the group's lag,
// until ctx ends; wg waits for both. With no listen address only the lag
// sampler runs.
func serveOps(ctx context.Context, wg *sync.WaitGroup, cfg config.Config, reg *prometheus.Registry, conn driver.Conn,
	cl *kgo.Client, logger *slog.Logger) {
	lag := kafkahealth.NewLagGauge("analytics")
	reg.MustRegister(lag)
	if cfg.HTTP.Listen != "" {
		serveDashboard(ctx, wg, cfg, reg, conn, cl, logger)
	}
	wg.Go(func() { kafkahealth.SampleLag(ctx, cl, cfg.Group, lag, lagEvery, logger) })
}

// serveDashboard serves the dashboard on cfg.HTTP.Listen until ctx ends. A
// listener that cannot be opened is logged and the service goes on without
// the page: rows matter more than charts.
func serveDashboard(ctx context.Context, wg *sync.WaitGroup, cfg config.Config, reg *prometheus.Registry,
	conn driver.Conn, cl *kgo.Client, logger *slog.Logger) {
	l, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		logger.ErrorContext(ctx, "dashboard disabled: listen", "listen", cfg.HTTP.Listen, "err", err)
		return
	}
	logger.InfoContext(ctx, "dashboard listening", "url", "http://"+l.Addr().String()+"/",
		"metrics", "http://"+l.Addr().String()+"/metrics")
	ready := opshttp.All(kafkahealth.NewReach(cl).Check, kafkahealth.Joined(cl, cfg.Group),
		func(ctx context.Context) error {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			if err := conn.Ping(pctx); err != nil {
				return fmt.Errorf("clickhouse ping: %w", err)
			}
			return nil
		})
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)})
	queries, err := dashboard.New(conn).WithContext(cfg.HTTP.Context)
	if err != nil { // config.Validate checked it already
		logger.ErrorContext(ctx, "dashboard disabled", "err", err)
		_ = l.Close()
		return
	}
	h := dashboard.NewHandler(queries, metrics, ready, logger, time.Now)
	if cfg.HTTP.Token != "" {
		h.RequireToken(cfg.HTTP.Token)
	}
	wg.Go(func() {
		if err := dashboard.Serve(ctx, l, h, logger); err != nil {
			logger.ErrorContext(ctx, "dashboard stopped", "err", err)
		}
	})
}
