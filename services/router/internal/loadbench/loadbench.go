// Package loadbench measures, under steady load, how long a record takes
// from being produced to being visible to a read_committed consumer of
// another topic: HandoffRequested on the calls topic to HandoffCommand on
// the handoffs topic through the router, and the same round trip through
// paths without the router, for a baseline measured in the same run.
//
// It is driven by cmd/routerbench (bench/router/run.sh); nothing here runs
// load under `go test`.
package loadbench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// Source is the ce_source of the records the load program produces.
const Source = "baton/routerbench"

// Reason is the HandoffRequested reason that only the last rule of the
// benchmark config matches, so every request evaluates every rule.
const Reason = "agent_request"

// Path is one way from a produced record to a committed one.
type Path struct {
	// Name labels the path in the output.
	Name string
	// In is the topic the requests are produced to; Out is the topic the
	// answers are read from (read_committed). They may be the same.
	In, Out string
	// Want is the ce_type of an answer; other records keyed by a request's
	// call id (a refusal) are counted as wrong.
	Want string
}

// Level is one steady load.
type Level struct {
	// Rate is requests per second.
	Rate int
	// Warmup is sent first and left out of the figures.
	Warmup time.Duration
	// Duration is the measured part.
	Duration time.Duration
}

// Requests is how many requests the level sends, warm-up included.
func (l Level) Requests() int { return l.Rate * int((l.Warmup+l.Duration)/time.Millisecond) / 1000 }

// warm is how many of them are warm-up.
func (l Level) warm() int { return l.Rate * int(l.Warmup/time.Millisecond) / 1000 }

// Result is what one path did at one level.
type Result struct {
	Path string
	Rate int
	// Measured is the number of requests after the warm-up; Received how
	// many of them were answered in time; Wrong answers of another type;
	// ProduceErrors requests the broker did not take.
	Measured, Received, Wrong, ProduceErrors int
	// Achieved is the send rate over the measured part, per second.
	Achieved float64
	// Latency of the answered measured requests.
	Latency Summary
}

// CallIDs names n calls: prefix-000000, prefix-000001, ...
func CallIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%06d", prefix, i)
	}
	return ids
}

// StartRecords encodes a CallStarted for each call, as ingress would.
func StartRecords(topic string, ids []string, at time.Time) ([]*kgo.Record, error) {
	recs := make([]*kgo.Record, len(ids))
	for i, id := range ids {
		msg := &batonv1.CallStarted{
			Dialog: &batonv1.Dialog{
				CallId: "sip-" + id, LocalTag: "lt-" + id, RemoteTag: "rt-" + id,
				LocalUri: "sip:agent@127.0.0.1", RemoteUri: "sip:+15551230001@10.0.0.1",
				RemoteTarget: "sip:caller@10.0.0.1:5060", RouteSet: []string{"<sip:p1.example.com;lr>"}, NextLocalCseq: 1,
			},
			SipHeaders: []*batonv1.SipHeader{
				{Name: "From", Value: "<sip:+15551230001@10.0.0.1>;tag=rt-" + id},
				{Name: "To", Value: "<sip:+15559870002@127.0.0.1>"},
				{Name: "X-Customer-Id", Value: "C-" + id},
			},
			Variables:    map[string]string{"Customer-Id": "C-" + id},
			CallerNumber: "+15551230001",
			CalleeNumber: "+15559870002",
		}
		rec, err := encode(topic, id, msg, at)
		if err != nil {
			return nil, err
		}
		recs[i] = rec
	}
	return recs, nil
}

// RequestRecords encodes a HandoffRequested without destination for each
// call, so the rules decide, as the agent API would.
func RequestRecords(topic string, ids []string, at time.Time) ([]*kgo.Record, error) {
	recs := make([]*kgo.Record, len(ids))
	for i, id := range ids {
		msg := &batonv1.HandoffRequested{
			CallId: id, RequestId: uuid.NewString(), Reason: Reason,
			Utterance: "I would like to talk to a person", RequestedBy: "agent",
			Variables: map[string]string{"intent": "billing"},
		}
		rec, err := encode(topic, id, msg, at)
		if err != nil {
			return nil, err
		}
		recs[i] = rec
	}
	return recs, nil
}

func encode(topic, id string, msg proto.Message, at time.Time) (*kgo.Record, error) {
	ev, err := events.New(Source, id, msg, at)
	if err != nil {
		return nil, fmt.Errorf("new event for call %s: %w", id, err)
	}
	rec, err := events.Encode(topic, ev)
	if err != nil {
		return nil, fmt.Errorf("encode event for call %s: %w", id, err)
	}
	return rec, nil
}

// seedChunk bounds the records produced per ProduceSync while seeding.
const seedChunk = 1000

// Seed produces recs and waits until the broker acknowledged them all.
func Seed(ctx context.Context, prod *kgo.Client, recs []*kgo.Record) error {
	for chunk := range slices.Chunk(recs, seedChunk) {
		if err := prod.ProduceSync(ctx, chunk...).FirstErr(); err != nil {
			return fmt.Errorf("seed %d records to %s: %w", len(recs), recs[0].Topic, err)
		}
	}
	return nil
}

// WaitCaughtUp polls until group has committed offsets at the end of every
// partition of topic, or ctx ends.
func WaitCaughtUp(ctx context.Context, adm *kadm.Client, group, topic string) error {
	for {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err == nil {
			var committed kadm.OffsetResponses
			committed, err = adm.FetchOffsets(ctx, group)
			if err == nil {
				behind := false
				ends.Each(func(e kadm.ListedOffset) {
					c, ok := committed.Lookup(topic, e.Partition)
					if e.Offset > 0 && (!ok || c.At < e.Offset) {
						behind = true
					}
				})
				if !behind {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for group %s to consume %s: %w", group, topic, errors.Join(ctx.Err(), err))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Measure sends reqs (keyed by call id, one per call) to p.In at the
// level's rate on a fixed schedule, reads p.Out read_committed from its
// current end, and times each request from just before it is handed to
// the producer to the moment its answer is polled. It waits up to drain
// after the last send for missing answers.
func Measure(ctx context.Context, prod *kgo.Client, brokers []string, p Path, lvl Level, reqs []*kgo.Record, drain time.Duration) (Result, error) {
	res := Result{Path: p.Name, Rate: lvl.Rate}
	if lvl.Rate <= 0 || len(reqs) != lvl.Requests() {
		return res, fmt.Errorf("measure %s: %d requests for %d/s over %v", p.Name, len(reqs), lvl.Rate, lvl.Warmup+lvl.Duration)
	}
	index := make(map[string]int, len(reqs))
	for i, r := range reqs {
		r.Topic = p.In
		index[string(r.Key)] = i
	}

	// Read the answers from the current end of the output topic.
	ends, err := kadm.NewClient(prod).ListEndOffsets(ctx, p.Out)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return res, fmt.Errorf("end offsets of %s: %w", p.Out, err)
	}
	start := map[string]map[int32]kgo.Offset{p.Out: {}}
	ends.Each(func(o kadm.ListedOffset) { start[p.Out][o.Partition] = kgo.NewOffset().At(o.Offset) })
	cons, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(start),
		// Only committed answers count.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if err != nil {
		return res, fmt.Errorf("new consumer of %s: %w", p.Out, err)
	}
	defer cons.Close()

	base := time.Now()
	sent := make([]atomic.Int64, len(reqs))    // ns since base
	arrived := make([]atomic.Int64, len(reqs)) // ns since base; 0 = not yet
	var produceErrors, wrong atomic.Int64
	allIn := make(chan struct{})
	cctx, stopConsumer := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		got := 0
		for cctx.Err() == nil {
			fs := cons.PollFetches(cctx)
			now := int64(time.Since(base))
			fs.EachRecord(func(r *kgo.Record) {
				i, ok := index[string(r.Key)]
				if !ok {
					return
				}
				if typeOf(r) != p.Want {
					wrong.Add(1)
					return
				}
				if arrived[i].CompareAndSwap(0, now) {
					if got++; got == len(reqs) {
						close(allIn)
					}
				}
			})
		}
	})

	interval := time.Second / time.Duration(lvl.Rate)
	for i, r := range reqs {
		due := time.Duration(i) * interval
		if d := due - time.Since(base); d > 0 {
			time.Sleep(d)
		}
		sent[i].Store(int64(time.Since(base)))
		prod.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				produceErrors.Add(1)
			}
		})
	}
	select {
	case <-allIn:
	case <-time.After(drain):
	case <-ctx.Done():
	}
	stopConsumer()
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("measure %s at %d/s: %w", p.Name, lvl.Rate, err)
	}

	first := lvl.warm()
	res.Measured = len(reqs) - first
	var lat []time.Duration
	for i := first; i < len(reqs); i++ {
		if a := arrived[i].Load(); a != 0 {
			lat = append(lat, time.Duration(a-sent[i].Load()))
		}
	}
	res.Received = len(lat)
	res.Wrong = int(wrong.Load())
	res.ProduceErrors = int(produceErrors.Load())
	if span := time.Duration(sent[len(reqs)-1].Load() - sent[first].Load()); res.Measured > 1 && span > 0 {
		res.Achieved = float64(res.Measured-1) / span.Seconds()
	}
	res.Latency = Summarize(lat)
	return res, nil
}

func typeOf(r *kgo.Record) string {
	for _, h := range r.Headers {
		if h.Key == events.HeaderType {
			return string(h.Value)
		}
	}
	return ""
}

// Summary is a latency distribution.
type Summary struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

// Summarize computes nearest-rank percentiles; it sorts d.
func Summarize(d []time.Duration) Summary {
	if len(d) == 0 {
		return Summary{}
	}
	slices.Sort(d)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(d)))) - 1
		return d[max(i, 0)]
	}
	return Summary{N: len(d), P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: d[len(d)-1]}
}
