// Package attempts is transfer's attempt log: the durable record, written
// before any SIP is sent, that a command was attempted. It is a compacted
// Kafka topic keyed by command id (docs/decisions/0007). Every transfer
// instance reads the whole topic from the start and keeps tailing it, so a
// command redelivered to any instance after a crash finds its attempt.
package attempts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// Source is the ce_source of attempt records.
const Source = "baton/transfer"

// syncPoll is how often Sync looks at the reader's progress.
const syncPoll = 2 * time.Millisecond

// pruneEvery is how often Record drops expired attempts from memory.
const pruneEvery = time.Minute

// Attempt is what the log remembers of one command.
type Attempt struct {
	CommandID   string
	CallID      string
	Method      string
	AttemptedAt time.Time
	Instance    string
}

// Log is the attempt log. Record and Lookup are safe for concurrent use.
type Log struct {
	cl        *kgo.Client
	topic     string
	retention time.Duration
	instance  string
	logger    *slog.Logger
	now       func() time.Time

	mu   sync.Mutex
	seen map[string]Attempt
	// refusals holds, per trunk, until when it is known to refuse REFER
	// (ReferRefusalLearned records, keyed refer-refusal/<trunk>).
	refusals map[string]time.Time
	// bridges holds the bridges held now (BridgeHeld records, keyed
	// bridge/<command id>), by command id: the latest heartbeat, and
	// once claimed the first claimer (bridges.go).
	bridges map[string]*heldBridge
	// next is the next offset the reader will return, per partition.
	next map[int32]int64
	// stale is set when this process got new handoffs partitions: their
	// previous owner's attempts must be read before a command runs.
	stale bool
	// pruned is when expired attempts were last dropped from seen.
	pruned time.Time

	done chan struct{}
	stop context.CancelFunc
}

// Options configures a Log.
type Options struct {
	// Topic is the compacted attempts topic.
	Topic string
	// Partitions and ReplicationFactor are used when the topic is created.
	Partitions        int32
	ReplicationFactor int16
	// Retention is how long attempts are kept (topic retention.ms, and the
	// in-memory index): commands older than this are not recognised.
	Retention time.Duration
	// Instance names this process in the records.
	Instance string
}

// Open creates the topic if needed and starts reading it from the start.
// clientOpts are the service's client options (brokers, logger, acks); the
// log builds its own client from them, without a group, that both writes
// and reads the topic. Close releases it.
func Open(ctx context.Context, clientOpts []kgo.Opt, o Options, logger *slog.Logger) (*Log, error) {
	cl, err := kgo.NewClient(append(slices.Clone(clientOpts),
		kgo.ConsumeTopics(o.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("attempt log client: %w", err)
	}
	if err := ensureTopic(ctx, cl, o); err != nil {
		cl.Close()
		return nil, err
	}
	l := &Log{
		cl:        cl,
		topic:     o.Topic,
		retention: o.Retention,
		instance:  o.Instance,
		logger:    logger,
		now:       time.Now,
		seen:      map[string]Attempt{},
		refusals:  map[string]time.Time{},
		bridges:   map[string]*heldBridge{},
		next:      map[int32]int64{},
		stale:     true,
		pruned:    time.Now(),
		done:      make(chan struct{}),
	}
	// The reader lives until Close, not until Open's ctx ends.
	tailCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.stop = cancel
	go l.tail(tailCtx)
	return l, nil
}

func ensureTopic(ctx context.Context, cl *kgo.Client, o Options) error {
	retention := strconv.FormatInt(o.Retention.Milliseconds(), 10)
	policy := "compact,delete"
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, o.Partitions, o.ReplicationFactor,
		map[string]*string{"cleanup.policy": &policy, "retention.ms": &retention}, o.Topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create attempt log %s: %w", o.Topic, err)
	}
	return nil
}

// tail reads the topic until Close.
func (l *Log) tail(ctx context.Context) {
	defer close(l.done)
	for {
		fetches := l.cl.PollFetches(ctx)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			l.logger.WarnContext(ctx, "attempt log fetch error", "topic", topic, "partition", partition, "err", err)
		})
		fetches.EachRecord(func(rec *kgo.Record) {
			if l.readBridge(ctx, rec) {
				return
			}
			a, refusal, err := decode(rec)
			l.mu.Lock()
			defer l.mu.Unlock()
			l.next[rec.Partition] = rec.Offset + 1
			if refusal != nil {
				l.learnLocked(refusal)
				return
			}
			if err != nil {
				l.logger.WarnContext(ctx, "attempt record skipped", "topic", rec.Topic, "partition", rec.Partition,
					"offset", rec.Offset, "err", err)
				return
			}
			if l.now().Sub(a.AttemptedAt) <= l.retention {
				l.seen[a.CommandID] = a
			}
		})
	}
}

// decode reads an attempt, or a REFER refusal learned (then non-nil).
func decode(rec *kgo.Record) (Attempt, *batonv1.ReferRefusalLearned, error) {
	ev, err := events.Decode(rec)
	if err != nil {
		return Attempt{}, nil, err
	}
	if r, ok := ev.Data.(*batonv1.ReferRefusalLearned); ok {
		return Attempt{}, r, nil
	}
	m, ok := ev.Data.(*batonv1.TransferAttempt)
	if !ok {
		return Attempt{}, nil, fmt.Errorf("%s on the attempt log", ev.Type)
	}
	return Attempt{CommandID: m.GetCommandId(), CallID: m.GetCallId(), Method: m.GetMethod(),
		AttemptedAt: m.GetAttemptedAt().AsTime(), Instance: m.GetInstance()}, nil, nil
}

// refusalKeyPrefix keys REFER refusals on the log: compaction keeps the
// latest per trunk.
const refusalKeyPrefix = "refer-refusal/"

// learnLocked keeps the latest refusal of its trunk, in log order.
func (l *Log) learnLocked(r *batonv1.ReferRefusalLearned) {
	l.refusals[r.GetTrunk()] = r.GetUntil().AsTime()
}

// ReferRefused returns until when trunk is known to refuse REFER: what
// this or another instance learned, restored from the log at start.
func (l *Log) ReferRefused(trunk string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.refusals[trunk]
	return t, ok
}

// LearnReferRefusal writes a refusal to the log (one synchronous produce,
// keyed refer-refusal/<trunk>) and remembers it.
func (l *Log) LearnReferRefusal(ctx context.Context, m *batonv1.ReferRefusalLearned) error {
	if m.GetInstance() == "" {
		m.Instance = l.instance
	}
	ev, err := events.New(Source, refusalKeyPrefix+m.GetTrunk(), m, l.now())
	if err != nil {
		return fmt.Errorf("refer refusal of trunk %s: %w", m.GetTrunk(), err)
	}
	rec, err := events.Encode(l.topic, ev)
	if err != nil {
		return fmt.Errorf("refer refusal of trunk %s: %w", m.GetTrunk(), err)
	}
	if err := l.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("record refer refusal of trunk %s: %w", m.GetTrunk(), err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.learnLocked(m)
	return nil
}

// Invalidate marks the index stale: the next EnsureSynced reads the topic
// to its end first. Call it when handoffs partitions are assigned.
func (l *Log) Invalidate() {
	l.mu.Lock()
	l.stale = true
	l.mu.Unlock()
}

// EnsureSynced runs Sync when the index is stale.
func (l *Log) EnsureSynced(ctx context.Context) error {
	l.mu.Lock()
	stale := l.stale
	l.mu.Unlock()
	if !stale {
		return nil
	}
	return l.Sync(ctx)
}

// Sync returns once every attempt written before the call was read.
func (l *Log) Sync(ctx context.Context) error {
	var want map[int32]int64
	for {
		var err error
		want, err = l.ends(ctx)
		if err == nil {
			break
		}
		// A topic created a moment ago may not be in the metadata yet.
		if !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("attempt log sync: %w", errors.Join(ctx.Err(), err))
		case <-time.After(10 * syncPoll):
		}
	}
	tick := time.NewTicker(syncPoll)
	defer tick.Stop()
	for {
		if l.caughtUp(want) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("attempt log sync: %w", ctx.Err())
		case <-l.done:
			return errors.New("attempt log closed")
		case <-tick.C:
		}
	}
}

// ends returns the end offset of every partition that holds records.
func (l *Log) ends(ctx context.Context) (map[int32]int64, error) {
	adm := kadm.NewClient(l.cl)
	ends, err := adm.ListEndOffsets(ctx, l.topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("attempt log end offsets: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, l.topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("attempt log start offsets: %w", err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if s, ok := starts.Lookup(o.Topic, o.Partition); ok && s.Offset >= o.Offset {
			return // empty (or fully expired) partition
		}
		want[o.Partition] = o.Offset
	})
	return want, nil
}

func (l *Log) caughtUp(want map[int32]int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, end := range want {
		if l.next[p] < end {
			return false
		}
	}
	l.stale = false
	return true
}

// Lookup returns the recorded attempt of a command.
func (l *Log) Lookup(commandID string) (Attempt, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.seen[commandID]
	return a, ok
}

// Record writes the attempts of cmds in one synchronous produce (all
// in-sync replicas acknowledged) and returns one error per command, nil
// where the attempt is durable. A command without an id cannot be
// deduplicated and is not recorded (nil error).
func (l *Log) Record(ctx context.Context, cmds []*batonv1.HandoffCommand, callIDs []string) []error {
	errs := make([]error, len(cmds))
	recs := make([]*kgo.Record, 0, len(cmds))
	idx := make([]int, 0, len(cmds))
	at := l.now()
	for i, cmd := range cmds {
		if cmd.GetCommandId() == "" {
			continue
		}
		msg := &batonv1.TransferAttempt{
			CommandId: cmd.GetCommandId(), CallId: callIDs[i], Method: cmd.GetMethod().String(),
			Destination: cmd.GetDestination(), AttemptedAt: timestamppb.New(at), Instance: l.instance,
		}
		// Subject and key are the command id, not the call id: compaction
		// keeps one record per command, not per call.
		ev, err := events.New(Source, cmd.GetCommandId(), msg, at)
		if err == nil {
			var rec *kgo.Record
			rec, err = events.Encode(l.topic, ev)
			if err == nil {
				recs = append(recs, rec)
				idx = append(idx, i)
				continue
			}
		}
		errs[i] = fmt.Errorf("attempt of command %s: %w", cmd.GetCommandId(), err)
	}
	if len(recs) == 0 {
		return errs
	}
	results := l.cl.ProduceSync(ctx, recs...)
	// Results come in completion order: match them by record.
	byRec := make(map[*kgo.Record]int, len(recs))
	for j, rec := range recs {
		byRec[rec] = idx[j]
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if at.Sub(l.pruned) > pruneEvery {
		l.pruneLocked()
	}
	for _, r := range results {
		i := byRec[r.Record]
		if r.Err != nil {
			errs[i] = fmt.Errorf("record attempt of command %s: %w", cmds[i].GetCommandId(), r.Err)
			continue
		}
		l.seen[cmds[i].GetCommandId()] = Attempt{CommandID: cmds[i].GetCommandId(), CallID: callIDs[i],
			Method: cmds[i].GetMethod().String(), AttemptedAt: at, Instance: l.instance}
	}
	return errs
}

// pruneLocked forgets attempts older than the retention.
func (l *Log) pruneLocked() {
	l.pruned = l.now()
	for id, a := range l.seen {
		if l.now().Sub(a.AttemptedAt) > l.retention {
			delete(l.seen, id)
		}
	}
}

// OnAssigned is a kgo.OnPartitionsAssigned callback for the handoffs
// consumer: new partitions may hold commands another instance attempted.
func (l *Log) OnAssigned(context.Context, *kgo.Client, map[string][]int32) { l.Invalidate() }

// Close stops reading and closes the log's client.
func (l *Log) Close() {
	l.stop()
	l.cl.Close()
	<-l.done
}
