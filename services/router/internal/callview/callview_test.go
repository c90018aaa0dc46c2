package callview

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/router/internal/api"
	"github.com/baton-voice/baton/services/router/internal/config"
)

// The view of one instance reads the calls of every partition, and the
// API over it answers 503 until it has caught up, then 200 for any call.
func TestViewServesEveryPartition(t *testing.T) {
	kcfg := kafka.DefaultConfig()
	kcfg.Brokers = kafkatest.NewCluster(t, 6, kcfg.Topics.All()...)
	logger := slog.New(slog.DiscardHandler)
	prod, err := kgo.NewClient(kafka.ClientOpts(kcfg, logger)...)
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	const calls = 30
	partitions := map[int32]bool{}
	for i := range calls {
		id := fmt.Sprintf("call-%d", i)
		ev, err := events.New("baton/ingress", id, &batonv1.CallStarted{
			Dialog: &batonv1.Dialog{CallId: id, LocalTag: "a", RemoteTag: "b", RemoteTarget: "sip:c@10.0.0.1"},
		}, time.Now())
		require.NoError(t, err)
		rec, err := events.Encode(kcfg.Topics.Calls, ev)
		require.NoError(t, err)
		res := prod.ProduceSync(t.Context(), rec)
		require.NoError(t, res.FirstErr())
		partitions[res[0].Record.Partition] = true
	}
	require.Greater(t, len(partitions), 2, "the calls spread over several partitions")

	c := config.Default("test")
	c.Kafka = kcfg
	require.NoError(t, pkgconfig.Parse("router.yaml", []byte("destinations:\n  - name: support\n    route: sip:support@127.0.0.1:5090\n    default: true\n"), &c))
	table, err := c.Table()
	require.NoError(t, err)
	v := New(table, kafka.ClientOpts(kcfg, logger), []string{kcfg.Topics.Calls, kcfg.Topics.Transfers}, time.Hour, logger)
	srv := httptest.NewServer(api.New(v, table, nil, []string{"tok"}, logger, time.Now, nil))
	t.Cleanup(srv.Close)
	// get returns the status and Retry-After of a read of call id.
	get := func(id string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/v1/calls/"+id, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer tok")
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		require.NoError(t, res.Body.Close())
		return res.StatusCode, res.Header.Get("Retry-After")
	}
	// Not caught up yet: an unknown call is 503 with Retry-After, not 404.
	status, retry := get("call-0")
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.Equal(t, "1", retry)

	go func() { _ = v.Run(t.Context()) }()
	require.Eventually(t, v.Settled, 20*time.Second, 10*time.Millisecond)
	for i := range calls {
		status, _ := get(fmt.Sprintf("call-%d", i))
		require.Equal(t, http.StatusOK, status, "call-%d", i)
	}
	status, _ = get("no-such-call")
	require.Equal(t, http.StatusNotFound, status, "caught up: unknown is 404")

	// A call its owner evicted is forgotten by the view too: unknown (404),
	// not ended.
	ev, err := events.New("baton/router", "call-3", &batonv1.CallEvicted{CallId: "call-3", Reason: "max_call_duration",
		IdleMs: time.Minute.Milliseconds(), EvictedBy: "router-1"}, time.Now().Add(time.Minute))
	require.NoError(t, err)
	rec, err := events.Encode(kcfg.Topics.Calls, ev)
	require.NoError(t, err)
	require.NoError(t, prod.ProduceSync(t.Context(), rec).FirstErr())
	require.Eventually(t, func() bool { s, _ := get("call-3"); return s == http.StatusNotFound }, 20*time.Second, 10*time.Millisecond)
	status, _ = get("call-4")
	require.Equal(t, http.StatusOK, status)

	// A call whose start is in the log when the request comes is found,
	// though the view had not polled it yet: never a wrong 404.
	for i := range 20 {
		id := fmt.Sprintf("late-%d", i)
		ev, err := events.New("baton/ingress", id, &batonv1.CallStarted{
			Dialog: &batonv1.Dialog{CallId: id, LocalTag: "a", RemoteTag: "b", RemoteTarget: "sip:c@10.0.0.1"},
		}, time.Now())
		require.NoError(t, err)
		rec, err := events.Encode(kcfg.Topics.Calls, ev)
		require.NoError(t, err)
		require.NoError(t, prod.ProduceSync(t.Context(), rec).FirstErr())
		status, _ := get(id)
		require.Equal(t, http.StatusOK, status, "%s: produced before the request", id)
	}
}

// A listing that leaves out a topic, or a partition that failed, is not a
// start: the partition left out would never be read.
func TestOffsetsOfNeedsEveryPartitionAndMissesNoRecord(t *testing.T) {
	topics := []string{"calls", "transfers"}
	ok := func(topic string, p int32, off int64) kadm.ListedOffset {
		return kadm.ListedOffset{Topic: topic, Partition: p, Offset: off}
	}
	full := kadm.ListedOffsets{
		"calls":     {0: ok("calls", 0, 5), 1: ok("calls", 1, 0)},
		"transfers": {0: ok("transfers", 0, 2)},
	}
	out, complete := offsetsOf(full, full, topics)
	require.True(t, complete)
	require.Equal(t, kgo.NewOffset().At(5), out["calls"][0])
	require.Len(t, out["calls"], 2)

	// A record produced between the end offsets and the time listing is
	// read: the start is the end listed first, not the later one.
	later := kadm.ListedOffsets{
		"calls":     {0: ok("calls", 0, 6), 1: ok("calls", 1, 1)},
		"transfers": {0: ok("transfers", 0, 2)},
	}
	out, complete = offsetsOf(later, full, topics)
	require.True(t, complete)
	require.Equal(t, kgo.NewOffset().At(5), out["calls"][0])
	require.Equal(t, kgo.NewOffset().At(0), out["calls"][1])

	missingTopic := kadm.ListedOffsets{"transfers": {0: ok("transfers", 0, 2)}}
	_, complete = offsetsOf(missingTopic, missingTopic, topics)
	require.False(t, complete, "calls not listed")

	failed := kadm.ListedOffsets{
		"calls":     {0: ok("calls", 0, 5), 1: {Topic: "calls", Partition: 1, Err: kerr.NotLeaderForPartition}},
		"transfers": {0: ok("transfers", 0, 2)},
	}
	_, complete = offsetsOf(failed, full, topics)
	require.False(t, complete, "calls/1 failed")
}
