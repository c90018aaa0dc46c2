package push

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// Webhook headers.
const (
	// HeaderSignature is "t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">"
	// keyed with the endpoint's secret.
	HeaderSignature = "Baton-Signature"
	// HeaderIdempotencyKey is the transition's id: a receiver that sees it
	// twice (a retry, a failover) handles it once.
	HeaderIdempotencyKey = "Idempotency-Key"
)

// Endpoint is one webhook receiver.
type Endpoint struct {
	// Name labels the endpoint's metrics and logs.
	Name string
	URL  string
	// Secret keys the signature.
	Secret []byte
	// Events are the transition types sent; empty sends every type.
	Events []string
	// MaxInFlight is how many POSTs may be under way at once. A call's
	// transitions always go one at a time, in order.
	MaxInFlight int
	// MaxQueue bounds the transitions waiting; beyond it the oldest is
	// dropped (counted).
	MaxQueue int
	// Timeout bounds one POST.
	Timeout time.Duration
	// MaxRetry bounds the retries of one transition, from its first try.
	MaxRetry time.Duration
}

// Sign returns the Baton-Signature value of body sent at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// WebhookMetrics are the webhooks' Prometheus metrics. A nil
// *WebhookMetrics counts nothing.
type WebhookMetrics struct {
	// Deliveries counts transitions by endpoint and result: delivered,
	// rejected (a 4xx other than 408 and 429: not retried), gave_up
	// (max_retry passed), abandoned (shutdown).
	Deliveries *prometheus.CounterVec
	// Retries counts failed tries that were retried, by endpoint.
	Retries *prometheus.CounterVec
	// Dropped counts transitions dropped from a full queue (the oldest),
	// by endpoint.
	Dropped *prometheus.CounterVec
	// Queued is the transitions waiting, by endpoint.
	Queued *prometheus.GaugeVec
}

// NewWebhookMetrics registers the webhooks' metrics on reg.
func NewWebhookMetrics(reg prometheus.Registerer) *WebhookMetrics {
	m := &WebhookMetrics{
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_router_webhook_deliveries_total",
			Help: "Webhook transitions by endpoint and result (delivered, rejected, gave_up, abandoned).",
		}, []string{"endpoint", "result"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_router_webhook_retries_total", Help: "Webhook tries that failed and were retried, by endpoint.",
		}, []string{"endpoint"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_router_webhook_dropped_total",
			Help: "Webhook transitions dropped from a full queue (the oldest first), by endpoint.",
		}, []string{"endpoint"}),
		Queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "baton_router_webhook_queued", Help: "Webhook transitions waiting to be sent, by endpoint.",
		}, []string{"endpoint"}),
	}
	reg.MustRegister(m.Deliveries, m.Retries, m.Dropped, m.Queued)
	return m
}

// Webhooks sends the owner fold's committed transitions to the
// endpoints. It is the fold's handoff.Sink: Transitions only queues (a
// bounded queue per endpoint, the oldest dropped when full), so the fold
// and its transaction never wait for a receiver; Run sends.
type Webhooks struct {
	endpoints []*endpoint
	client    *http.Client
	logger    *slog.Logger
	now       func() time.Time
	metrics   *WebhookMetrics
	// initial is the first retry's wait.
	initial time.Duration
}

type endpoint struct {
	Endpoint
	events map[string]bool
	lanes  []*lane
}

// lane sends the transitions of the calls that hash to it, one at a
// time: a call's transitions keep their order.
type lane struct {
	mu    sync.Mutex
	queue []handoff.Transition
	max   int
	wake  chan struct{}
}

// NewWebhooks sends to eps with client (its own timeouts are per POST:
// Endpoint.Timeout), stamping signatures with now.
func NewWebhooks(eps []Endpoint, client *http.Client, logger *slog.Logger, now func() time.Time, metrics *WebhookMetrics) *Webhooks {
	w := &Webhooks{client: client, logger: logger, now: now, metrics: metrics, initial: 200 * time.Millisecond}
	for _, ep := range eps {
		e := &endpoint{Endpoint: ep}
		if len(ep.Events) > 0 {
			e.events = map[string]bool{}
			for _, t := range ep.Events {
				e.events[t] = true
			}
		}
		lanes := max(ep.MaxInFlight, 1)
		per := max((ep.MaxQueue+lanes-1)/lanes, 1)
		for range lanes {
			e.lanes = append(e.lanes, &lane{max: per, wake: make(chan struct{}, 1)})
		}
		w.endpoints = append(w.endpoints, e)
	}
	return w
}

// Transitions is handoff.Sink: it queues each transition for every
// endpoint that wants its type, never blocking.
func (w *Webhooks) Transitions(ts []handoff.Transition) {
	for _, e := range w.endpoints {
		for _, t := range ts {
			if e.events != nil && !e.events[t.Type] {
				continue
			}
			h := fnv.New32a()
			_, _ = h.Write([]byte(t.CallID)) // never fails
			l := e.lanes[h.Sum32()%uint32(len(e.lanes))]
			if l.push(t) {
				w.dropped(e)
			} else if w.metrics != nil {
				w.metrics.Queued.WithLabelValues(e.Name).Inc()
			}
		}
	}
}

func (w *Webhooks) dropped(e *endpoint) {
	w.logger.Warn("webhook queue full; oldest transition dropped", "endpoint", e.Name)
	if w.metrics != nil {
		w.metrics.Dropped.WithLabelValues(e.Name).Inc()
	}
}

// push queues t, dropping the oldest when full (it reports that).
func (l *lane) push(t handoff.Transition) (dropped bool) {
	l.mu.Lock()
	if len(l.queue) >= l.max {
		l.queue = l.queue[1:]
		dropped = true
	}
	l.queue = append(l.queue, t)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return dropped
}

func (l *lane) pop() (handoff.Transition, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queue) == 0 {
		return handoff.Transition{}, false
	}
	t := l.queue[0]
	l.queue = l.queue[1:]
	return t, true
}

// Run sends until ctx ends; what is still queued then is dropped (the
// next owner pushes the last moments again, see router.DefaultRedeliver).
func (w *Webhooks) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, e := range w.endpoints {
		for _, l := range e.lanes {
			wg.Go(func() { w.runLane(ctx, e, l) })
		}
	}
	wg.Wait()
}

func (w *Webhooks) runLane(ctx context.Context, e *endpoint, l *lane) {
	for {
		t, ok := l.pop()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-l.wake:
				continue
			}
		}
		if w.metrics != nil {
			w.metrics.Queued.WithLabelValues(e.Name).Dec()
		}
		w.deliver(ctx, e, t)
	}
}

// errRejected is a 4xx answer that a retry cannot change.
var errRejected = errors.New("rejected")

// deliver POSTs t to e, retrying with exponential backoff for up to
// MaxRetry.
func (w *Webhooks) deliver(ctx context.Context, e *endpoint, t handoff.Transition) {
	body, err := json.Marshal(PayloadOf(t))
	if err != nil {
		w.logger.ErrorContext(ctx, "encode webhook body", "endpoint", e.Name, "call_id", t.CallID, "err", err)
		return
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = w.initial, 30*time.Second
	tries := 0
	_, err = backoff.Retry(ctx, func() (struct{}, error) {
		tries++
		if tries > 1 && w.metrics != nil {
			w.metrics.Retries.WithLabelValues(e.Name).Inc()
		}
		return struct{}{}, w.post(ctx, e, t, body)
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(e.MaxRetry))
	result := "delivered"
	switch {
	case err == nil:
	case ctx.Err() != nil:
		result = "abandoned"
	case errors.Is(err, errRejected):
		result = "rejected"
	default:
		result = "gave_up"
	}
	if w.metrics != nil {
		w.metrics.Deliveries.WithLabelValues(e.Name, result).Inc()
	}
	if err != nil {
		w.logger.WarnContext(ctx, "webhook not delivered", "endpoint", e.Name, "call_id", t.CallID, "transition", t.Type,
			"event_id", t.ID, "result", result, "tries", tries, "err", err)
	}
}

// post makes one try.
func (w *Webhooks) post(ctx context.Context, e *endpoint, t handoff.Transition, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, e.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, bytes.NewReader(body))
	if err != nil {
		return backoff.Permanent(fmt.Errorf("webhook request: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "baton-router")
	req.Header.Set(HeaderSignature, Sign(e.Secret, w.now(), body))
	req.Header.Set(HeaderIdempotencyKey, t.ID)
	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("post %s: %w", e.Name, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // reuse the connection
	if err := resp.Body.Close(); err != nil {
		return fmt.Errorf("post %s: close body: %w", e.Name, err)
	}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout &&
		resp.StatusCode != http.StatusTooManyRequests:
		return backoff.Permanent(fmt.Errorf("post %s: %w: HTTP %d", e.Name, errRejected, resp.StatusCode))
	default:
		return fmt.Errorf("post %s: HTTP %d", e.Name, resp.StatusCode)
	}
}
