package checker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
)

// Record is one data record of a Baton topic below the partition's last
// stable offset, as the log holds it, with what a read_committed consumer
// made of it.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       string
	// ProducerID is the producer that wrote the record (-1 when unknown).
	ProducerID int64
	// Transactional is set for records written inside a transaction.
	Transactional bool
	// Aborted is set when the record's transaction did not commit: no
	// commit marker of its producer follows it (see abortedOffsets).
	Aborted bool
	// Withheld is set when a read_committed consumer was not given the
	// record. Aborted records must be withheld, and only they.
	Withheld bool
	// Event is the decoded CloudEvent; zero when Err is set.
	Event events.Event
	// Err is why the record does not decode as a Baton event.
	Err error
	// Tombstone is set for a record with no value: a compaction delete
	// (transfer ends a bridge's lease on the attempt log with one).
	Tombstone bool
}

// where names a record's position for findings.
func (r Record) where() string { return fmt.Sprintf("%s/%d@%d", r.Topic, r.Partition, r.Offset) }

// idleLimit is how long the read_committed pass waits without a record
// before it gives up on partitions it has not finished: the records it
// still expected count as withheld.
const idleLimit = 5 * time.Second

// Read reads every record of topics (all topics named baton.* when none is
// given) from the start of each partition up to its last stable offset at
// the time of the call, twice: once without isolation and with control
// records, to learn which transactions committed and which aborted, and
// once as a read_committed consumer, to learn what consumers are given.
// Records at or past the last stable offset (open transactions) are not
// returned.
func Read(ctx context.Context, brokers string, topics ...string) ([]Record, error) {
	seeds := strings.Split(brokers, ",")
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if len(topics) == 0 {
		if topics, err = batonTopics(ctx, adm); err != nil {
			return nil, err
		}
	}
	stable, err := adm.ListCommittedOffsets(ctx, topics...)
	if err == nil {
		err = stable.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list last stable offsets of %v: %w", topics, err)
	}
	ends := map[tp]int64{}
	stable.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			ends[tp{o.Topic, o.Partition}] = o.Offset
		}
	})
	if len(ends) == 0 {
		return nil, nil
	}
	// The markers of transactions with records below the stable offset
	// may sit above it (another transaction opened in between): the raw
	// pass reads to the high watermark to see them.
	hwms, err := adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = hwms.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %v: %w", topics, err)
	}
	high := map[tp]int64{}
	for k, end := range ends {
		high[k] = end
		if o, ok := hwms.Lookup(k.topic, k.partition); ok && o.Offset > end {
			high[k] = o.Offset
		}
	}

	all, err := readAll(ctx, seeds, high, kgo.ReadUncommitted())
	if err != nil {
		return nil, fmt.Errorf("read without isolation: %w", err)
	}
	aborted := abortedOffsets(all)
	var raw []*kgo.Record
	for _, r := range all {
		if r.Offset < ends[tp{r.Topic, r.Partition}] {
			raw = append(raw, r)
		}
	}
	// The read_committed pass stops at the last record it should get on
	// each partition: the last one below the stable offset that is not
	// aborted (a control record counts).
	want := map[tp]int64{}
	for _, r := range raw {
		k := tp{r.Topic, r.Partition}
		if !aborted[k][r.Offset] {
			want[k] = r.Offset + 1
		}
	}
	delivered, err := readAll(ctx, seeds, want, kgo.ReadCommitted())
	if err != nil {
		return nil, fmt.Errorf("read committed: %w", err)
	}
	got := map[tp]map[int64]bool{}
	for _, r := range delivered {
		k := tp{r.Topic, r.Partition}
		if got[k] == nil {
			got[k] = map[int64]bool{}
		}
		got[k][r.Offset] = true
	}

	var out []Record
	for _, r := range raw {
		if r.Attrs.IsControl() {
			continue
		}
		k := tp{r.Topic, r.Partition}
		rec := Record{
			Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: string(r.Key),
			ProducerID: r.ProducerID, Transactional: r.Attrs.IsTransactional(),
			Aborted: aborted[k][r.Offset], Withheld: !got[k][r.Offset], Tombstone: r.Value == nil,
		}
		rec.Event, rec.Err = events.Decode(r)
		out = append(out, rec)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Offset < b.Offset
	})
	return out, nil
}

type tp struct {
	topic     string
	partition int32
}

// batonTopics lists the broker's topics whose name starts with "baton.".
func batonTopics(ctx context.Context, adm *kadm.Client) ([]string, error) {
	details, err := adm.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	var out []string
	for _, name := range details.Names() {
		if strings.HasPrefix(name, "baton.") {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("the broker has no baton.* topic")
	}
	slices.Sort(out)
	return out, nil
}

// readAll reads each partition of ends from its start until the record
// before its end offset was seen, or until nothing came for idleLimit.
// Control records are kept.
func readAll(ctx context.Context, seeds []string, ends map[tp]int64, iso kgo.IsolationLevel) ([]*kgo.Record, error) {
	offsets := map[string]map[int32]kgo.Offset{}
	for k := range ends {
		if offsets[k.topic] == nil {
			offsets[k.topic] = map[int32]kgo.Offset{}
		}
		offsets[k.topic][k.partition] = kgo.NewOffset().AtStart()
	}
	if len(offsets) == 0 {
		return nil, nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumePartitions(offsets),
		kgo.FetchIsolationLevel(iso), kgo.KeepControlRecords(), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	left := map[tp]int64{}
	for k, end := range ends {
		left[k] = end
	}
	var out []*kgo.Record
	idleSince := time.Now()
	for len(left) > 0 {
		pollCtx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := cl.PollFetches(pollCtx)
		cancel()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var fetchErr error
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && fetchErr == nil {
				fetchErr = fmt.Errorf("fetch %s/%d: %w", topic, p, err)
			}
		})
		if fetchErr != nil {
			return nil, fetchErr
		}
		progress := false
		fetches.EachRecord(func(r *kgo.Record) {
			k := tp{r.Topic, r.Partition}
			end, ok := left[k]
			if !ok || r.Offset >= end {
				return
			}
			progress = true
			out = append(out, r)
			if r.Offset == end-1 {
				delete(left, k)
			}
		})
		if progress {
			idleSince = time.Now()
		} else if time.Since(idleSince) > idleLimit {
			break // what is still missing is reported as withheld
		}
	}
	return out, nil
}

// abortedOffsets finds the records of aborted transactions. A
// transactional record is committed only when a commit marker of its
// producer follows it in the partition. It is aborted when an abort marker
// follows; when its producer writes again with a newer epoch first (the
// transaction was fenced); or when no marker follows at all (kfake, loading
// its data dir after a crash, aborts the transactions left open without
// writing markers). Markers of aborted transactions count as aborted too.
func abortedOffsets(recs []*kgo.Record) map[tp]map[int64]bool {
	type pp struct {
		tp
		producer int64
	}
	type pending struct {
		offset int64
		epoch  int16
	}
	open := map[pp][]pending{}
	out := map[tp]map[int64]bool{}
	abort := func(k tp, offsets ...int64) {
		if out[k] == nil {
			out[k] = map[int64]bool{}
		}
		for _, o := range offsets {
			out[k][o] = true
		}
	}
	abortOpen := func(k pp) {
		for _, p := range open[k] {
			abort(k.tp, p.offset)
		}
		delete(open, k)
	}
	for _, r := range recs {
		if !r.Attrs.IsTransactional() {
			continue
		}
		k := pp{tp{r.Topic, r.Partition}, r.ProducerID}
		if !r.Attrs.IsControl() {
			if ps := open[k]; len(ps) > 0 && ps[0].epoch < r.ProducerEpoch {
				abortOpen(k)
			}
			open[k] = append(open[k], pending{r.Offset, r.ProducerEpoch})
			continue
		}
		// A control record's key is version (int16) then type (int16):
		// 0 aborts, 1 commits.
		if len(r.Key) >= 4 && r.Key[2] == 0 && r.Key[3] == 0 {
			abortOpen(k)
			abort(k.tp, r.Offset)
		}
		delete(open, k)
	}
	for k := range open {
		abortOpen(k)
	}
	return out
}
