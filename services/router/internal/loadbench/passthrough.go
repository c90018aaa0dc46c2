package loadbench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/kafka"
)

// PassthroughOptions configures Passthrough.
type PassthroughOptions struct {
	Kafka           kafka.Config
	Group           string
	TransactionalID string
	// In is consumed; Out receives a copy of every record.
	In, Out string
}

// passthroughEndTimeout bounds producing and ending one transaction, as
// the router's does.
const passthroughEndTimeout = 30 * time.Second

// Passthrough is the router's consume-transform-produce loop without the
// router: the same client options (pkg/kafka, a GroupTransactSession,
// read_committed), one transaction per polled batch carrying the copies
// and the consumed offsets, but no decoding and no decision. It runs until
// ctx ends.
func Passthrough(ctx context.Context, opts PassthroughOptions, logger *slog.Logger) error {
	kopts := kafka.ClientOpts(opts.Kafka, logger)
	kopts = append(kopts, kafka.ConsumerOpts(opts.Group, opts.In)...)
	// The same producer settings as the router: no linger before the commit.
	kopts = append(kopts, kgo.TransactionalID(opts.TransactionalID), kgo.ProducerLinger(0))
	sess, err := kgo.NewGroupTransactSession(kopts...)
	if err != nil {
		return fmt.Errorf("new transactional session %s: %w", opts.TransactionalID, err)
	}
	defer sess.Close()
	for {
		fetches := sess.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if fetches.IsClientClosed() {
			return errors.New("kafka client closed")
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			logger.WarnContext(ctx, "fetch error", "topic", topic, "partition", partition, "err", err)
		})
		records := fetches.Records()
		if len(records) == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			return fmt.Errorf("begin transaction: %w", err)
		}
		txCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), passthroughEndTimeout)
		promise := kgo.AbortingFirstErrPromise(sess.Client())
		for _, r := range records {
			sess.Produce(txCtx, &kgo.Record{Topic: opts.Out, Key: r.Key, Value: r.Value, Headers: r.Headers}, promise.Promise())
		}
		produceErr := promise.Err()
		committed, err := sess.End(txCtx, kgo.TransactionEndTry(produceErr == nil))
		cancel()
		if err != nil {
			return fmt.Errorf("end transaction of %d records: %w", len(records), err)
		}
		if !committed {
			logger.WarnContext(ctx, "transaction aborted; batch will be copied again", "records", len(records), "err", produceErr)
		}
	}
}
