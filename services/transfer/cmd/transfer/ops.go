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
func serveOps(ctx context.Context, wg *sync.WaitGroup, listen string, reg *prometheus.Registry, cl *kgo.Client,
	sipClient *uac.Client, group string, logger *slog.Logger) error {
	lag := kafkahealth.NewLagGauge("transfer")
	reg.MustRegister(lag)
	reach := kafkahealth.NewReach(cl)
	joined := func(context.Context) error {
		if _, gen := cl.GroupMetadata(); gen < 0 {
			return errors.New("not in consumer group " + group + " yet")
		}
		return nil
	}
	sipBound := func(context.Context) error {
		if sipClient.Addr() == nil {
			return errors.New("sip socket not bound")
		}
		return nil
	}
	srv, err := opshttp.Listen(listen, reg, opshttp.All(reach.Check, joined, sipBound), logger)
	if err != nil {
		return err
	}
	if srv != nil {
		wg.Go(func() {
			if err := srv.Serve(ctx); err != nil {
				logger.ErrorContext(ctx, "metrics server stopped", "err", err)
			}
		})
		logger.InfoContext(ctx, "metrics listening", "addr", srv.Addr(), "url", "http://"+srv.Addr()+"/metrics")
	}
	wg.Go(func() { kafkahealth.SampleLag(ctx, cl, group, lag, lagEvery, logger) })
	return nil
}
