package health

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipprobe"
)

// Source is the ce_source of DestinationHealth records.
const Source = "baton/transfer"

// SubjectPrefix starts the key (ce_subject) of DestinationHealth records:
// "destination-health/<name>", never a call id.
const SubjectPrefix = "destination-health/"

// Publisher hears of each change of a destination's state (and of its
// first check).
type Publisher interface {
	Changed(ctx context.Context, r sipprobe.Result) error
}

// KafkaPublisher writes a DestinationHealth to every partition of the
// calls topic, so the router folds it in order with each partition's
// calls (decision 0016).
type KafkaPublisher struct {
	client   *kgo.Client
	topic    string
	instance string
	timeout  time.Duration
	now      func() time.Time
}

// NewKafkaPublisher makes its own client from opts (the service's client
// options) with a manual partitioner: each copy names its partition.
// Close it when done.
func NewKafkaPublisher(opts []kgo.Opt, topic, instance string, timeout time.Duration) (*KafkaPublisher, error) {
	client, err := kgo.NewClient(append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		return nil, fmt.Errorf("health publisher client: %w", err)
	}
	return &KafkaPublisher{client: client, topic: topic, instance: instance, timeout: timeout, now: time.Now}, nil
}

// Close closes the client.
func (p *KafkaPublisher) Close() { p.client.Close() }

// Changed publishes r's state, one copy per partition; the partition
// count is read from the broker each time (a change is rare, and a
// repartitioned topic is then covered).
func (p *KafkaPublisher) Changed(ctx context.Context, r sipprobe.Result) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	topics, err := kadm.NewClient(p.client).ListTopics(ctx, p.topic)
	if err != nil {
		return fmt.Errorf("destination health %s: partitions of %s: %w", r.Name, p.topic, err)
	}
	td, ok := topics[p.topic]
	if !ok || td.Err != nil || len(td.Partitions) == 0 {
		return fmt.Errorf("destination health %s: topic %s: %w", r.Name, p.topic, errors.Join(errors.New("not found"), td.Err))
	}
	n := int32(len(td.Partitions))
	at := p.now()
	recs := make([]*kgo.Record, 0, n)
	for i := range n {
		msg := &batonv1.DestinationHealth{Destination: r.Name, Up: r.Up, Status: int32(r.Status), Detail: r.Error,
			CheckedBy: p.instance, Partition: i, Partitions: n}
		ev, err := events.New(Source, SubjectPrefix+r.Name, msg, at)
		if err != nil {
			return fmt.Errorf("destination health %s: %w", r.Name, err)
		}
		rec, err := events.Encode(p.topic, ev)
		if err != nil {
			return fmt.Errorf("destination health %s: %w", r.Name, err)
		}
		rec.Partition = i
		recs = append(recs, rec)
	}
	if err := p.client.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("destination health %s: produce: %w", r.Name, err)
	}
	return nil
}
