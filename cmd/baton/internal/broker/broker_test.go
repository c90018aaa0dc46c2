package broker_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/cmd/baton/internal/broker"
	"github.com/baton-voice/baton/pkg/kafka"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var defaultTopics = []string{"baton.calls", "baton.handoffs", "baton.transfers"}

func testLogger(tb testing.TB) *slog.Logger {
	tb.Helper()
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// testConfig is the default config on a free loopback port and a temp dir.
func testConfig(tb testing.TB) broker.Config {
	tb.Helper()
	cfg := broker.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(tb.TempDir(), "broker")
	return cfg
}

func start(tb testing.TB, cfg broker.Config) *broker.Broker {
	tb.Helper()
	b, err := broker.Start(tb.Context(), cfg, testLogger(tb))
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, b.Close()) })
	return b
}

// newClient is a franz-go client with Baton's shared options plus extra.
func newClient(tb testing.TB, addr string, extra ...kgo.Opt) *kgo.Client {
	tb.Helper()
	kcfg := kafka.DefaultConfig()
	kcfg.Brokers = []string{addr}
	opts := append(kafka.ClientOpts(kcfg, testLogger(tb)),
		// A fetch built before every partition's start offset is known
		// waits out its MaxWait (5s by default) on the empty ones; keep
		// that short so a test does not idle.
		kgo.FetchMaxWait(200*time.Millisecond))
	cl, err := kgo.NewClient(append(opts, extra...)...)
	require.NoError(tb, err)
	tb.Cleanup(cl.Close)
	return cl
}

// pollN polls cl until it has n records.
func pollN(tb testing.TB, cl *kgo.Client, n int) []*kgo.Record {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 15*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		require.NoError(tb, ctx.Err(), "got %d of %d records", len(recs), n)
		fs.EachError(func(topic string, p int32, err error) { tb.Fatalf("fetch %s/%d: %v", topic, p, err) })
		recs = append(recs, fs.Records()...)
	}
	return recs
}

func values(recs []*kgo.Record) []string {
	var vs []string
	for _, r := range recs {
		vs = append(vs, string(r.Value))
	}
	return vs
}

func TestRecordsAndOffsetsSurviveRestart(t *testing.T) {
	for _, syncWrites := range []bool{false, true} {
		t.Run(fmt.Sprintf("sync_writes=%v", syncWrites), func(t *testing.T) {
			cfg := testConfig(t)
			cfg.SyncWrites = syncWrites
			const (
				topic     = "baton.calls"
				group     = "router"
				total     = 10
				committed = 4 // the group handled v0..v3 and committed offset 4
			)

			b1 := start(t, cfg)
			addr := b1.Addr()

			// All records share a call id, so they sit in one partition in order.
			producer := newClient(t, addr)
			var want []string
			var partition int32
			for i := range total {
				v := fmt.Sprintf("v%d", i)
				want = append(want, v)
				res := producer.ProduceSync(t.Context(), &kgo.Record{Topic: topic, Key: []byte("call-42"), Value: []byte(v)})
				require.NoError(t, res.FirstErr())
				partition = res[0].Record.Partition
			}
			producer.Close()

			consumer := newClient(t, addr, kafka.ConsumerOpts(group, topic)...)
			recs := pollN(t, consumer, committed)
			require.Equal(t, want[:committed], values(recs[:committed]))
			require.NoError(t, consumer.CommitRecords(t.Context(), recs[committed-1]))
			consumer.Close() // leaves the group

			require.NoError(t, b1.Close())

			// Same data dir, same address.
			cfg.Listen = addr
			b2 := start(t, cfg)
			require.Equal(t, addr, b2.Addr())

			reader := newClient(t, addr,
				kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}))
			require.Equal(t, want, values(pollN(t, reader, total)), "records after restart")

			adm := kadm.NewClient(newClient(t, addr))
			offsets, err := adm.FetchOffsets(t.Context(), group)
			require.NoError(t, err)
			o, ok := offsets.Lookup(topic, partition)
			require.True(t, ok, "committed offset of %s/%d after restart", topic, partition)
			require.EqualValues(t, committed, o.At)

			resumed := newClient(t, addr, kafka.ConsumerOpts(group, topic)...)
			got := pollN(t, resumed, total-committed)
			require.EqualValues(t, committed, got[0].Offset, "group resumes at its committed offset")
			require.Equal(t, want[committed:], values(got))
		})
	}
}

func TestTopicsCreatedAtStart(t *testing.T) {
	tests := []struct {
		name       string
		partitions int32
		topics     []string
	}{
		{"defaults", 6, defaultTopics},
		{"three partitions", 3, defaultTopics},
		{"custom names", 2, []string{"acme.calls", "acme.handoffs"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Partitions = tt.partitions
			cfg.Topics = tt.topics
			b := start(t, cfg)

			listed, err := kadm.NewClient(newClient(t, b.Addr())).ListTopics(t.Context())
			require.NoError(t, err)
			require.ElementsMatch(t, tt.topics, listed.Names())
			for _, name := range tt.topics {
				require.Len(t, listed[name].Partitions, int(tt.partitions), "partitions of %s", name)
			}
		})
	}
}

func TestTopicAddedLaterIsCreatedOnExistingDataDir(t *testing.T) {
	cfg := testConfig(t)
	b1 := start(t, cfg)
	require.NoError(t, b1.Close())

	cfg.Topics = append(cfg.Topics, "baton.extra")
	cfg.Partitions = 2 // existing topics keep their 6
	b2 := start(t, cfg)

	listed, err := kadm.NewClient(newClient(t, b2.Addr())).ListTopics(t.Context())
	require.NoError(t, err)
	require.ElementsMatch(t, cfg.Topics, listed.Names())
	require.Len(t, listed["baton.calls"].Partitions, 6)
	require.Len(t, listed["baton.extra"].Partitions, 2)
}

func TestStartErrors(t *testing.T) {
	running := start(t, testConfig(t))

	notADir := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(notADir, nil, 0o644))

	tests := []struct {
		name    string
		cfg     func(broker.Config) broker.Config
		wantErr error
		wantMsg []string
	}{
		{
			name:    "port in use",
			cfg:     func(c broker.Config) broker.Config { c.Listen = running.Addr(); return c },
			wantErr: broker.ErrAddrInUse,
			wantMsg: []string{running.Addr(), "another broker may be running"},
		},
		{
			name:    "data dir in use",
			cfg:     func(c broker.Config) broker.Config { c.DataDir = running.DataDir(); return c },
			wantErr: broker.ErrDataDirLocked,
			wantMsg: []string{running.DataDir(), "in use by another broker"},
		},
		{
			name:    "data dir not writable",
			cfg:     func(c broker.Config) broker.Config { c.DataDir = filepath.Join(notADir, "broker"); return c },
			wantErr: broker.ErrDataDirNotWritable,
			wantMsg: []string{filepath.Join(notADir, "broker"), "not writable"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := broker.Start(t.Context(), tt.cfg(testConfig(t)), testLogger(t))
			require.ErrorIs(t, err, tt.wantErr)
			require.Nil(t, b)
			for _, m := range tt.wantMsg {
				require.Contains(t, err.Error(), m)
			}
		})
	}

	// The failed starts released everything: the running broker still serves.
	_, err := kadm.NewClient(newClient(t, running.Addr())).ListTopics(t.Context())
	require.NoError(t, err)
}

func TestListensOnTheGivenHostOnly(t *testing.T) {
	// 127.0.0.2 is loopback on Linux but not the address kfake.Ports binds.
	cfg := testConfig(t)
	cfg.Listen = "127.0.0.2:0"
	b := start(t, cfg)
	host, port, err := net.SplitHostPort(b.Addr())
	require.NoError(t, err)
	require.Equal(t, "127.0.0.2", host)

	_, err = kadm.NewClient(newClient(t, b.Addr())).ListTopics(t.Context())
	require.NoError(t, err)

	var d net.Dialer
	_, err = d.DialContext(t.Context(), "tcp", net.JoinHostPort("127.0.0.1", port))
	require.Error(t, err, "nothing listens on 127.0.0.1:%s", port)
}

func TestAdvertisedAddressInMetadata(t *testing.T) {
	cfg := testConfig(t)
	cfg.Advertise = "kafka.example:19092"
	b := start(t, cfg)
	require.Equal(t, "kafka.example:19092", b.Addr())

	require.NotEqual(t, b.Addr(), b.ListenAddr())

	// The seed request goes to the bound address; the answer names the
	// advertised one.
	md, err := kadm.NewClient(newClient(t, b.ListenAddr())).BrokerMetadata(t.Context())
	require.NoError(t, err)
	require.Len(t, md.Brokers, 1)
	require.Equal(t, "kafka.example", md.Brokers[0].Host)
	require.EqualValues(t, 19092, md.Brokers[0].Port)
}

func TestRunPrintsReadyAndStopsOnCancel(t *testing.T) {
	cfg := testConfig(t)
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- broker.Run(ctx, cfg, testLogger(t), pw)
		_ = pw.Close()
	}()

	line, err := bufio.NewReader(pr).ReadString('\n')
	require.NoError(t, err)
	require.Regexp(t, `^broker ready on 127\.0\.0\.1:\d+ \(data dir `+regexp.QuoteMeta(cfg.DataDir)+`\)\n$`, line)
	addr := strings.Fields(line)[3]

	_, err = kadm.NewClient(newClient(t, addr)).ListTopics(t.Context())
	require.NoError(t, err)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	_, err = os.Stat(filepath.Join(cfg.DataDir, "meta.json"))
	require.NoError(t, err, "state persisted on shutdown")
}
