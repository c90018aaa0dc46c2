package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"gopkg.in/yaml.v3"

	"github.com/baton-voice/baton/cmd/baton/internal/clickhousetest"
	"github.com/baton-voice/baton/cmd/baton/internal/replay"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
)

// runBaton runs baton's command line in process and returns stdout and
// stderr.
func runBaton(t *testing.T, args ...string) (string, string) {
	t.Helper()
	var c cli
	var out, errOut bytes.Buffer
	p, err := newParser(&c, &out, &errOut, func(int) { t.Fatal("exit called") })
	require.NoError(t, err)
	kctx, err := p.Parse(args)
	require.NoError(t, err, "%v", args)
	kctx.BindTo(t.Context(), (*context.Context)(nil))
	require.NoError(t, kctx.Run(&streams{out: &out, err: &errOut}), "%v: %s", args, errOut.String())
	return out.String(), errOut.String()
}

// TestReplayFromClickHouseAfterRetention is issue 21's "done when": a
// recorded call goes through Kafka (kfake over TCP) and the real analytics
// service into clickhouse-server 18.16; it is replayed from Kafka; then
// the topics' retention is forced down to 1 ms and applied, so Kafka no
// longer has the call, and `baton replay` (--source auto) falls back to
// ClickHouse. The timeline and ladder, the --rules diff and the export
// are byte for byte what Kafka gave, and stderr names the source read.
func TestReplayFromClickHouseAfterRetention(t *testing.T) {
	const call = "call-1@sbc"
	topics := kafka.DefaultConfig().Topics.All()
	cluster := kafkatest.Start(t, 3, append(slices.Clone(topics), "baton.dlq")...)
	brokers := strings.Join(cluster.ListenAddrs(), ",")
	ch := clickhousetest.Start(t)
	conn := ch.Database(t, "baton")
	router := clickhousetest.Binary(t, "router")

	f, err := os.Open(filepath.Join("internal", "replay", "testdata", "rules", "call.ndjson"))
	require.NoError(t, err)
	recs, err := replay.ReadNDJSON(f, call)
	require.NoError(t, f.Close())
	require.NoError(t, err)
	require.Len(t, recs, 11)

	// Produced as the services produce: keyed by call id, one partition.
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	require.NoError(t, err)
	defer cl.Close()
	for _, r := range recs {
		require.NoError(t, cl.ProduceSync(t.Context(), &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value,
			Headers: r.Headers, Timestamp: r.Timestamp}).FirstErr())
	}

	// The real analytics service writes them to ClickHouse.
	cfg, err := yaml.Marshal(map[string]any{
		"kafka":      map[string]any{"brokers": cluster.ListenAddrs(), "client_id": "baton-analytics-test"},
		"clickhouse": map[string]any{"addr": ch.Addr, "database": "baton"},
		"http":       map[string]any{"listen": ""},
		"batch":      map[string]any{"max_wait": "100ms"},
	})
	require.NoError(t, err)
	cfgPath := filepath.Join(t.TempDir(), "analytics.yaml")
	require.NoError(t, os.WriteFile(cfgPath, cfg, 0o600))
	var analyticsLog bytes.Buffer
	analytics := exec.Command(clickhousetest.Binary(t, "analytics"), "--config", cfgPath)
	analytics.Stdout, analytics.Stderr = &analyticsLog, &analyticsLog
	require.NoError(t, analytics.Start())
	t.Cleanup(func() {
		_ = analytics.Process.Signal(syscall.SIGTERM)
		_ = analytics.Wait()
	})
	require.Eventually(t, func() bool {
		var n uint64
		err := conn.QueryRow(t.Context(), "SELECT count() FROM events WHERE call_id = '"+call+"'").Scan(&n)
		return err == nil && n == uint64(len(recs))
	}, 2*time.Minute, 100*time.Millisecond, "analytics wrote the call's events: %s", &analyticsLog)

	source := []string{"--call", call, "--brokers", brokers, "--since", "1000d", "--clickhouse", ch.Addr}
	changed := filepath.Join("internal", "replay", "testdata", "rules", "changed.yaml")
	dir := t.TempDir()
	kafkaHTML, chHTML := filepath.Join(dir, "kafka.html"), filepath.Join(dir, "clickhouse.html")
	kafkaTimeline, kafkaErr := runBaton(t, append([]string{"replay", "--source", "kafka", "--html", kafkaHTML}, source...)...)
	require.Contains(t, kafkaErr, "source: kafka")
	require.Contains(t, kafkaTimeline, "call call-1@sbc: 11 records")
	kafkaDiff, _ := runBaton(t, append([]string{"replay", "--source", "kafka", "--rules", changed, "--router-bin", router}, source...)...)
	require.Contains(t, kafkaDiff, "changed")
	kafkaExport, _ := runBaton(t, append([]string{"export", "--source", "kafka"}, source...)...)

	// Retention forced down: every record is older than 1 ms.
	adm := kadm.NewClient(cl)
	ms := "1"
	var alter []kadm.AlterConfig
	alter = append(alter, kadm.AlterConfig{Name: "retention.ms", Value: &ms})
	resp, err := adm.AlterTopicConfigs(t.Context(), alter, topics...)
	require.NoError(t, err)
	for _, r := range resp {
		require.NoError(t, r.Err, r.Name)
	}
	cluster.ApplyRetention()
	gone, _ := runBaton(t, append([]string{"replay", "--source", "kafka"}, source...)...)
	require.Equal(t, "no records for call call-1@sbc\n", gone, "Kafka no longer has the call")

	timeline, stderr := runBaton(t, append([]string{"replay", "--html", chHTML}, source...)...)
	require.Contains(t, stderr, "kafka has no record of call call-1@sbc")
	require.Contains(t, stderr, "source: clickhouse "+ch.Addr+"/baton (11 records")
	require.Equal(t, strings.ReplaceAll(kafkaTimeline, kafkaHTML, chHTML), timeline, "the same timeline and ladder from ClickHouse")
	want, err := os.ReadFile(kafkaHTML)
	require.NoError(t, err)
	got, err := os.ReadFile(chHTML)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got), "the same HTML page")

	diff, _ := runBaton(t, append([]string{"replay", "--rules", changed, "--router-bin", router}, source...)...)
	require.Equal(t, kafkaDiff, diff, "the same --rules diff from ClickHouse")

	export, _ := runBaton(t, append([]string{"export", "--source", "clickhouse"}, source...)...)
	require.Equal(t, sortedLines(kafkaExport), sortedLines(export), "the same records, byte for byte")
	// Kafka reads topics concurrently, so only the lines' order may differ.
	require.Len(t, sortedLines(export), len(recs))
}

func sortedLines(s string) []string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	slices.Sort(lines)
	return lines
}
