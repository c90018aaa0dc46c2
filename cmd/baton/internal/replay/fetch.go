// Package replay finds every record of one call on Baton's topics and
// shows it: an ordered timeline with the time between steps, a SIP ladder
// (text, or SVG inside HTML), and NDJSON export that can be replayed
// without a broker.
package replay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/kafka"
)

// Query says which call to find and where to look.
type Query struct {
	CallID string
	Topics []string
	// Since and Until bound the record timestamps read; zero Until is now.
	Since, Until time.Time
}

// Progress reports how much was scanned, for long reads.
type Progress func(topic string, partition int32, scanned, total int64)

// Fetch reads the records keyed by q.CallID. It reads only the partition
// the key hashes to on each topic, and only from the first offset at or
// after q.Since, so finding one call among millions reads a sliver of the
// log.
func Fetch(ctx context.Context, cl *kgo.Client, q Query, progress Progress) ([]Record, error) {
	if q.CallID == "" {
		return nil, errors.New("a call id is required")
	}
	adm := kadm.NewClient(cl)
	details, err := adm.ListTopics(ctx, q.Topics...)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	starts, err := adm.ListOffsetsAfterMilli(ctx, q.Since.UnixMilli(), q.Topics...)
	if err != nil {
		return nil, fmt.Errorf("list offsets at %s: %w", q.Since.Format(time.RFC3339), err)
	}
	// The last stable offset: read-committed reading cannot go past it.
	ends, err := adm.ListCommittedOffsets(ctx, q.Topics...)
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}

	type span struct{ start, end int64 }
	want := map[string]map[int32]span{}
	for _, topic := range q.Topics {
		d, ok := details[topic]
		if !ok || d.Err != nil {
			return nil, fmt.Errorf("topic %s: not found on the broker", topic)
		}
		p := kafka.PartitionFor([]byte(q.CallID), len(d.Partitions))
		start, okStart := starts.Lookup(topic, p)
		end, okEnd := ends.Lookup(topic, p)
		if !okStart || !okEnd {
			return nil, fmt.Errorf("topic %s partition %d: offsets unavailable", topic, p)
		}
		if start.Err != nil || end.Err != nil {
			return nil, fmt.Errorf("topic %s partition %d: %w", topic, p, errors.Join(start.Err, end.Err))
		}
		if start.Offset < 0 || start.Offset >= end.Offset {
			continue // nothing at or after Since
		}
		want[topic] = map[int32]span{p: {start.Offset, end.Offset}}
	}
	if len(want) == 0 {
		return nil, nil
	}

	offsets := map[string]map[int32]kgo.Offset{}
	remaining := 0
	for topic, parts := range want {
		offsets[topic] = map[int32]kgo.Offset{}
		for p, s := range parts {
			offsets[topic][p] = kgo.NewOffset().At(s.start)
			remaining++
		}
	}
	reader, err := kgo.NewClient(append(clientSeeds(cl),
		kgo.ConsumePartitions(offsets),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Transaction markers take offsets too; seeing them tells the
		// reader it reached the end offset.
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(200*time.Millisecond),
	)...)
	if err != nil {
		return nil, fmt.Errorf("reader: %w", err)
	}
	defer reader.Close()

	until := q.Until
	var out []Record
	done := map[string]map[int32]bool{}
	for remaining > 0 {
		fetches := reader.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("read call %s: %w", q.CallID, err)
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) {
			ferr = errors.Join(ferr, fmt.Errorf("%s/%d: %w", t, p, err))
		})
		if ferr != nil {
			return out, fmt.Errorf("fetch: %w", ferr)
		}
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			s := want[fp.Topic][fp.Partition]
			for _, r := range fp.Records {
				if r.Offset >= s.end {
					break
				}
				if !r.Attrs.IsControl() && string(r.Key) == q.CallID && (until.IsZero() || !r.Timestamp.After(until)) {
					out = append(out, Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
						Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp})
				}
			}
			if n := len(fp.Records); n > 0 {
				last := fp.Records[n-1].Offset
				if progress != nil {
					progress(fp.Topic, fp.Partition, last+1-s.start, s.end-s.start)
				}
				if last+1 >= s.end && !done[fp.Topic][fp.Partition] {
					if done[fp.Topic] == nil {
						done[fp.Topic] = map[int32]bool{}
					}
					done[fp.Topic][fp.Partition] = true
					remaining--
				}
			}
		})
	}
	return out, nil
}

// clientSeeds copies the seed brokers of cl for a second client.
func clientSeeds(cl *kgo.Client) []kgo.Opt {
	return []kgo.Opt{kgo.SeedBrokers(cl.OptValue(kgo.SeedBrokers).([]string)...)}
}
