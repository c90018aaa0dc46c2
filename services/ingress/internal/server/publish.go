package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/tracing"
)

// publisher writes the facts of calls to the calls topic, keyed by
// Call-ID: CallStarted, CallUpdated, CallEnded, NotifyReceived,
// DtmfReceived. It is the Server's, and calls reach it as a
// factPublisher.
type publisher struct {
	cl      *kgo.Client
	topic   string
	timeout time.Duration // publish_timeout
	log     *slog.Logger
}

// publish writes msg about callID to the calls topic and waits, at most
// publish_timeout, until Kafka has it. It outlives ctx's cancellation so a
// request in flight at shutdown still finishes.
func (p *publisher) publish(ctx context.Context, callID string, msg proto.Message) error {
	ev, err := events.New(Source, callID, msg, time.Now())
	if err != nil {
		return fmt.Errorf("publish call %s: %w", callID, err)
	}
	ev.TraceParent = tracing.Inject(ctx)
	rec, err := events.Encode(p.topic, ev)
	if err != nil {
		return fmt.Errorf("publish call %s: %w", callID, err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
	defer cancel()
	if err := p.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("publish %s for call %s: %w", ev.Type, callID, err)
	}
	return nil
}

// publishAsync writes msg about callID to the calls topic without waiting;
// the producer keeps the order per call, failures are logged, and shutdown
// flushes what is buffered. Facts nothing waits on go this way.
func (p *publisher) publishAsync(ctx context.Context, callID string, msg proto.Message) {
	ev, err := events.New(Source, callID, msg, time.Now())
	if err != nil {
		p.log.ErrorContext(ctx, "publish", "call_id", callID, "err", err)
		return
	}
	ev.TraceParent = tracing.Inject(ctx)
	rec, err := events.Encode(p.topic, ev)
	if err != nil {
		p.log.ErrorContext(ctx, "publish", "call_id", callID, "err", err)
		return
	}
	p.cl.Produce(context.WithoutCancel(ctx), rec, func(_ *kgo.Record, err error) {
		if err != nil {
			p.log.Error("publish", "call_id", callID, "type", ev.Type, "err", err)
		}
	})
}

// endedRetryPause is the wait before a CallEnded that Kafka refused is
// produced again.
const endedRetryPause = 500 * time.Millisecond

// publishEnded publishes a call's CallEnded like publish, and when Kafka
// does not take it within publish_timeout (the broker is down or
// restarting) keeps producing the same record in the background until
// Kafka takes it or the client closes (shutdown flushes it first): the far
// end was told the call is over, so the fact must not be dropped. A record
// franz-go fails was never written (it fails only records no request
// carried), so producing it again makes no duplicate.
func (p *publisher) publishEnded(ctx context.Context, callID string, msg *batonv1.CallEnded) {
	ev, err := events.New(Source, callID, msg, time.Now())
	if err != nil {
		p.log.ErrorContext(ctx, "publish call ended", "call_id", callID, "err", err)
		return
	}
	ev.TraceParent = tracing.Inject(ctx)
	rec, err := events.Encode(p.topic, ev)
	if err != nil {
		p.log.ErrorContext(ctx, "publish call ended", "call_id", callID, "err", err)
		return
	}
	syncCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
	err = p.cl.ProduceSync(syncCtx, rec).FirstErr()
	cancel()
	if err == nil {
		return
	}
	p.log.WarnContext(ctx, "publish call ended; retrying in the background", "call_id", callID, "event_id", ev.ID, "err", err)
	p.produceUntilTaken(context.WithoutCancel(ctx), rec, callID)
}

// produceUntilTaken produces rec and produces it again, after a pause,
// every time it fails, until it is written or the client is closed.
func (p *publisher) produceUntilTaken(ctx context.Context, rec *kgo.Record, callID string) {
	p.cl.Produce(ctx, rec, func(r *kgo.Record, err error) {
		switch {
		case err == nil:
			p.log.InfoContext(ctx, "call ended published after a retry", "call_id", callID)
		case errors.Is(err, kgo.ErrClientClosed):
			p.log.ErrorContext(ctx, "publish call ended: client closed; the next start ends the call", "call_id", callID, "err", err)
		default:
			time.AfterFunc(endedRetryPause, func() { p.produceUntilTaken(ctx, r, callID) })
		}
	})
}
