package router

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/router/internal/config"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// BenchmarkRestore measures the restore of one partition holding n open
// calls (one CallStarted each, kfake over TCP, one committed offset past
// them): the time a newly assigned instance takes before it handles its
// first batch. Run: go test -run '^$' -bench Restore -benchtime 3x ./internal/router/
func BenchmarkRestore(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("calls=%d", n), func(b *testing.B) {
			kcfg := kafka.DefaultConfig()
			kcfg.Partitions = 1
			kcfg.Brokers = kafkatest.NewCluster(b, 1, kcfg.Topics.All()...)
			logger := slog.New(slog.DiscardHandler)
			cl, err := kgo.NewClient(kafka.ClientOpts(kcfg, logger)...)
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			now := time.Now()
			recs := make([]*kgo.Record, 0, n)
			for i := range n {
				id := fmt.Sprintf("call-%d", i)
				ev, err := events.New("baton/ingress", id, &batonv1.CallStarted{
					Dialog:    &batonv1.Dialog{CallId: id, LocalTag: "a", RemoteTag: "b", RemoteTarget: "sip:c@10.0.0.1"},
					Variables: map[string]string{"Customer-Id": "C-42"},
				}, now)
				if err != nil {
					b.Fatal(err)
				}
				rec, err := events.Encode(kcfg.Topics.Calls, ev)
				if err != nil {
					b.Fatal(err)
				}
				recs = append(recs, rec)
			}
			if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				b.Fatal(err)
			}
			const group = "bench-restore"
			offsets := kadm.Offsets{}
			offsets.Add(kadm.Offset{Topic: kcfg.Topics.Calls, Partition: 0, At: int64(n)})
			if _, err := kadm.NewClient(cl).CommitOffsets(context.Background(), group, offsets); err != nil {
				b.Fatal(err)
			}
			c := config.Default("bench")
			c.Kafka = kcfg
			if err := pkgconfig.Parse("router.yaml", []byte("destinations:\n  - name: support\n    route: sip:support@127.0.0.1:5090\n    default: true\n"), &c); err != nil {
				b.Fatal(err)
			}
			table, err := c.Table()
			if err != nil {
				b.Fatal(err)
			}
			rs := &restorer{clientOpts: append(kafka.ClientOpts(kcfg, logger), kgo.FetchIsolationLevel(kgo.ReadCommitted())),
				group: group, topics: []string{kcfg.Topics.Calls, kcfg.Topics.Transfers}, lookback: time.Hour, logger: logger}
			b.ResetTimer()
			for range b.N {
				fold := handoff.New(table, logger)
				got, err := rs.restore(context.Background(), fold, []int32{0})
				if err != nil {
					b.Fatal(err)
				}
				if got != n || fold.Calls() != n {
					b.Fatalf("restored %d records, %d calls; want %d", got, fold.Calls(), n)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/restore")
		})
	}
}
