package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/kafkahealth"
	"github.com/baton-voice/baton/pkg/opshttp"
	"github.com/baton-voice/baton/services/transfer/internal/uac"
)

// lagEvery is how often the consumer group's lag is sampled.
const lagEvery = 5 * time.Second

// serveOps serves /metrics, /healthz and /readyz (ready: Kafka answers,
// the instance is in its consumer group, the SIP socket is bound) and
// samples the group's lag, until ctx ends; wg waits for both. With no
// listen address only the lag sampler runs.
func serveOps(ctx context.Context, wg *sync.WaitGroup, ops opshttp.Config, reg *prometheus.Registry, cl *kgo.Client,
	sipClient *uac.Client, group string, logger *slog.Logger) error {
	lag := kafkahealth.NewLagGauge("transfer")
	reg.MustRegister(lag)
	sipBound := func(context.Context) error {
		if sipClient.Addr() == nil {
			return errors.New("sip socket not bound")
		}
		return nil
	}
	ready := opshttp.All(kafkahealth.NewReach(cl).Check, kafkahealth.Joined(cl, group), sipBound)
	if err := opshttp.Start(ctx, wg, ops, reg, ready, logger); err != nil {
		return err
	}
	wg.Go(func() { kafkahealth.SampleLag(ctx, cl, group, lag, lagEvery, logger) })
	return nil
}
