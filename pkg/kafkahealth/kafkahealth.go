// Package kafkahealth answers the operational questions about a service's
// Kafka client: can it reach the cluster (for /readyz), and how far behind
// is its consumer group (the consumer lag gauge).
package kafkahealth

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Reachability bounds of the readiness check.
const (
	// probeTimeout bounds one metadata request.
	probeTimeout = time.Second
	// cacheFor keeps a probe's answer, so a busy prober does not load
	// the brokers.
	cacheFor = 3 * time.Second
)

// Reach checks that the cluster answers a metadata request.
type Reach struct {
	adm *kadm.Client
	now func() time.Time

	mu     sync.Mutex
	at     time.Time
	result error
}

// NewReach checks reachability through cl (not closed by Reach).
func NewReach(cl *kgo.Client) *Reach {
	return &Reach{adm: kadm.NewClient(cl), now: time.Now}
}

// Check returns nil when the brokers answered a metadata request (no
// topics: the cheapest one) within a second, in the last few seconds.
func (r *Reach) Check(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.at.IsZero() && r.now().Sub(r.at) < cacheFor {
		return r.result
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	_, err := r.adm.BrokerMetadata(pctx)
	if err != nil {
		err = fmt.Errorf("kafka not reachable: %w", err)
	}
	r.at, r.result = r.now(), err
	return err
}

// Joined reports, for /readyz, whether cl is a member of its consumer
// group yet.
func Joined(cl *kgo.Client, group string) func(context.Context) error {
	return func(context.Context) error {
		if _, gen := cl.GroupMetadata(); gen < 0 {
			return fmt.Errorf("not in consumer group %s yet", group)
		}
		return nil
	}
}

// NewLagGauge returns the consumer lag gauge of a service, labelled by
// topic and partition; register it on the service's registry.
func NewLagGauge(service string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "baton_" + service + "_consumer_lag",
		Help: "Records behind the end of each partition for the service's consumer group (committed offsets, sampled).",
	}, []string{"topic", "partition"})
}

// SampleLag sets gauge to group's lag every interval until ctx ends.
// Errors are logged at debug: lag is best effort and a broker outage shows
// in /readyz.
func SampleLag(ctx context.Context, cl *kgo.Client, group string, gauge *prometheus.GaugeVec, every time.Duration, logger *slog.Logger) {
	adm := kadm.NewClient(cl)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := sampleOnce(ctx, adm, group, gauge); err != nil && ctx.Err() == nil {
			logger.DebugContext(ctx, "sample consumer lag", "group", group, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func sampleOnce(ctx context.Context, adm *kadm.Client, group string, gauge *prometheus.GaugeVec) error {
	lctx, cancel := context.WithTimeout(ctx, 2*probeTimeout)
	defer cancel()
	lags, err := adm.Lag(lctx, group)
	if err != nil {
		return fmt.Errorf("lag of group %s: %w", group, err)
	}
	gl, ok := lags[group]
	if !ok {
		return fmt.Errorf("lag of group %s: not described", group)
	}
	if err := gl.Error(); err != nil {
		return fmt.Errorf("lag of group %s: %w", group, err)
	}
	for _, l := range gl.Lag.Sorted() {
		if l.Err != nil {
			continue
		}
		gauge.WithLabelValues(l.Topic, strconv.Itoa(int(l.Partition))).Set(float64(l.Lag))
	}
	return nil
}
