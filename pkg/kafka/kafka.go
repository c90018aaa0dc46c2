// Package kafka holds Baton's Kafka plumbing on franz-go: the shared
// configuration, client options for producers and group consumers, topic
// creation at start, and a commit-after-handle consume loop.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/baton-voice/baton/pkg/config"
)

// Topics names Baton's topics.
type Topics struct {
	// Calls carries facts from ingress and from the agent API.
	Calls string `yaml:"calls"`
	// Handoffs carries the router's commands.
	Handoffs string `yaml:"handoffs"`
	// Transfers carries transfer outcomes.
	Transfers string `yaml:"transfers"`
}

// All returns every topic name.
func (t Topics) All() []string { return []string{t.Calls, t.Handoffs, t.Transfers} }

// Config is the Kafka section of every service's configuration.
type Config struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string `yaml:"brokers"`
	// ClientID names this process to the brokers.
	ClientID string `yaml:"client_id"`
	Topics   Topics `yaml:"topics"`
	// Partitions is the partition count of topics created at start.
	Partitions int32 `yaml:"partitions"`
	// ReplicationFactor of topics created at start; -1 takes the broker's default.
	ReplicationFactor int16 `yaml:"replication_factor"`
	// ProduceTimeout bounds how long a synchronous produce may wait; callers
	// apply it as a context deadline.
	ProduceTimeout time.Duration `yaml:"produce_timeout"`
	// SessionTimeout is how long a consumer group waits for a silent member
	// (crashed, partitioned) before giving its partitions to the others.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// HeartbeatInterval is how often a group member heartbeats. A
	// rebalance waits for every member to rejoin, and a member learns of
	// one at its next heartbeat, so this bounds the pause a restart or a
	// scale event puts on the whole group. At most a third of
	// session_timeout.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// TLS and SASL secure the connections to the brokers (both off by
	// default, for the local stack's embedded broker).
	TLS  TLS  `yaml:"tls"`
	SASL SASL `yaml:"sasl"`
	// InstanceID makes this process a static member of its consumer group
	// (KIP-345): restarted within session_timeout with the same id, it
	// takes its partitions back at once instead of waiting for the group to
	// give up on it and rebalance. It may name an environment variable,
	// ${POD_NAME}; empty keeps dynamic membership. Each instance needs its
	// own id.
	InstanceID string `yaml:"instance_id"`
}

// DefaultConfig returns the configuration for the local stack.
func DefaultConfig() Config {
	return Config{
		Brokers:           []string{"127.0.0.1:9092"},
		ClientID:          "baton",
		Topics:            Topics{Calls: "baton.calls", Handoffs: "baton.handoffs", Transfers: "baton.transfers"},
		Partitions:        6,
		ReplicationFactor: -1,
		ProduceTimeout:    2 * time.Second,
		SessionTimeout:    45 * time.Second,
		HeartbeatInterval: time.Second,
	}
}

// Validate reports the first problem with c, naming the field.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, config.Errorf("kafka.brokers", "at least one broker is required"))
	}
	for i, b := range c.Brokers {
		if b == "" {
			errs = append(errs, config.Errorf(fmt.Sprintf("kafka.brokers[%d]", i), "empty address"))
		}
	}
	if c.Topics.Calls == "" || c.Topics.Handoffs == "" || c.Topics.Transfers == "" {
		errs = append(errs, config.Errorf("kafka.topics", "calls, handoffs and transfers must all be named"))
	}
	if c.Partitions < 1 {
		errs = append(errs, config.Errorf("kafka.partitions", "%d, want at least 1", c.Partitions))
	}
	if c.SessionTimeout < time.Second {
		errs = append(errs, config.Errorf("kafka.session_timeout", "%v, want at least 1s", c.SessionTimeout))
	} else if c.HeartbeatInterval <= 0 || c.HeartbeatInterval > c.SessionTimeout/3 {
		errs = append(errs, config.Errorf("kafka.heartbeat_interval", "%v, want more than 0 and at most a third of session_timeout (%v)",
			c.HeartbeatInterval, c.SessionTimeout/3))
	}
	if c.ProduceTimeout <= 0 {
		errs = append(errs, config.Errorf("kafka.produce_timeout", "%v, want a positive duration", c.ProduceTimeout))
	}
	if c.InstanceID != "" {
		if _, err := config.ExpandEnv(c.InstanceID, os.Getenv, nil); err != nil {
			errs = append(errs, config.Errorf("kafka.instance_id", "%v", err))
		}
	}
	errs = append(errs, c.validateSecurity()...)
	return errors.Join(errs...)
}

// ClientOpts returns the options every Baton client shares.
func ClientOpts(c Config, logger *slog.Logger) []kgo.Opt {
	return append([]kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(c.ClientID),
		// franz-go's logs go through the service's slog handler.
		kgo.WithLogger(kslog.New(logger.With("component", "kafka"))),
		// Idempotent production is franz-go's default; say so explicitly
		// because the delivery guarantees depend on it: no duplicates from
		// retries, and per-partition order is kept.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// Records of a call must land in one partition on every topic: the
		// default partitioner hashes keys like the Java client (murmur2), so
		// other Kafka clients agree with ours.
		kgo.RecordPartitioner(kgo.UniformBytesPartitioner(64<<10, true, true, nil)),
		// Group members (for clients that join one) are declared dead after
		// this long without a heartbeat.
		kgo.SessionTimeout(c.SessionTimeout),
		kgo.HeartbeatInterval(c.HeartbeatInterval),
		// How long a broker may hold a fetch with nothing to return.
		kgo.FetchMaxWait(FetchMaxWait),
		// No kgo.RecordDeliveryTimeout: franz-go measures it from the record
		// timestamp, which is the event's time, so replayed or backlogged
		// events would fail at once. Callers bound a produce with a context
		// deadline of ProduceTimeout instead.
	}, c.securityOpts()...)
}

// FetchMaxWait is how long a broker may hold a consumer's fetch that has
// nothing to return (franz-go's default is 5 s). After an assignment,
// franz-go makes partitions fetchable one at a time and may send the first
// fetch while only some are ready; a partition ready a moment later does
// not interrupt the fetch in flight, so its records wait for that fetch
// to expire. A handoff command then sat 5 s before transfer saw it. 500 ms
// (the Java client's fetch.max.wait.ms) bounds that wait, for a few idle
// fetches a second per client.
const FetchMaxWait = 500 * time.Millisecond

// StaticMember returns the group option of c.InstanceID (none when it is
// empty), for the one client of the process that joins the group.
func StaticMember(c Config) []kgo.Opt {
	if c.InstanceID == "" {
		return nil
	}
	id, err := config.ExpandEnv(c.InstanceID, os.Getenv, nil)
	if err != nil {
		return nil // refused by Validate
	}
	return []kgo.Opt{kgo.InstanceID(id)}
}

// ConsumerOpts returns the options of a group consumer that commits by hand
// and reads only committed (transactional) data.
func ConsumerOpts(group string, topics ...string) []kgo.Opt {
	return []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topics...),
		// Offsets are committed after the records are handled.
		kgo.DisableAutoCommit(),
		// The router writes in transactions: never see aborted records.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// A new group starts at the beginning: no fact is skipped.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Range assignment gives one member the same partition numbers of
		// every topic, so a call's facts and commands meet in one process.
		kgo.Balancers(kgo.RangeBalancer()),
	}
}

// EnsureTopics creates the topics that do not exist yet.
func EnsureTopics(ctx context.Context, cl *kgo.Client, partitions int32, replication int16, topics ...string) error {
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopics(ctx, partitions, replication, nil, topics...)
	if err != nil {
		return fmt.Errorf("create topics %v: %w", topics, err)
	}
	for _, t := range resp.Sorted() {
		if t.Err != nil && !errors.Is(t.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", t.Topic, t.Err)
		}
	}
	return nil
}

// commitTimeout bounds the offset commit that follows a handled batch.
const commitTimeout = 5 * time.Second

// Handler handles a batch of records from one poll. Returning an error
// leaves the batch uncommitted; the loop retries it after a pause.
type Handler func(ctx context.Context, records []*kgo.Record) error

// ConsumeLoop polls cl until ctx ends, hands every non-empty poll to handle
// and commits the batch's offsets once handle returned nil. A failed batch
// is retried, never skipped, so a partition's records are handled in order
// and at least once.
func ConsumeLoop(ctx context.Context, cl *kgo.Client, logger *slog.Logger, retryPause time.Duration, handle Handler) error {
	for {
		fetches := cl.PollFetches(ctx)
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
		for {
			err := handle(ctx, records)
			if err == nil {
				break
			}
			logger.ErrorContext(ctx, "handle batch; retrying", "records", len(records), "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(retryPause):
			}
		}
		// A handled batch is committed even when shutdown began meanwhile,
		// so a restart does not handle it again.
		commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
		err := cl.CommitRecords(commitCtx, records...)
		cancel()
		if err != nil {
			logger.WarnContext(ctx, "commit offsets", "records", len(records), "err", err)
		}
	}
}

// PartitionFor returns the partition a record keyed by key lands in on a
// topic with n partitions: the same murmur2 mapping the producers use
// (ClientOpts) and the Java client uses, so a reader can find one call's
// records without reading the other partitions.
func PartitionFor(key []byte, n int) int32 {
	p := kgo.StickyKeyPartitioner(nil).ForTopic("")
	return int32(p.Partition(&kgo.Record{Key: key}, n))
}
