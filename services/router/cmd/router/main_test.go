package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/pkg/logtest"
	"github.com/baton-voice/baton/pkg/startup"
)

// childEnv, when set, makes the test binary run the router itself (with
// the config file it names), so a test can SIGKILL a real process.
const childEnv = "BATON_ROUTER_TEST_CHILD_CONFIG"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(run(context.Background(), []string{"--config", path}, os.Stderr))
	}
	// signal.Notify starts the runtime's signal watcher, which lives on.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("os/signal.signal_recv"))
}

func writeConfig(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "router.yaml")
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
	return path
}

func TestBadConfigStopsTheServiceWithExitCode2(t *testing.T) {
	for _, tc := range []struct {
		name string
		args func(t *testing.T) []string
		want []string
	}{
		{
			name: "no destinations",
			args: func(t *testing.T) []string {
				return []string{"--config", writeConfig(t, "group: baton-router\ndestinations: []\n")}
			},
			want: []string{"router.yaml:2: destinations: at least one destination is required"},
		},
		{
			name: "unknown method",
			args: func(t *testing.T) []string {
				return []string{"--config", writeConfig(t, "destinations:\n  - name: support\n    method: TELEPORT\n    route: sip:support@127.0.0.1:5090\n")}
			},
			want: []string{`router.yaml:3: destinations[0].method: unknown method "TELEPORT"`},
		},
		{
			name: "no config flag: the defaults have no destination",
			args: func(*testing.T) []string { return nil },
			want: []string{"destinations: at least one destination is required"},
		},
		{
			name: "missing file",
			args: func(t *testing.T) []string { return []string{"--config", filepath.Join(t.TempDir(), "nope.yaml")} },
			want: []string{"read config", "no such file"},
		},
		{
			name: "pre-call headers variable named but empty",
			args: func(t *testing.T) []string {
				t.Setenv("BATON_TEST_PRECALL_HEADERS", "")
				return []string{"--config", writeConfig(t, "destinations:\n  - name: support\n    route: sip:support@127.0.0.1:5090\n"+
					"precall:\n  url: http://127.0.0.1:1/precall\n  headers_env: BATON_TEST_PRECALL_HEADERS\n")}
			},
			want: []string{"precall.headers_env: $BATON_TEST_PRECALL_HEADERS: no header"},
		},
		{
			name: "top-level session_timeout moved under kafka",
			args: func(t *testing.T) []string {
				return []string{"--config", writeConfig(t, "session_timeout: 6s\ndestinations:\n  - name: support\n    route: sip:support@127.0.0.1:5090\n")}
			},
			want: []string{"field session_timeout not found"},
		},
		{
			name: "unknown flag",
			args: func(*testing.T) []string { return []string{"--listen", ":80"} },
			want: []string{"flag provided but not defined: -listen"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr logtest.Buffer
			code := run(t.Context(), tc.args(t), &stderr)
			require.Equal(t, startup.ExitConfig, code)
			for _, w := range tc.want {
				require.Contains(t, stderr.String(), w)
			}
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	var stderr logtest.Buffer
	require.Equal(t, startup.ExitOK, run(t.Context(), []string{"--help"}, &stderr))
	require.Contains(t, stderr.String(), "-config file")
}

// TestExampleConfigHandsOffEveryCall runs the service with the example
// configuration against a Kafka broker without topics: it creates them,
// hands a call off, and stops cleanly when its context ends.
func TestExampleConfigHandsOffEveryCall(t *testing.T) {
	brokers := kafkatest.NewCluster(t, 1)
	example, err := os.ReadFile(filepath.Join("..", "..", "router.example.yaml"))
	require.NoError(t, err)
	const brokersLine = `brokers: ["127.0.0.1:9092"]`
	require.Contains(t, string(example), brokersLine)
	doc := strings.Replace(string(example), brokersLine, `brokers: ["`+brokers[0]+`"]`+"\n  partitions: 1", 1)
	require.Contains(t, doc, "listen: 127.0.0.1:9462")
	doc = strings.Replace(doc, "listen: 127.0.0.1:9462", "listen: 127.0.0.1:0", 1)
	path := writeConfig(t, doc)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr logtest.Buffer
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, []string{"--config", path}, &stderr) }()

	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics("baton.handoffs"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	require.NoError(t, err)
	defer cl.Close()

	ev, err := events.New("baton/ingress", "demo-1", &batonv1.CallStarted{
		Dialog:    &batonv1.Dialog{CallId: "sip-demo-1"},
		Variables: map[string]string{"Customer-Id": "C-7", "Intent": "cancel"},
	}, time.Now())
	require.NoError(t, err)
	rec, err := events.Encode("baton.calls", ev)
	require.NoError(t, err)
	// Wait for the router to create the topics, then publish the call.
	require.Eventually(t, func() bool {
		return strings.Contains(stderr.String(), "router started")
	}, 20*time.Second, 10*time.Millisecond, "stderr: %s", stderr.String())
	require.NoError(t, cl.ProduceSync(t.Context(), rec).FirstErr())

	pollCtx, pollCancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer pollCancel()
	var got []*kgo.Record
	for len(got) == 0 && pollCtx.Err() == nil {
		got = append(got, cl.PollRecords(pollCtx, 1).Records()...)
	}
	require.Len(t, got, 1, "stderr: %s", stderr.String())
	out, err := events.Decode(got[0])
	require.NoError(t, err)
	cmd := out.Data.(*batonv1.HandoffCommand)
	require.Equal(t, "support", cmd.GetDestination())
	require.Equal(t, []*batonv1.SipHeader{
		{Name: "X-Baton-Call-Id", Value: "demo-1"},
		{Name: "X-Customer-Id", Value: "C-7"},
		{Name: "X-Intent", Value: "cancel"},
	}, cmd.GetHeaders())

	// The metrics show the command, and the router is ready.
	base := "http://" + logged(t, &stderr, "metrics listening", "addr")
	require.Eventually(t, func() bool {
		code, body := httpGet(t, base+"/metrics")
		return code == 200 && strings.Contains(body, `baton_router_commands_total{method="refer"} 1`) &&
			strings.Contains(body, `baton_router_transactions_total{result="committed"} 1`) &&
			strings.Contains(body, "baton_router_batch_records_count 1")
	}, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		code, _ := httpGet(t, base+"/readyz")
		return code == 200
	}, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		_, body := httpGet(t, base+"/metrics")
		return strings.Contains(body, `baton_router_consumer_lag{partition="0",topic="baton.calls"} 0`)
	}, 20*time.Second, 50*time.Millisecond)

	cancel()
	select {
	case code := <-exit:
		require.Equal(t, startup.ExitOK, code, "stderr: %s", stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatal("router did not stop")
	}
	require.Contains(t, stderr.String(), `"msg":"router stopped"`)
}

// logged waits for a log line with msg and returns its key's value.
func logged(t *testing.T, stderr *logtest.Buffer, msg, key string) string {
	t.Helper()
	re := regexp.MustCompile(`"msg":"` + regexp.QuoteMeta(msg) + `".*?"` + key + `":"([^"]+)"`)
	var v string
	require.Eventually(t, func() bool {
		m := re.FindStringSubmatch(stderr.String())
		if m == nil {
			return false
		}
		v = m[1]
		return true
	}, 20*time.Second, 10*time.Millisecond, "no %q log line", msg)
	return v
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(body)
}
