package loadbench

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/router/internal/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSummarize(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		d := make([]time.Duration, len(n))
		for i, v := range n {
			d[i] = time.Duration(v) * time.Millisecond
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // unsorted on purpose
	}
	tests := []struct {
		name string
		in   []time.Duration
		want Summary
	}{
		{name: "empty", in: nil, want: Summary{}},
		{name: "one", in: ms(7), want: Summary{N: 1, P50: 7 * time.Millisecond, P90: 7 * time.Millisecond, P99: 7 * time.Millisecond, Max: 7 * time.Millisecond}},
		{name: "nearest rank of 1..100", in: ms(hundred...),
			want: Summary{N: 100, P50: 50 * time.Millisecond, P90: 90 * time.Millisecond, P99: 99 * time.Millisecond, Max: 100 * time.Millisecond}},
		{name: "ten", in: ms(10, 1, 9, 2, 8, 3, 7, 4, 6, 5),
			want: Summary{N: 10, P50: 5 * time.Millisecond, P90: 9 * time.Millisecond, P99: 10 * time.Millisecond, Max: 10 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, Summarize(tt.in))
		})
	}
}

func TestLevelRequests(t *testing.T) {
	l := Level{Rate: 1000, Warmup: 2 * time.Second, Duration: 20 * time.Second}
	require.Equal(t, 22000, l.Requests())
	require.Equal(t, 2000, l.warm())
	require.Equal(t, 30, Level{Rate: 200, Duration: 150 * time.Millisecond}.Requests())
}

// The benchmark's router config is one the router accepts, with every
// rule compiled, and only the last rule matching a request.
func TestRouterConfigLoads(t *testing.T) {
	k := kafka.DefaultConfig()
	k.Brokers = []string{"127.0.0.1:1"}
	path := filepath.Join(t.TempDir(), "router.yaml")
	require.NoError(t, os.WriteFile(path, []byte(RouterConfig(k, "g", "tx", "warn", 100)), 0o600))
	cfg, err := config.Load(path, "host")
	require.NoError(t, err)
	table, err := cfg.Table()
	require.NoError(t, err)
	require.Len(t, table.Rules, 100)
	require.Equal(t, "agent-request", table.Rules[99].Name)
	require.Equal(t, "support", table.Default)
	require.Equal(t, "tx", cfg.TransactionalID)
}

// Measure times every request through both baselines on kfake: a plain
// topic, and the transactional pass-through to another topic. A small
// load: this is a test of the measuring, not a benchmark.
func TestMeasureDirectAndPassthrough(t *testing.T) {
	const in, out = "in", "out"
	brokers := kafkatest.NewCluster(t, 2, in, out)
	k := kafka.DefaultConfig()
	k.Brokers = brokers
	k.Partitions = 2
	logger := slog.New(slog.DiscardHandler)

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		err := Passthrough(ctx, PassthroughOptions{Kafka: k, Group: "pt", TransactionalID: "pt-1", In: in, Out: out}, logger)
		if err != nil {
			t.Errorf("passthrough: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })

	prod, err := kgo.NewClient(kafka.ClientOpts(k, logger)...)
	require.NoError(t, err)
	defer prod.Close()

	lvl := Level{Rate: 200, Warmup: 50 * time.Millisecond, Duration: 100 * time.Millisecond}
	for _, p := range []Path{
		{Name: "direct", In: in, Out: in, Want: events.TypeHandoffRequested},
		{Name: "passthrough", In: in, Out: out, Want: events.TypeHandoffRequested},
		{Name: "wrong type", In: in, Out: out, Want: events.TypeHandoffCommand},
	} {
		t.Run(p.Name, func(t *testing.T) {
			reqs, err := RequestRecords("unused", CallIDs(p.Name, lvl.Requests()), time.Now())
			require.NoError(t, err)
			drain := 20 * time.Second
			if p.Want == events.TypeHandoffCommand {
				drain = 2 * time.Second // nothing will be answered
			}
			res, err := Measure(t.Context(), prod, brokers, p, lvl, reqs, drain)
			require.NoError(t, err)
			require.Equal(t, 20, res.Measured)
			require.Zero(t, res.ProduceErrors)
			require.Greater(t, res.Achieved, 0.0)
			if p.Want == events.TypeHandoffCommand {
				require.Zero(t, res.Received)
				require.Equal(t, 30, res.Wrong, "every answer has another type")
				return
			}
			require.Equal(t, 20, res.Received)
			require.Zero(t, res.Wrong)
			s := res.Latency
			require.Equal(t, 20, s.N)
			require.Positive(t, s.P50)
			require.LessOrEqual(t, s.P50, s.P99)
			require.LessOrEqual(t, s.P99, s.Max)
		})
	}
}
