package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A broker that died with transactions open (SIGKILL, crash) leaves their
// records in the log without a marker. kfake, loading the data dir, counts
// them as aborted but writes no abort marker, and a read_committed client
// (franz-go, like Kafka's Java client) then skips every later transactional
// record of that producer in the partition until it meets one: the
// producer's next, committed transactions would be lost to consumers. So
// before the broker takes clients, Start finds those transactions and ends
// them with an abort marker (WriteTxnMarkers, which kfake serves).

// repairTimeout bounds the scan and the markers at start.
const repairTimeout = 2 * time.Minute

// openTxn is a transaction a partition's log leaves open.
type openTxn struct {
	topic     string
	partition int32
	producer  int64
	epoch     int16
}

// abortOpenTxns writes an abort marker for every transaction the log
// leaves open, talking to the broker through gate's private connections.
func abortOpenTxns(ctx context.Context, gate *gatedListener, addr string, logger *slog.Logger) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, repairTimeout)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.Dialer(gate.dial), kgo.KeepControlRecords(),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return 0, fmt.Errorf("repair client: %w", err)
	}
	defer cl.Close()
	open, err := findOpenTxns(ctx, cl)
	if err != nil {
		return 0, err
	}
	for _, o := range open {
		req := kmsg.NewPtrWriteTxnMarkersRequest()
		m := kmsg.NewWriteTxnMarkersRequestMarker()
		m.ProducerID, m.ProducerEpoch, m.Committed = o.producer, o.epoch, false
		mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
		mt.Topic, mt.Partitions = o.topic, []int32{o.partition}
		m.Topics = append(m.Topics, mt)
		req.Markers = append(req.Markers, m)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, fmt.Errorf("abort marker for producer %d on %s/%d: %w", o.producer, o.topic, o.partition, err)
		}
		for _, rm := range resp.Markers {
			for _, rt := range rm.Topics {
				for _, rp := range rt.Partitions {
					if rp.ErrorCode != 0 {
						return 0, fmt.Errorf("abort marker for producer %d on %s/%d: error code %d", o.producer, o.topic, o.partition, rp.ErrorCode)
					}
				}
			}
		}
		logger.WarnContext(ctx, "aborted a transaction left open by a crash", "topic", o.topic, "partition", o.partition,
			"producer_id", o.producer, "producer_epoch", o.epoch)
	}
	return len(open), nil
}

// findOpenTxns reads every partition to its end, control records
// included, and returns the producers whose last transactional records in
// a partition no marker follows.
func findOpenTxns(ctx context.Context, cl *kgo.Client) ([]openTxn, error) {
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("repair: end offsets: %w", err)
	}
	type tp struct {
		topic     string
		partition int32
	}
	offsets := map[string]map[int32]kgo.Offset{}
	left := map[tp]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset <= 0 {
			return
		}
		if offsets[o.Topic] == nil {
			offsets[o.Topic] = map[int32]kgo.Offset{}
		}
		offsets[o.Topic][o.Partition] = kgo.NewOffset().AtStart()
		left[tp{o.Topic, o.Partition}] = o.Offset
	})
	if len(left) == 0 {
		return nil, nil
	}
	cl.AddConsumePartitions(offsets)
	type pp struct {
		tp
		producer int64
	}
	open := map[pp]int16{}
	for len(left) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("repair: read the log: %w", err)
		}
		var fetchErr error
		fetches.EachError(func(t string, p int32, err error) {
			fetchErr = errors.Join(fetchErr, fmt.Errorf("fetch %s/%d: %w", t, p, err))
		})
		if fetchErr != nil {
			return nil, fmt.Errorf("repair: %w", fetchErr)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			k := tp{r.Topic, r.Partition}
			end, ok := left[k]
			if !ok || r.Offset >= end {
				return
			}
			if r.Attrs.IsTransactional() {
				key := pp{k, r.ProducerID}
				if r.Attrs.IsControl() {
					delete(open, key)
				} else {
					open[key] = r.ProducerEpoch
				}
			}
			if r.Offset == end-1 {
				delete(left, k)
			}
		})
	}
	out := make([]openTxn, 0, len(open))
	for k, epoch := range open {
		out = append(out, openTxn{topic: k.topic, partition: k.partition, producer: k.producer, epoch: epoch})
	}
	return out, nil
}

// gatedListener holds the connections of clients until open is called,
// and meanwhile hands the broker the in-process connections dial makes.
type gatedListener struct {
	net.Listener
	addr      net.Addr
	internal  chan net.Conn
	opened    chan struct{}
	closed    chan struct{}
	openOnce  sync.Once
	closeOnce sync.Once
}

func newGatedListener(ln net.Listener, addr net.Addr) *gatedListener {
	return &gatedListener{Listener: ln, addr: addr, internal: make(chan net.Conn),
		opened: make(chan struct{}), closed: make(chan struct{})}
}

// Close closes the real listener and ends a held Accept.
func (g *gatedListener) Close() error {
	g.closeOnce.Do(func() { close(g.closed) })
	return g.Listener.Close()
}

// Addr is the advertised address, which kfake puts in metadata.
func (g *gatedListener) Addr() net.Addr { return g.addr }

// Accept returns in-process connections at once, and those of the real
// listener once the gate is open.
func (g *gatedListener) Accept() (net.Conn, error) {
	select {
	case c := <-g.internal:
		return c, nil
	case <-g.closed:
		return nil, net.ErrClosed
	case <-g.opened:
		return g.Listener.Accept()
	}
}

// open lets clients in.
func (g *gatedListener) open() { g.openOnce.Do(func() { close(g.opened) }) }

// dial is a kgo dialer that connects through the gate, in process.
func (g *gatedListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case g.internal <- server:
		return client, nil
	case <-g.opened:
		_ = client.Close()
		_ = server.Close()
		return nil, errors.New("repair connection after the broker opened")
	case <-g.closed:
		_ = client.Close()
		_ = server.Close()
		return nil, net.ErrClosed
	case <-ctx.Done():
		_ = client.Close()
		_ = server.Close()
		return nil, ctx.Err()
	}
}
