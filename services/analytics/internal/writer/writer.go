// Package writer is the analytics stage: it consumes every Baton topic in
// one consumer group and writes ClickHouse.
//
// Delivery is at least once from Kafka and exactly once in ClickHouse: a
// poll's offsets are committed only after all of its rows were inserted,
// and every table is a ReplacingMergeTree keyed by event or command id, so
// a batch inserted again after a crash or a retry adds no row that FINAL
// counts. A record that cannot be decoded goes to the dead-letter topic
// and never blocks its partition.
package writer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/services/analytics/internal/chconn"
	"github.com/baton-voice/baton/services/analytics/internal/config"
	"github.com/baton-voice/baton/services/analytics/internal/migrate"
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

// startTimeout bounds migrations and topic creation at start.
const startTimeout = 60 * time.Second

// insertFunc writes one batch's rows; it must be idempotent.
type insertFunc func(ctx context.Context, r *rows) error

// Writer consumes Baton's topics into ClickHouse.
type Writer struct {
	cfg        config.Config
	migrations fs.FS
	logger     *slog.Logger
	// deadLettered counts records sent to the dead-letter topic.
	deadLettered atomic.Int64
}

// New returns a writer for cfg that applies migrations (NNNN_name.sql files
// at the root of the FS) at start.
func New(cfg config.Config, migrations fs.FS, logger *slog.Logger) *Writer {
	return &Writer{cfg: cfg, migrations: migrations, logger: logger}
}

// DeadLettered returns how many records went to the dead-letter topic.
func (w *Writer) DeadLettered() int64 { return w.deadLettered.Load() }

// Run connects to ClickHouse (waiting for it), migrates, creates the
// topics and consumes until ctx ends. The batch under way when ctx ends is
// inserted and committed before Run returns. Run returns nil when it
// stopped because ctx ended.
func (w *Writer) Run(ctx context.Context) error {
	ch := w.cfg.ClickHouse
	// Wait for the server through the default database: the target one
	// may not exist yet.
	probe, err := chconn.Open(ctx, chconn.Options(ch, "default"), w.logger)
	if err != nil {
		return w.stopped(ctx, err)
	}
	if err := probe.Close(); err != nil {
		w.logger.WarnContext(ctx, "close clickhouse probe", "err", err)
	}

	startCtx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	applied, err := migrate.Run(startCtx, chconn.Options(ch, ch.Database), w.migrations, w.logger)
	if err != nil {
		return w.stopped(ctx, fmt.Errorf("migrate: %w", err))
	}
	w.logger.InfoContext(ctx, "migrations done", "database", ch.Database, "applied", len(applied))

	conn, err := chconn.Open(ctx, chconn.Options(ch, ch.Database), w.logger)
	if err != nil {
		return w.stopped(ctx, err)
	}
	defer func() {
		if err := conn.Close(); err != nil {
			w.logger.WarnContext(ctx, "close clickhouse", "err", err)
		}
	}()

	topics := w.cfg.Kafka.Topics.All()
	opts := append(kafka.ClientOpts(w.cfg.Kafka, w.logger), kafka.ConsumerOpts(w.cfg.Group, topics...)...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	// Close leaves the group; offsets were committed batch by batch.
	defer cl.Close()
	err = kafka.EnsureTopics(startCtx, cl, w.cfg.Kafka.Partitions, w.cfg.Kafka.ReplicationFactor,
		append(topics, w.cfg.DeadLetterTopic)...)
	if err != nil {
		return w.stopped(ctx, fmt.Errorf("ensure topics: %w", err))
	}
	cancel()

	w.logger.InfoContext(ctx, "ready", "group", w.cfg.Group, "topics", topics,
		"dead_letter_topic", w.cfg.DeadLetterTopic, "database", ch.Database)
	return w.consume(ctx, cl, func(ctx context.Context, r *rows) error { return insert(ctx, conn, r) })
}

// stopped turns an error caused by the end of ctx into a clean stop.
func (w *Writer) stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// consume runs the commit-after-insert loop over cl's fetches.
func (w *Writer) consume(ctx context.Context, cl *kgo.Client, ins insertFunc) error {
	return kafka.ConsumeLoop(ctx, cl, w.logger, w.cfg.RetryPause, func(ctx context.Context, records []*kgo.Record) error {
		return w.handle(ctx, cl, ins, records)
	})
}

// handle writes one poll. It returns an error, so the poll is retried and
// not committed, unless every row was inserted and every dead letter
// produced. Shutdown does not cut it short: it runs on a context that
// outlives ctx, bounded by insertTimeout.
func (w *Writer) handle(ctx context.Context, cl *kgo.Client, ins insertFunc, records []*kgo.Record) error {
	r, dead := build(records)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), insertTimeout)
	defer cancel()
	// Rows first: inserting again is harmless, producing a dead letter
	// again is not.
	if err := ins(ctx, r); err != nil {
		return fmt.Errorf("insert %d events: %w", r.len(), err)
	}
	if len(dead) > 0 {
		if err := w.deadLetter(ctx, cl, dead); err != nil {
			return err
		}
	}
	w.logger.DebugContext(ctx, "batch written", "records", len(records), "events", r.len(), "dead_letters", len(dead))
	return nil
}

// deadLetter produces the records that cannot be written to the
// dead-letter topic, with their key, value and headers, plus why and
// where they came from.
func (w *Writer) deadLetter(ctx context.Context, cl *kgo.Client, dead []deadLetter) error {
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
	if err := cl.ProduceSync(ctx, out...).FirstErr(); err != nil {
		return fmt.Errorf("produce %d dead letters to %s: %w", len(out), w.cfg.DeadLetterTopic, err)
	}
	for _, d := range dead {
		w.deadLettered.Add(1)
		w.logger.WarnContext(ctx, "record dead-lettered", "topic", d.rec.Topic, "partition", d.rec.Partition,
			"offset", d.rec.Offset, "dead_letter_topic", w.cfg.DeadLetterTopic, "err", d.err)
	}
	return nil
}

// insert sends r to ClickHouse, one batch per table that has rows.
func insert(ctx context.Context, conn driver.Conn, r *rows) error {
	return errors.Join(
		send(ctx, conn, "events", eventColumns, r.events, eventRow.values),
		send(ctx, conn, "calls", callColumns, r.calls, callRow.values),
		send(ctx, conn, "call_ends", callEndColumns, r.callEnds, callEndRow.values),
		send(ctx, conn, "handoffs", handoffColumns, r.handoffs, handoffRow.values),
		send(ctx, conn, "transfer_outcomes", outcomeColumns, r.outcomes, outcomeRow.values),
	)
}

// send inserts rows into table with its columns named (18.16 needs them).
func send[T any](ctx context.Context, conn driver.Conn, table, columns string, rows []T, values func(T) []any) error {
	if len(rows) == 0 {
		return nil
	}
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+table+" ("+columns+")")
	if err != nil {
		return fmt.Errorf("prepare insert into %s: %w", table, err)
	}
	for _, row := range rows {
		if err := batch.Append(values(row)...); err != nil {
			return fmt.Errorf("append to %s: %w", table, errors.Join(err, batch.Abort()))
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rows into %s: %w", len(rows), table, err)
	}
	return nil
}

const eventColumns = "event_id, type, call_id, source, time, time_ms, topic, partition, offset, payload"

func (r eventRow) values() []any {
	return []any{r.EventID, r.Type, r.CallID, r.Source, r.Time, r.TimeMS, r.Topic, r.Partition, r.Offset, r.Payload}
}

const callColumns = "call_id, started_at, started_ms, trunk, source_address, caller_number, caller_number_raw, " +
	"callee_number, callee_number_raw, request_uri, variables.key, variables.value, header_count, oversized_headers, " +
	"event_id, version"

func (r callRow) values() []any {
	return []any{r.CallID, r.StartedAt, r.StartedMS, r.Trunk, r.SourceAddress, r.CallerNumber, r.CallerNumberRaw,
		r.CalleeNumber, r.CalleeNumberRaw, r.RequestURI, r.VariableKeys, r.VariableValues, r.HeaderCount,
		r.OversizedHeaders, r.EventID, r.Version}
}

const callEndColumns = "call_id, ended_at, ended_ms, ended_by, method, reason, duration_ms, event_id"

func (r callEndRow) values() []any {
	return []any{r.CallID, r.EndedAt, r.EndedMS, r.EndedBy, r.Method, r.Reason, r.DurationMS, r.EventID}
}

const handoffColumns = "command_id, call_id, requested_at, requested_ms, destination, method, route, reason, " +
	"utterance, attempt, headers.name, headers.value, event_id"

func (r handoffRow) values() []any {
	return []any{r.CommandID, r.CallID, r.RequestedAt, r.RequestedMS, r.Destination, r.Method, r.Route, r.Reason,
		r.Utterance, r.Attempt, r.HeaderNames, r.HeaderValues, r.EventID}
}

const outcomeColumns = "event_id, command_id, call_id, time, time_ms, status, method, destination, reason, " +
	"sip_code, sip_reason, detail, elapsed_ms"

func (r outcomeRow) values() []any {
	return []any{r.EventID, r.CommandID, r.CallID, r.Time, r.TimeMS, r.Status, r.Method, r.Destination, r.Reason,
		r.SIPCode, r.SIPReason, r.Detail, r.ElapsedMS}
}
