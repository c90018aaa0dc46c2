// Package router runs the router's consume-transform-produce loop: it reads
// call facts and transfer outcomes, folds them, and writes the handoff
// commands they cause in the same Kafka transaction that commits the
// consumed offsets. A batch is either wholly done (commands visible to
// read-committed consumers, offsets advanced) or not done at all.
package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/hops"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/tracing"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// Source is the ce_source of the router's records.
const Source = "baton/router"

// endTimeout bounds producing and ending one transaction. It outlives
// shutdown (the context is detached) so an in-flight batch is finished.
const endTimeout = 30 * time.Second

// retryPause is the wait after an aborted transaction before the batch is
// polled and handled again.
const retryPause = 500 * time.Millisecond

// maxFailPause caps the growing wait after transactions that could not
// begin or end (the broker or its coordinator unreachable).
const maxFailPause = 5 * time.Second

// Options configures a Router.
type Options struct {
	Kafka kafka.Config
	// Group is the consumer group id.
	Group string
	// TransactionalID is unique per instance.
	TransactionalID string
	// TransactionTimeout overrides franz-go's default when positive. (The
	// session timeout is Kafka.SessionTimeout, set by kafka.ClientOpts.)
	TransactionTimeout time.Duration
	// Started, when set, hears of every CallStarted of a batch once the
	// batch committed (the pre-call fetcher). It must not block.
	Started StartWatcher
	// Metrics, when set, counts committed batches.
	Metrics *Metrics
	// Tracer, when set, makes each decision a child span of its trigger's
	// trace; without it the trigger's traceparent is copied as it is.
	Tracer trace.Tracer
	// EndTimeout bounds producing and ending one transaction (0: 30 s).
	EndTimeout time.Duration
	// RestoreLookback is how far back a newly assigned partition's log is
	// re-read to rebuild its calls' state (0: DefaultRestoreLookback).
	RestoreLookback time.Duration
	// MaxCallDuration evicts a call of this instance's partitions that had
	// no event for this long, with a CallEvicted on the calls topic (0:
	// never).
	MaxCallDuration time.Duration
	// SweepInterval is how often idle calls are looked for (0:
	// a tenth of MaxCallDuration, at most DefaultSweepInterval).
	SweepInterval time.Duration
	// Now is the clock evictions measure idleness by (nil: time.Now).
	Now func() time.Time
	// Redeliver is how far back a restore pushes again the transitions of
	// the history it re-folds (0: DefaultRedeliver).
	Redeliver time.Duration
	// Hops, when set, records when each decision's trigger was polled,
	// decided and committed (bench/handoff); nil records nothing.
	Hops *hops.Log
}

// StartWatcher hears of calls that started, after their batch committed.
type StartWatcher interface {
	Started(ev events.Event)
}

// Router owns a transactional group session and the fold it feeds.
type Router struct {
	sess    *kgo.GroupTransactSession
	started StartWatcher
	fold    *handoff.Fold
	topic   string
	// callsTopic takes the decisions that are facts of the call for
	// ingress (AgentSelected); every other decision goes to topic.
	callsTopic string
	logger     *slog.Logger
	metrics    *Metrics
	tracer     trace.Tracer
	tally      tally
	hops       *hops.Log
	// polled is when the batch being handled was polled (hops only).
	polled time.Time
	// endTimeout bounds producing and ending one transaction.
	endTimeout time.Duration
	// restore rebuilds the state of partitions assigned to this instance
	// before their records are handled.
	restore *restorer
	// evict finds and evicts the idle calls of this instance's partitions.
	evict *evictor
	// abortBeforeEnd, when set, decides after the batch's records are
	// produced whether to abort the transaction instead of committing it.
	// It is the one test seam left in the router (set only by
	// TestAbortedBatchIsHandledAgain): a broker-side fault (kfake's
	// ControlKey) cannot let a transaction's records be written and then
	// make the client abort it; failing EndTxn leaves the outcome unknown
	// to the client, which is a different path (TestRouterRidesOut...).
	abortBeforeEnd func(produced []*kgo.Record) bool
}

// New connects a transactional group session. Close it when done.
func New(opts Options, fold *handoff.Fold, logger *slog.Logger) (*Router, error) {
	kopts := kafka.ClientOpts(opts.Kafka, logger)
	kopts = append(kopts, kafka.ConsumerOpts(opts.Group, opts.Kafka.Topics.Calls, opts.Kafka.Topics.Transfers)...)
	kopts = append(kopts, kafka.StaticMember(opts.Kafka)...)
	kopts = append(kopts,
		// Commands and consumed offsets commit in one transaction; the id
		// is unique per instance so a restarted instance fences its own
		// unfinished transaction. (RequireStableFetchOffsets is not set:
		// franz-go v1.22 always requires stable offsets, KIP-447, and the
		// option is a deprecated no-op.)
		kgo.TransactionalID(opts.TransactionalID),
		// A transaction ends right after its batch is produced; lingering
		// only delays the commit. Measured with bench/router/run.sh: p50 at
		// 1000 requests/s went from 41 ms to 10 ms.
		kgo.ProducerLinger(0),
	)
	if opts.TransactionTimeout > 0 {
		// How long a dead instance's open transaction blocks its partitions.
		kopts = append(kopts, kgo.TransactionTimeout(opts.TransactionTimeout))
	}
	lookback := opts.RestoreLookback
	if lookback <= 0 {
		lookback = DefaultRestoreLookback
	}
	rs := &restorer{
		clientOpts: append(kafka.ClientOpts(opts.Kafka, logger), kgo.FetchIsolationLevel(kgo.ReadCommitted())),
		group:      opts.Group, topics: []string{opts.Kafka.Topics.Calls, opts.Kafka.Topics.Transfers},
		lookback: lookback, redeliver: cmp.Or(opts.Redeliver, DefaultRedeliver), logger: logger,
		pending: map[int32]struct{}{}, folded: map[string]map[int32]int64{},
	}
	kopts = append(kopts, kgo.OnPartitionsAssigned(rs.assigned), kgo.OnPartitionsRevoked(rs.revoked),
		kgo.OnPartitionsLost(rs.revoked))
	sess, err := kgo.NewGroupTransactSession(kopts...)
	if err != nil {
		return nil, fmt.Errorf("new transactional session %s: %w", opts.TransactionalID, err)
	}
	r := &Router{sess: sess, started: opts.Started, fold: fold, topic: opts.Kafka.Topics.Handoffs, callsTopic: opts.Kafka.Topics.Calls, logger: logger,
		metrics: opts.Metrics, tracer: opts.Tracer, endTimeout: endTimeout, restore: rs,
		evict: newEvictor(opts, rs, logger), hops: opts.Hops}
	if opts.EndTimeout > 0 {
		r.endTimeout = opts.EndTimeout
	}
	return r, nil
}

// Client is the session's client, for topic creation at start. It must
// not be used to produce or manage transactions.
func (r *Router) Client() *kgo.Client { return r.sess.Client() }

// Close leaves the group and closes the client.
func (r *Router) Close() { r.sess.Close() }

// Run handles batches until ctx ends. A batch under way when ctx ends is
// finished and committed first. A transaction that cannot begin or end (a
// broker outage, a coordinator moving) is rolled back and counted, and the
// batch is polled again after a pause that grows to maxFailPause, so the
// router rides an outage out instead of exiting. It returns an error only
// when the transactional producer can no longer be used: fenced by a newer
// instance with its transactional id, not authorized, or closed.
func (r *Router) Run(ctx context.Context) error {
	// Fence this instance's previous run (the same transactional id) at
	// once. A run killed inside a transaction leaves it open, and until
	// the broker's transaction timeout (40 s by default) it holds the
	// partitions it wrote: read_committed readers (transfer, taking the
	// commands) stop at it, and so does this instance's stable offset
	// fetch. Loading the producer id sends InitProducerID, which aborts
	// it; otherwise that happened only at the first record this run
	// produced, after the restore that fetch blocks.
	if _, _, err := r.sess.Client().ProducerID(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("fence the unfinished transactions of a previous run: %w", err)
	}
	fails := backoff.NewExponentialBackOff()
	fails.InitialInterval, fails.MaxInterval = 100*time.Millisecond, maxFailPause
	failed := 0
	for {
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if r.evict.on() {
			// Wake for the eviction sweep even when nothing comes.
			pollCtx, cancel = context.WithTimeout(ctx, r.evict.every)
		}
		fetches := r.sess.PollFetches(pollCtx)
		cancel()
		if r.hops.On() {
			r.polled = time.Now()
		}
		if ctx.Err() != nil {
			return nil
		}
		if fetches.IsClientClosed() {
			return errors.New("kafka client closed")
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				r.logger.WarnContext(ctx, "fetch error", "topic", topic, "partition", partition, "err", err)
			}
		})
		if !r.restorePending(ctx) {
			return nil // ctx ended
		}
		records := fetches.Records()
		evictions := r.evict.sweep(ctx, r.fold, r.sess.Client())
		if len(records) == 0 && len(evictions) == 0 {
			continue
		}
		committed, err := r.transact(ctx, records, evictions)
		pause := retryPause
		switch {
		case err != nil && unusable(err):
			return err
		case err != nil:
			failed++
			pause = fails.NextBackOff()
			r.metrics.failed()
			r.logger.WarnContext(ctx, "transaction failed; the batch will be handled again",
				"records", len(records), "consecutive_failures", failed, "retry_in", pause.String(), "err", err)
		case committed:
			if failed > 0 {
				r.logger.InfoContext(ctx, "transactions commit again", "after_failures", failed)
			}
			failed = 0
			fails.Reset()
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
	}
}

// restorePending restores the partitions assigned since the last batch,
// retrying (a broker outage) until it succeeds or ctx ends; it reports
// false when ctx ended. The batch in hand waits: its records of those
// partitions come after what the restore reads.
func (r *Router) restorePending(ctx context.Context) bool {
	partitions := r.restore.take()
	if len(partitions) == 0 {
		return true
	}
	wait := backoff.NewExponentialBackOff()
	wait.InitialInterval, wait.MaxInterval = 100*time.Millisecond, maxFailPause
	for {
		_, err := r.restore.restore(ctx, r.fold, partitions)
		if err == nil {
			return true
		}
		pause := wait.NextBackOff()
		r.logger.WarnContext(ctx, "restore of assigned partitions failed; retrying", "partitions", partitions,
			"retry_in", pause.String(), "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(pause):
		}
	}
}

// unusable says err leaves the transactional producer unusable: retrying
// cannot help, and a restart (with the same transactional id) is the
// remedy.
func unusable(err error) bool {
	return errors.Is(err, kgo.ErrClientClosed) ||
		errors.Is(err, kerr.ProducerFenced) ||
		errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed) ||
		errors.Is(err, kerr.ClusterAuthorizationFailed)
}

// transact handles one polled batch in one transaction, with the
// evictions of calls found idle (CallEvicted records for the calls topic).
// When the transaction aborts, the fold is rolled back and the session
// rewinds to the committed offsets, so the next poll returns the batch
// again; the calls still idle are found again by the next sweep.
func (r *Router) transact(ctx context.Context, records, evictions []*kgo.Record) (bool, error) {
	if err := r.begin(ctx); err != nil {
		return false, err
	}
	r.tally.reset()
	out, started := r.handle(ctx, records)
	var decided time.Time
	if r.hops.On() {
		decided = time.Now()
	}
	out = append(out, evictions...)

	txCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.endTimeout)
	defer cancel()
	promise := kgo.AbortingFirstErrPromise(r.sess.Client())
	for _, rec := range out {
		r.sess.Produce(txCtx, rec, promise.Promise())
	}
	produceErr := promise.Err()
	abort := produceErr != nil
	if !abort && r.abortBeforeEnd != nil {
		abort = r.abortBeforeEnd(out)
	}
	committed, err := r.sess.End(txCtx, kgo.TransactionEndTry(!abort))
	if err != nil {
		r.fold.Rollback()
		return false, fmt.Errorf("end transaction of %d records: %w", len(records), err)
	}
	if !committed {
		r.fold.Rollback()
		r.metrics.aborted()
		r.logger.WarnContext(ctx, "transaction aborted; batch will be handled again",
			"records", len(records), "commands", len(out), "err", produceErr)
		return false, nil
	}
	r.fold.Commit()
	if r.hops.On() {
		r.markHops(out, decided)
	}
	r.restore.committedBatch(records)
	r.evict.committed(ctx, evictions)
	r.metrics.count(len(records), &r.tally)
	r.metrics.evicted(len(evictions))
	if r.started != nil {
		// Outside the transaction: what the watcher does (a webhook call)
		// comes back as a new fact, never as part of this batch.
		for _, ev := range started {
			r.started.Started(ev)
		}
	}
	for _, rec := range out {
		r.logger.InfoContext(ctx, "decision published", "call_id", string(rec.Key), "type", headerValue(rec, events.HeaderType),
			"command_id", headerValue(rec, events.HeaderID), "topic", rec.Topic, "partition", rec.Partition)
	}
	return true, nil
}

// begin begins the batch's transaction. When that fails for a reason a
// retry can cure (the broker unreachable, the producer id being
// recovered, or a producer still inside a transaction whose end failed
// part-way because its context ran out), it aborts through the session,
// which also rewinds the consumer to the committed offsets, and returns
// the error: Run pauses and polls the batch again.
func (r *Router) begin(ctx context.Context) error {
	err := r.sess.Begin()
	if err == nil || unusable(err) {
		return err
	}
	abortCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.endTimeout)
	defer cancel()
	if _, abortErr := r.sess.End(abortCtx, kgo.TryAbort); abortErr != nil {
		return fmt.Errorf("begin transaction: %w (and the abort: %w)", err, abortErr)
	}
	return fmt.Errorf("begin transaction: %w", err)
}

// handle folds the records and encodes the commands they cause. It also
// returns the batch's CallStarted events.
func (r *Router) handle(ctx context.Context, records []*kgo.Record) (out []*kgo.Record, started []events.Event) {
	for _, rec := range records {
		ev, err := events.Decode(rec)
		if err != nil {
			// A record that cannot be decoded never will be: skip it
			// rather than block its partition.
			r.logger.WarnContext(ctx, "undecodable record skipped", "call_id", string(rec.Key), "topic", rec.Topic,
				"partition", rec.Partition, "offset", rec.Offset, "err", err)
			continue
		}
		if ev.Type == events.TypeCallStarted {
			started = append(started, ev)
		}
		if o, ok := ev.Data.(*batonv1.TransferOutcome); ok {
			r.tally.outcomes = append(r.tally.outcomes, o)
		}
		for _, d := range r.fold.Apply(ctx, ev) {
			r.tally.decisions = append(r.tally.decisions, d.Msg)
			rec, err := r.encode(r.traceParent(ctx, ev, d), ev, d)
			if err != nil {
				r.logger.ErrorContext(ctx, "encode decision", "call_id", ev.Subject, "command_id", d.ID, "err", err)
				continue
			}
			out = append(out, rec)
		}
	}
	// The fold keeps the batch's refused state writes until it commits
	// or rolls back; they are counted if the transaction commits.
	r.tally.stateRefused = append(r.tally.stateRefused[:0], r.fold.RefusedStateWrites()...)
	return out, started
}

// markHops records the hops of a committed batch's decisions: polled,
// decided and committed, keyed by call id.
func (r *Router) markHops(out []*kgo.Record, decided time.Time) {
	committed := time.Now()
	for _, rec := range out {
		id := string(rec.Key)
		r.hops.Mark(hops.RouterConsumed, id, r.polled)
		r.hops.Mark(hops.RouterDecided, id, decided)
		r.hops.Mark(hops.RouterCommitted, id, committed)
	}
}

// encode makes the record of a decision (a command or a refusal). Its
// event id is derived from the trigger and its time is the trigger's, so a
// replay produces an identical record.
func (r *Router) encode(traceParent string, trigger events.Event, d handoff.Decision) (*kgo.Record, error) {
	typ, err := events.TypeOf(d.Msg)
	if err != nil {
		return nil, fmt.Errorf("encode decision %s of call %s: %w", d.ID, trigger.Subject, err)
	}
	ev := events.Event{
		ID:          d.ID,
		Type:        typ,
		Source:      Source,
		Subject:     trigger.Subject,
		Time:        trigger.Time,
		TraceParent: traceParent,
		Data:        d.Msg,
	}
	topic := r.topic
	if _, ok := d.Msg.(*batonv1.AgentSelected); ok && r.callsTopic != "" {
		topic = r.callsTopic // ingress reads the calls topic, not the commands
	}
	rec, err := events.Encode(topic, ev)
	if err != nil {
		return nil, fmt.Errorf("encode decision %s of call %s: %w", d.ID, trigger.Subject, err)
	}
	return rec, nil
}

// traceParent is the traceparent of a decision: a child span of the
// trigger's, when the trigger carries one and tracing is on.
func (r *Router) traceParent(ctx context.Context, trigger events.Event, d handoff.Decision) string {
	if r.tracer == nil || trigger.TraceParent == "" {
		return trigger.TraceParent
	}
	pctx := tracing.Extract(ctx, trigger.TraceParent)
	if !trace.SpanContextFromContext(pctx).IsValid() {
		return trigger.TraceParent
	}
	typ, _ := events.TypeOf(d.Msg)
	sctx, span := r.tracer.Start(pctx, "router decide", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("call_id", trigger.Subject), attribute.String("command_id", d.ID),
			attribute.String("trigger_type", trigger.Type), attribute.String("decision_type", typ)))
	defer span.End()
	return tracing.Inject(sctx)
}

func headerValue(rec *kgo.Record, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
