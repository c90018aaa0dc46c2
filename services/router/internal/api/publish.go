package api

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
)

// KafkaPublisher publishes the API's events to the calls topic with an
// idempotent (not transactional) producer and waits for the ack.
type KafkaPublisher struct {
	client  *kgo.Client
	topic   string
	timeout time.Duration
}

// NewKafkaPublisher publishes to topic through client; timeout bounds one
// publish.
func NewKafkaPublisher(client *kgo.Client, topic string, timeout time.Duration) *KafkaPublisher {
	return &KafkaPublisher{client: client, topic: topic, timeout: timeout}
}

// Publish writes ev and waits until Kafka has it.
func (p *KafkaPublisher) Publish(ctx context.Context, ev events.Event) error {
	rec, err := events.Encode(p.topic, ev)
	if err != nil {
		return fmt.Errorf("encode %s of call %s: %w", ev.Type, ev.Subject, err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if err := p.client.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("publish %s of call %s: %w", ev.Type, ev.Subject, err)
	}
	return nil
}
