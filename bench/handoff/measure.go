package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/hops"
)

// stamps holds, per call id, when it passed each point (first time only).
type stamps struct {
	mu sync.Mutex
	at map[string]map[string]time.Time
}

func newStamps() *stamps { return &stamps{at: map[string]map[string]time.Time{}} }

func (s *stamps) mark(id, point string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.at[id]
	if m == nil {
		m = map[string]time.Time{}
		s.at[id] = m
	}
	if _, ok := m[point]; !ok || lastWins[point] {
		m[point] = t
	}
}

// lastWins are the points a call passes more than once whose last pass
// counts: analytics polls and writes every outcome of a transfer (accepted,
// then the final one); the budget ends at the final outcome's row.
var lastWins = map[string]bool{hops.AnalyticsPolled: true, hops.AnalyticsWritten: true}

func (s *stamps) get(id, point string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.at[id][point]
	return t, ok
}

// Points the bench itself marks, and the events' ce_time it reads.
const (
	pAgentPost   = "agent.post"
	pAgentAcked  = "agent.acked"
	pAPI         = "api.requested"
	pRefer       = "sbc.refer"
	pNotifySent  = "sbc.notify"
	pIngressNote = "ingress.notify"
	pOutcome     = "transfer.outcome"
)

// hop is one step of the budget, from one point to the next.
type hop struct{ name, from, to string }

var referHops = []hop{
	{"agent POST -> API handler (HTTP)", pAgentPost, pAPI},
	{"API -> Kafka -> router poll", pAPI, hops.RouterConsumed},
	{"router decide", hops.RouterConsumed, hops.RouterDecided},
	{"router produce + commit", hops.RouterDecided, hops.RouterCommitted},
	{"EndTxn -> transfer poll (<0: sooner)", hops.RouterCommitted, hops.TransferConsumed},
	{"transfer attempt log + build", hops.TransferConsumed, hops.TransferSending},
	{"send: SIP client -> SBC socket", hops.TransferSending, pRefer},
	{"= agent POST -> REFER on the wire", pAgentPost, pRefer},
	{"(agent POST -> 202 from the API)", pAgentPost, pAgentAcked},
}

var notifyHops = []hop{
	{"NOTIFY sent -> ingress publishes", pNotifySent, pIngressNote},
	{"ingress -> Kafka -> transfer poll", pIngressNote, hops.TransferNotify},
	{"transfer: NOTIFY polled -> final outcome", hops.TransferNotify, pOutcome},
	{"outcome -> Kafka -> analytics poll", pOutcome, hops.AnalyticsPolled},
	{"analytics batch wait + insert + commit", hops.AnalyticsPolled, hops.AnalyticsWritten},
	{"= NOTIFY sent -> outcome row written", pNotifySent, hops.AnalyticsWritten},
}

// readEvents reads the calls and transfers topics and marks the ce_time
// of the events the budget needs.
func readEvents(ctx context.Context, broker string, st *stamps) (func(), error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ConsumeTopics("baton.calls", "baton.transfers"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("event reader: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil || fs.IsClientClosed() {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				var typ, at string
				for _, h := range r.Headers {
					switch h.Key {
					case events.HeaderType:
						typ = string(h.Value)
					case events.HeaderTime:
						at = string(h.Value)
					}
				}
				point := map[string]string{events.TypeHandoffRequested: pAPI, events.TypeNotifyReceived: pIngressNote,
					events.TypeTransferOutcome: pOutcome}[typ]
				if point == "" {
					return
				}
				if point == pOutcome {
					// Only the final outcome (after the NOTIFY) counts.
					ev, err := events.Decode(r)
					o, ok := ev.Data.(*batonv1.TransferOutcome)
					if err != nil || !ok || (o.GetStatus() != batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED &&
						o.GetStatus() != batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED) {
						return
					}
				}
				if t, err := time.Parse(time.RFC3339Nano, at); err == nil {
					st.mark(string(r.Key), point, t)
				}
			})
		}
	}()
	return func() {
		cancel()
		<-done
		cl.Close()
	}, nil
}

// readHops adds the services' hop files to st.
func readHops(files map[string]string, st *stamps) error {
	for svc, path := range files {
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("hops of %s: %w", svc, err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) != 3 {
				continue
			}
			ns, err := strconv.ParseInt(fields[2], 10, 64)
			if err != nil {
				continue
			}
			st.mark(fields[1], fields[0], time.Unix(0, ns))
		}
		err = errors.Join(sc.Err(), f.Close())
		if err != nil {
			return fmt.Errorf("hops of %s: %w", svc, err)
		}
	}
	return nil
}

// pace calls f(i) for i in [0, n) at rate per second, each in its own
// goroutine, and waits for all.
func pace(ctx context.Context, n, rate int, f func(i int)) {
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < n && ctx.Err() == nil; i++ {
		if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(i)
		}()
	}
	wg.Wait()
}

// agent asks the router's API for handoffs.
type agent struct {
	api string
	hc  *http.Client
}

func (a *agent) handoff(ctx context.Context, id string) (time.Time, time.Time, error) {
	body := []byte(`{"destination":"support","reason":"bench"}`)
	u := a.api + "/v1/calls/" + url.PathEscape(id) + "/handoff"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	req.Header.Set("Authorization", "Bearer "+apiToken)
	req.Header.Set("Content-Type", "application/json")
	sent := time.Now()
	res, err := a.hc.Do(req)
	if err != nil {
		return sent, time.Time{}, err
	}
	acked := time.Now()
	msg, _ := io.ReadAll(io.LimitReader(res.Body, 512))
	_ = res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		return sent, acked, fmt.Errorf("handoff %s: %d %s", id, res.StatusCode, msg)
	}
	return sent, acked, nil
}

// summary is a hop's p50 and p99 over the calls that passed both points.
type summary struct {
	n        int
	p50, p99 time.Duration
}

func summarize(st *stamps, ids []string, h hop) summary {
	var d []time.Duration
	for _, id := range ids {
		a, ok1 := st.get(id, h.from)
		b, ok2 := st.get(id, h.to)
		if ok1 && ok2 {
			d = append(d, b.Sub(a))
		}
	}
	return quantiles(d)
}

func quantiles(d []time.Duration) summary {
	if len(d) == 0 {
		return summary{}
	}
	slices.Sort(d)
	q := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	return summary{n: len(d), p50: q(.5), p99: q(.99)}
}

// baseline is a bare franz-go produce → group consume round trip on the
// same broker: franz-go's defaults but no linger, read_committed.
type baseline struct {
	prod, cons *kgo.Client
	mu         sync.Mutex
	sent       map[string]time.Time
	lat        []time.Duration
	stop       func()
}

func startBaseline(ctx context.Context, broker string) (*baseline, error) {
	prod, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ProducerLinger(0))
	if err != nil {
		return nil, fmt.Errorf("baseline producer: %w", err)
	}
	cons, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ConsumerGroup("bench-base"), kgo.ConsumeTopics("bench.base"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		prod.Close()
		return nil, fmt.Errorf("baseline consumer: %w", err)
	}
	b := &baseline{prod: prod, cons: cons, sent: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			fs := cons.PollFetches(ctx)
			if ctx.Err() != nil || fs.IsClientClosed() {
				return
			}
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				b.mu.Lock()
				if t, ok := b.sent[string(r.Key)]; ok {
					b.lat = append(b.lat, now.Sub(t))
					delete(b.sent, string(r.Key))
				}
				b.mu.Unlock()
			})
		}
	}()
	b.stop = func() {
		cancel()
		<-done
		cons.Close()
		prod.Close()
	}
	return b, nil
}

// measure produces n records at rate and returns the round trips.
func (b *baseline) measure(ctx context.Context, prefix string, n, rate int) summary {
	var errs atomic.Int64
	pace(ctx, n, rate, func(i int) {
		key := fmt.Sprintf("%s-%d", prefix, i)
		b.mu.Lock()
		b.sent[key] = time.Now()
		b.mu.Unlock()
		if err := b.prod.ProduceSync(ctx, &kgo.Record{Topic: "bench.base", Key: []byte(key), Value: []byte("x")}).FirstErr(); err != nil {
			errs.Add(1)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b.mu.Lock()
		left := len(b.sent)
		b.mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.lat
	b.lat, b.sent = nil, map[string]time.Time{}
	return quantiles(l)
}
