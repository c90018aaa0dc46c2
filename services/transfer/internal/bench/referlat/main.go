// Command referlat measures the time from a HandoffCommand being produced
// to its REFER arriving at the SBC, through a real transfer Service, an
// in-process kfake broker over TCP and SIP over UDP on loopback, at
// several command rates (the other commands are the background load).
// The baseline, measured in the same run at the same rates, is the
// broker alone: produce to a group consumer's poll. Run it through
// bench/transfer/refer.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/services/transfer/internal/attempts"
	"github.com/baton-voice/baton/services/transfer/internal/transfer"
	"github.com/baton-voice/baton/services/transfer/internal/uac"
)

func main() {
	ratesFlag := flag.String("rates", "100,500", "commands per second")
	duration := flag.Duration("duration", 5*time.Second, "per rate")
	flag.Parse()
	var rates []int
	for _, f := range strings.Split(*ratesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "referlat: bad -rates entry %q\n", f)
			os.Exit(2)
		}
		rates = append(rates, n)
	}
	if err := run(os.Stdout, rates, *duration); err != nil {
		fmt.Fprintf(os.Stderr, "referlat: %v\n", err)
		os.Exit(1)
	}
}

// arrivals maps a call id to when its REFER (or, for the baseline, its
// record) arrived.
type arrivals struct {
	mu   sync.Mutex
	sent map[string]time.Time
	lat  []time.Duration
}

func (a *arrivals) send(id string) {
	a.mu.Lock()
	a.sent[id] = time.Now()
	a.mu.Unlock()
}

func (a *arrivals) arrive(id string) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if t, ok := a.sent[id]; ok {
		a.lat = append(a.lat, now.Sub(t))
		delete(a.sent, id)
	}
}

func (a *arrivals) reset() ([]time.Duration, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, missing := a.lat, len(a.sent)
	a.lat, a.sent = nil, map[string]time.Time{}
	slices.Sort(l)
	return l, missing
}

func q(l []time.Duration, p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	return l[min(len(l)-1, int(p*float64(len(l))))]
}

func run(w io.Writer, rates []int, duration time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	cfg := kafka.DefaultConfig()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, append(cfg.Topics.All(), "bench.base")...))
	if err != nil {
		return fmt.Errorf("kfake: %w", err)
	}
	defer cluster.Close()
	cfg.Brokers = cluster.ListenAddrs()

	// The SBC: answers every REFER 405 (the command ends at once).
	arr := &arrivals{sent: map[string]time.Time{}}
	sbcAddr, closeSBC, err := startSBC(ctx, arr)
	if err != nil {
		return err
	}
	defer closeSBC()

	sipClient, err := uac.Listen(ctx, "127.0.0.1:0", "127.0.0.1", logger, uac.Options{})
	if err != nil {
		return err
	}
	defer func() { _ = sipClient.Close() }()
	alog, err := attempts.Open(ctx, kafka.ClientOpts(cfg, logger), attempts.Options{
		Topic: "baton.transfer-attempts", Partitions: 6, ReplicationFactor: -1, Retention: time.Hour, Instance: "bench",
	}, logger)
	if err != nil {
		return err
	}
	defer alog.Close()
	cl, err := kgo.NewClient(append(append(kafka.ClientOpts(cfg, logger),
		kafka.ConsumerOpts("baton-transfer", cfg.Topics.Handoffs, cfg.Topics.Calls)...),
		kgo.OnPartitionsAssigned(alog.OnAssigned))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	svc := transfer.New(cl, sipClient, alog, transfer.Options{
		Topics: cfg.Topics, NotifyTimeout: 5 * time.Second, MaxInFlight: 10000, ProduceTimeout: 5 * time.Second,
		ShutdownTimeout: time.Second,
	}, logger)
	runCtx, stopRun := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	defer func() {
		stopRun()
		if err := <-done; err != nil {
			fmt.Fprintf(os.Stderr, "referlat: transfer: %v\n", err)
		}
	}()

	// Baseline consumer: the broker alone.
	base := &arrivals{sent: map[string]time.Time{}}
	bcl, err := kgo.NewClient(append(kafka.ClientOpts(cfg, logger), kafka.ConsumerOpts("bench-base", "bench.base")...)...)
	if err != nil {
		return err
	}
	defer bcl.Close()
	go func() {
		for {
			fs := bcl.PollFetches(ctx)
			if ctx.Err() != nil || fs.IsClientClosed() {
				return
			}
			fs.EachRecord(func(r *kgo.Record) { base.arrive(string(r.Key)) })
		}
	}()

	pub, err := kgo.NewClient(kafka.ClientOpts(cfg, logger)...)
	if err != nil {
		return err
	}
	defer pub.Close()

	// Warm up: group joins, first REFER.
	if err := load(ctx, pub, cfg.Topics.Handoffs, sbcAddr, arr, 20, time.Second, "warm"); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	arr.reset()

	fmt.Fprintf(w, "%-22s %6s %8s %9s %9s %9s %8s\n", "path", "rate/s", "samples", "p50_ms", "p99_ms", "max_ms", "missing")
	for _, rate := range rates {
		if err := load(ctx, pub, "bench.base", "", base, rate, duration, fmt.Sprintf("b%d", rate)); err != nil {
			return err
		}
		time.Sleep(time.Second)
		bl, bmiss := base.reset()
		if err := load(ctx, pub, cfg.Topics.Handoffs, sbcAddr, arr, rate, duration, fmt.Sprintf("r%d", rate)); err != nil {
			return err
		}
		time.Sleep(2 * time.Second)
		rl, rmiss := arr.reset()
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		fmt.Fprintf(w, "%-22s %6d %8d %9.2f %9.2f %9.2f %8d\n", "kafka produce->poll", rate, len(bl), ms(q(bl, .5)), ms(q(bl, .99)),
			ms(q(bl, 1)), bmiss)
		fmt.Fprintf(w, "%-22s %6d %8d %9.2f %9.2f %9.2f %8d\n", "command->REFER", rate, len(rl), ms(q(rl, .5)), ms(q(rl, .99)),
			ms(q(rl, 1)), rmiss)
		if q(bl, .5) > 0 {
			fmt.Fprintf(w, "ratio command->REFER / baseline at %d/s: p50 %.2f, p99 %.2f\n", rate,
				float64(q(rl, .5))/float64(q(bl, .5)), float64(q(rl, .99))/float64(q(bl, .99)))
		}
	}
	return nil
}

// load produces rate commands per second for d; each is a REFER to the
// SBC (or, with no SBC, a bare record for the baseline).
func load(ctx context.Context, pub *kgo.Client, topic, sbcAddr string, arr *arrivals, rate int, d time.Duration, prefix string) error {
	interval := time.Second / time.Duration(rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	var perr error
	var mu sync.Mutex
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		id := fmt.Sprintf("%s-%d", prefix, i)
		var rec *kgo.Record
		if sbcAddr == "" {
			rec = &kgo.Record{Topic: topic, Key: []byte(id), Value: []byte("x")}
		} else {
			cmd := &batonv1.HandoffCommand{
				CommandId: "cmd-" + id, CallId: id, Method: batonv1.Method_METHOD_REFER, Route: "sip:+4930123456@agents.example.com",
				Destination: "support", Attempt: 1,
				Dialog: &batonv1.Dialog{CallId: id, LocalTag: "l-" + id, RemoteTag: "r-" + id, LocalUri: "sip:agent@127.0.0.1",
					RemoteUri: "sip:sbc@" + sbcAddr, RemoteTarget: "sip:sbc@" + sbcAddr, NextLocalCseq: 1,
					Transport: batonv1.Transport_TRANSPORT_UDP, LocalContact: "<sip:baton@127.0.0.1:5060>"},
			}
			ev, err := events.New("bench", id, cmd, time.Now())
			if err != nil {
				return err
			}
			if rec, err = events.Encode(topic, ev); err != nil {
				return err
			}
		}
		arr.send(id)
		wg.Add(1)
		pub.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				perr = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return perr
}

func startSBC(ctx context.Context, arr *arrivals) (string, func(), error) {
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("bench-sbc"))
	if err != nil {
		return "", nil, err
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		return "", nil, err
	}
	var lc net.ListenConfig
	conn, err := lc.ListenPacket(ctx, "udp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv.OnRefer(func(req *sip.Request, tx sip.ServerTransaction) {
		arr.arrive(req.CallID().Value())
		_ = tx.Respond(sip.NewResponseFromRequest(req, 405, "Method Not Allowed", nil))
	})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.ServeUDP(conn)
	}()
	return conn.LocalAddr().String(), func() {
		_ = ua.Close()
		_ = conn.Close()
		<-served
	}, nil
}
