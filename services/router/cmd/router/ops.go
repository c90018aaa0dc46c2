package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-voice/baton/pkg/kafkahealth"
	"github.com/baton-voice/baton/pkg/opshttp"
	"github.com/baton-voice/baton/services/router/internal/router"
)

// lagEvery is how often the consumer group's lag is sampled.
const lagEvery = 5 * time.Second

// serveOps serves /metrics, /healthz and /readyz (ready: Kafka answers and
// the instance is in its consumer group) and samples the group's lag; both
// stop when ctx ends, and wg waits for them. With no listen address only
// the lag sampler runs, so nothing is served.
func serveOps(ctx context.Context, wg *sync.WaitGroup, ops opshttp.Config, reg *prometheus.Registry, rt *router.Router,
	group string, logger *slog.Logger) error {
	lag := kafkahealth.NewLagGauge("router")
	reg.MustRegister(lag)
	ready := opshttp.All(kafkahealth.NewReach(rt.Client()).Check, kafkahealth.Joined(rt.Client(), group))
	if err := opshttp.Start(ctx, wg, ops, reg, ready, logger); err != nil {
		return err
	}
	wg.Go(func() { kafkahealth.SampleLag(ctx, rt.Client(), group, lag, lagEvery, logger) })
	return nil
}
