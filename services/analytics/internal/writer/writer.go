// Package writer is the analytics stage's consumer: it reads every Baton
// topic in one consumer group and writes ClickHouse. The service's main
// connects to ClickHouse, migrates, creates the Kafka client and the
// topics, and serves the dashboard; a Writer only consumes and writes.
//
// Records are gathered across polls into batches (Batch.MaxRows records or
// Batch.MaxWait). Delivery is at least once from Kafka and exactly once in
// ClickHouse: a batch's offsets are committed only after all of its rows
// were inserted,
// and every table is a ReplacingMergeTree keyed by event or command id, so
// a batch inserted again after a crash or a retry adds no row that FINAL
// counts. A record that cannot be decoded goes to the dead-letter topic
// and never blocks its partition.
package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/hops"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/services/analytics/internal/config"
)

// Headers added to a dead-lettered record, next to its own.
const (
	HeaderDLQError     = "dlq_error"
	HeaderDLQTopic     = "dlq_topic"
	HeaderDLQPartition = "dlq_partition"
	HeaderDLQOffset    = "dlq_offset"
)

// insertTimeout bounds the inserts of one batch. It also bounds how long
// shutdown waits for the batch under way.
const insertTimeout = 30 * time.Second

// commitTimeout bounds the offset commit that follows a written batch.
const commitTimeout = 5 * time.Second

// insertFunc writes one batch's rows; it must be idempotent.
type insertFunc func(ctx context.Context, r *rows) error

// Options are a Writer's settings besides its client and connection.
type Options struct {
	// Config supplies the batch bounds, the retry pauses, the dead-letter
	// topic and the produce timeout; the group and topics are logged.
	Config config.Config
	// Metrics are the writer's metrics (NewMetrics); nil: metrics of its
	// own, registered nowhere.
	Metrics *Metrics
	// Tracer makes every batch a span linked to the spans of its records'
	// traceparents; nil: no spans.
	Tracer trace.Tracer
	// Hops, when set, records when each transfer outcome was polled and
	// when its row was written (bench/handoff); nil records nothing.
	Hops *hops.Log
}

// Writer consumes Baton's topics into ClickHouse.
type Writer struct {
	cfg     config.Config
	cl      *kgo.Client
	insert  insertFunc
	logger  *slog.Logger
	metrics *Metrics
	tracer  trace.Tracer
	hops    *hops.Log
}

// ClientOpts are the options of the group consumer a Writer reads with:
// a Writer needs a client made with them.
func ClientOpts(k kafka.Config, group string, logger *slog.Logger) []kgo.Opt {
	opts := append(kafka.ClientOpts(k, logger), kafka.ConsumerOpts(group, k.Topics.All()...)...)
	opts = append(opts, kafka.StaticMember(k)...)
	return append(opts,
		// A batch gathers records across polls; no rebalance may take a
		// partition away between a poll and the commit of its batch.
		// flush calls AllowRebalance after every commit.
		kgo.BlockRebalanceOnPoll(),
		// Fetch up to a batch's worth per partition request: the default
		// 1 MiB holds only a few thousand events.
		kgo.FetchMaxPartitionBytes(16<<20),
	)
}

// New returns a writer that consumes with cl (made with ClientOpts; its
// owner closes it after Run returned) and inserts through conn into the
// migrated database. It also produces dead letters with cl.
func New(cl *kgo.Client, conn driver.Conn, opts Options, logger *slog.Logger) *Writer {
	return newWriter(cl, func(ctx context.Context, r *rows) error { return insert(ctx, conn, r) }, opts, logger)
}

// newWriter is New with the inserts done by ins.
func newWriter(cl *kgo.Client, ins insertFunc, opts Options, logger *slog.Logger) *Writer {
	m := opts.Metrics
	if m == nil {
		m = NewMetrics(prometheus.NewRegistry())
	}
	return &Writer{cfg: opts.Config, cl: cl, insert: ins, logger: logger, metrics: m, tracer: opts.Tracer, hops: opts.Hops}
}

// Run consumes until ctx ends. The batch under way when ctx ends is
// inserted and committed before Run returns. Run returns nil when it
// stopped because ctx ended.
func (w *Writer) Run(ctx context.Context) error {
	w.logger.InfoContext(ctx, "ready", "group", w.cfg.Group, "topics", w.cfg.Kafka.Topics.All(),
		"dead_letter_topic", w.cfg.DeadLetterTopic, "batch_max_rows", w.cfg.Batch.MaxRows, "batch_max_wait", w.cfg.Batch.MaxWait)
	return w.consume(ctx)
}

// errStopped ends consume when ctx ended while a batch could not be
// written: the batch stays uncommitted and is read again after a restart.
var errStopped = errors.New("stopped before the batch was written")

// consume gathers records across polls into batches of at most
// Batch.MaxRows records, or what arrived within Batch.MaxWait of a batch's
// first record, writes each batch (retrying until it is written), and then
// commits exactly its records. Polling stops while a batch is retried, so
// a partition's records are written in order and none is skipped. When ctx
// ends, the batch under way is written and committed before consume
// returns nil.
func (w *Writer) consume(ctx context.Context) error {
	maxRows, maxWait := w.cfg.Batch.MaxRows, w.cfg.Batch.MaxWait
	// With BlockRebalanceOnPoll, leaving the group (Close) waits for this.
	defer w.cl.AllowRebalance()
	var (
		pending  []*kgo.Record
		deadline time.Time
	)
	for {
		if ctx.Err() == nil {
			pollCtx, cancel := ctx, context.CancelFunc(func() {})
			if len(pending) > 0 {
				pollCtx, cancel = context.WithDeadline(ctx, deadline)
			}
			fetches := w.cl.PollRecords(pollCtx, maxRows-len(pending))
			cancel()
			if fetches.IsClientClosed() {
				return errors.New("kafka client closed")
			}
			fetches.EachError(func(topic string, partition int32, err error) {
				if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
					return
				}
				w.logger.WarnContext(ctx, "fetch error", "topic", topic, "partition", partition, "err", err)
			})
			if recs := fetches.Records(); len(recs) > 0 {
				if w.hops.On() {
					w.markHops(hops.AnalyticsPolled, recs)
				}
				if len(pending) == 0 {
					deadline = time.Now().Add(maxWait)
				}
				pending = append(pending, recs...)
			}
		}
		stopping := ctx.Err() != nil
		if len(pending) > 0 && (len(pending) >= maxRows || !time.Now().Before(deadline) || stopping) {
			err := w.flush(ctx, pending)
			if errors.Is(err, errStopped) {
				w.logger.WarnContext(ctx, "batch not written at shutdown; it will be read again", "records", len(pending))
				return nil
			}
			if err != nil {
				return err
			}
			pending = nil
		}
		if stopping {
			return nil
		}
	}
}

// flush writes one batch, retrying with a doubling pause while it fails,
// then commits its records. It returns errStopped if ctx ended before the
// batch could be written.
func (w *Writer) flush(ctx context.Context, records []*kgo.Record) error {
	r, dead := build(records)
	ctx, span := w.startBatchSpan(ctx, records)
	defer span.End()
	pause := w.cfg.RetryPause
	for attempt := 1; ; attempt++ {
		err := w.write(ctx, r, dead)
		if err == nil {
			break
		}
		span.AddEvent("write failed", trace.WithAttributes(attribute.String("error", err.Error())))
		w.metrics.retries.Inc()
		w.logger.ErrorContext(ctx, "write batch; retrying", "records", len(records), "attempt", attempt,
			"retry_in", pause, "err", err)
		select {
		case <-ctx.Done():
			return errStopped
		case <-time.After(pause):
		}
		pause = min(2*pause, w.cfg.RetryMaxPause)
	}
	// A written batch is committed even when shutdown began meanwhile, so
	// a restart does not write it again.
	commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	err := w.cl.CommitRecords(commitCtx, records...)
	cancel()
	if err != nil {
		// The rows are in; the records will be read and written again, and
		// their keys make that change nothing.
		w.logger.WarnContext(ctx, "commit offsets", "records", len(records), "err", err)
	}
	// Rebalances wait while a batch is gathered and written, so a batch
	// never holds records of a partition this member no longer owns.
	w.cl.AllowRebalance()
	if w.hops.On() {
		w.markHops(hops.AnalyticsWritten, records)
	}
	w.metrics.batches.Inc()
	w.metrics.records.Add(float64(len(records)))
	w.metrics.events.Add(float64(r.len()))
	w.metrics.lastBatch.SetToCurrentTime()
	w.metrics.batchRecords.Observe(float64(len(records)))
	w.metrics.inserted(r)
	w.logger.DebugContext(ctx, "batch written", "records", len(records), "events", r.len(), "dead_letters", len(dead))
	return nil
}

// markHops records point now for the transfer outcomes among records.
func (w *Writer) markHops(point string, records []*kgo.Record) {
	now := time.Now()
	for _, rec := range records {
		for _, h := range rec.Headers {
			if h.Key == events.HeaderType && string(h.Value) == events.TypeTransferOutcome {
				w.hops.Mark(point, string(rec.Key), now)
			}
		}
	}
}

// write inserts one batch's rows and produces its dead letters. Shutdown
// does not cut it short: it runs on a context that outlives ctx, bounded
// by insertTimeout.
func (w *Writer) write(ctx context.Context, r *rows, dead []deadLetter) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), insertTimeout)
	defer cancel()
	// Rows first: inserting again is harmless, producing a dead letter
	// again is not.
	began := time.Now()
	err := w.insert(ctx, r)
	w.metrics.insertTime.Observe(time.Since(began).Seconds())
	if err != nil {
		return fmt.Errorf("insert %d events: %w", r.len(), err)
	}
	if len(dead) > 0 {
		if err := w.deadLetter(ctx, dead); err != nil {
			return err
		}
	}
	return nil
}

// deadLetter produces the records that cannot be written to the
// dead-letter topic, with their key, value and headers, plus why and
// where they came from.
func (w *Writer) deadLetter(ctx context.Context, dead []deadLetter) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Kafka.ProduceTimeout)
	defer cancel()
	out := make([]*kgo.Record, len(dead))
	for i, d := range dead {
		headers := make([]kgo.RecordHeader, 0, len(d.rec.Headers)+4)
		headers = append(headers, d.rec.Headers...)
		headers = append(headers,
			kgo.RecordHeader{Key: HeaderDLQError, Value: []byte(d.err.Error())},
			kgo.RecordHeader{Key: HeaderDLQTopic, Value: []byte(d.rec.Topic)},
			kgo.RecordHeader{Key: HeaderDLQPartition, Value: []byte(strconv.FormatInt(int64(d.rec.Partition), 10))},
			kgo.RecordHeader{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(d.rec.Offset, 10))},
		)
		out[i] = &kgo.Record{
			Topic:     w.cfg.DeadLetterTopic,
			Key:       d.rec.Key,
			Value:     d.rec.Value,
			Headers:   headers,
			Timestamp: d.rec.Timestamp,
		}
	}
	if err := w.cl.ProduceSync(ctx, out...).FirstErr(); err != nil {
		return fmt.Errorf("produce %d dead letters to %s: %w", len(out), w.cfg.DeadLetterTopic, err)
	}
	for _, d := range dead {
		w.metrics.deadLettered.Inc()
		w.logger.WarnContext(ctx, "record dead-lettered", "call_id", string(d.rec.Key), "topic", d.rec.Topic, "partition", d.rec.Partition,
			"offset", d.rec.Offset, "dead_letter_topic", w.cfg.DeadLetterTopic, "err", d.err)
	}
	return nil
}

// maxSpanLinks bounds the links of a batch span: a batch holds up to
// tens of thousands of records.
const maxSpanLinks = 128

// startBatchSpan starts the span of one batch, linked to the spans of the
// first maxSpanLinks records that carry a traceparent. Without a tracer it
// returns a span that records nothing.
func (w *Writer) startBatchSpan(ctx context.Context, records []*kgo.Record) (context.Context, trace.Span) {
	if w.tracer == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	var links []trace.Link
	for _, rec := range records {
		if len(links) == maxSpanLinks {
			break
		}
		for _, h := range rec.Headers {
			if h.Key != events.HeaderTraceParent {
				continue
			}
			if l, ok := tracing.Link(string(h.Value)); ok {
				l.Attributes = []attribute.KeyValue{attribute.String("call_id", string(rec.Key))}
				links = append(links, l)
			}
		}
	}
	return w.tracer.Start(ctx, "analytics batch", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(links...),
		trace.WithAttributes(attribute.Int("records", len(records))))
}
