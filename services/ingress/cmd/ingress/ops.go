package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/kafkahealth"
	"github.com/baton-voice/baton/pkg/opshttp"
)

// serveOps serves /metrics, /healthz and /readyz on ops.Listen ("" serves
// nothing). Ready: Kafka answers, the SIP listeners are bound and the
// drain has not begun (sigCtx not done). stop ends the server and waits
// for it.
func serveOps(sigCtx context.Context, ops opshttp.Config, reg *prometheus.Registry, cl *kgo.Client, addrs func() []net.Addr,
	logger *slog.Logger) (stop func(), err error) {
	reach := kafkahealth.NewReach(cl)
	ready := opshttp.All(
		func(context.Context) error {
			if sigCtx.Err() != nil {
				return errors.New("draining")
			}
			return nil
		},
		func(context.Context) error {
			if len(addrs()) == 0 {
				return errors.New("no sip listener bound")
			}
			return nil
		},
		reach.Check)
	// The server outlives the signal: /metrics stays up while calls drain.
	ctx, cancel := context.WithCancel(context.WithoutCancel(sigCtx))
	var wg sync.WaitGroup
	if err := opshttp.Start(ctx, &wg, ops, reg, ready, logger); err != nil {
		cancel()
		return func() {}, err
	}
	return func() {
		cancel()
		wg.Wait()
	}, nil
}
