package router

import (
	"context"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// Decide folds records, in the order given, and returns the records of the
// decisions (commands and refusals) they cause on topic: byte for byte
// what Run would produce from the same records, without Kafka. It is the
// replay of a recorded log (router replay). The fold's changes are
// committed.
func Decide(ctx context.Context, fold *handoff.Fold, topic string, records []*kgo.Record, logger *slog.Logger) []*kgo.Record {
	r := &Router{fold: fold, topic: topic, logger: logger}
	out, _ := r.handle(ctx, records)
	fold.Commit()
	return out
}
