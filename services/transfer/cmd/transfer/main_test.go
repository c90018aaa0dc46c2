package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
)

func TestMain(m *testing.M) {
	// signal.Notify starts the runtime's signal watcher, which lives on.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("os/signal.signal_recv"))
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func writeConfig(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "transfer.yaml")
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
	return path
}

func TestBadConfigExitsWith2(t *testing.T) {
	for _, tc := range []struct {
		name string
		args func(t *testing.T) []string
		want string
	}{
		{"bad timeout", func(t *testing.T) []string {
			return []string{"--config", writeConfig(t, "notify_timeout: -1s\n")}
		}, "transfer.yaml:1: notify_timeout:"},
		{"missing file", func(t *testing.T) []string {
			return []string{"--config", filepath.Join(t.TempDir(), "nope.yaml")}
		}, "no such file"},
		{"unknown flag", func(*testing.T) []string { return []string{"--nope"} }, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr syncBuffer
			require.Equal(t, exitConfig, run(t.Context(), tc.args(t), &stderr))
			require.Contains(t, stderr.String(), tc.want)
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	var stderr syncBuffer
	require.Equal(t, exitOK, run(t.Context(), []string{"--help"}, &stderr))
	require.Contains(t, stderr.String(), "-config")
}

func TestStartsAndStopsCleanly(t *testing.T) {
	brokers := kafkatest.NewCluster(t, 1)
	path := writeConfig(t, "listen: 127.0.0.1:0\nkafka:\n  brokers: ["+brokers[0]+"]\n  partitions: 1\n")
	ctx, cancel := context.WithCancel(t.Context())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"--config", path}, &stderr) }()
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), `"msg":"transfer started"`) },
		10*time.Second, 10*time.Millisecond, "log: %s", &stderr)
	cancel()
	select {
	case code := <-done:
		require.Equal(t, exitOK, code, stderr.String())
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	require.Contains(t, stderr.String(), `"msg":"transfer stopped"`)
}
