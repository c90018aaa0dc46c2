package main

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/services/transfer/internal/config"
	"github.com/baton-voice/baton/services/transfer/internal/health"
)

// startHealth runs the scheduled destination checks (health_checks) until
// the returned stop is called; with the checks off it does nothing.
// tlsClient is the dialler's TLS config (nil: system roots).
func startHealth(ctx context.Context, cfg config.Config, tlsClient *tls.Config, reg prometheus.Registerer, logger *slog.Logger) (stop func(), err error) {
	if !cfg.HealthChecks.Enabled() {
		return func() {}, nil
	}
	checker, err := health.New(cfg.HealthChecks, cfg.HealthRoute, tlsClient, health.NewMetrics(reg), logger)
	if err != nil {
		return nil, err
	}
	var pub *health.KafkaPublisher
	if cfg.HealthChecks.Publish {
		pub, err = health.NewKafkaPublisher(kafka.ClientOpts(cfg.Kafka, logger), cfg.Kafka.Topics.Calls,
			cfg.InstanceName(), cfg.Kafka.ProduceTimeout)
		if err != nil {
			return nil, errors.Join(err, checker.Close())
		}
		checker.SetPublisher(pub)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = checker.Run(ctx) // returns when ctx ends
	}()
	logger.InfoContext(ctx, "destination health checks on", "interval", cfg.HealthChecks.Interval.String(),
		"destinations", len(cfg.HealthChecks.Destinations), "publish", cfg.HealthChecks.Publish)
	return func() {
		cancel()
		<-done
		if pub != nil {
			pub.Close()
		}
		if err := checker.Close(); err != nil {
			logger.WarnContext(ctx, "close health checks", "err", err)
		}
	}, nil
}
