package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/pkg/logtest"
	"github.com/baton-voice/baton/pkg/startup"
	"github.com/baton-voice/baton/services/analytics/internal/chtest"
)

var server *chtest.Server

func TestMain(m *testing.M) {
	flag.Parse()
	server = chtest.Start()
	code := m.Run()
	server.Stop()
	if code == 0 {
		// signal.Notify starts the runtime's signal watcher, which lives on.
		if err := goleak.Find(goleak.IgnoreTopFunction("os/signal.signal_recv")); err != nil {
			_, _ = fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func noEnv(string) string { return "" }

func writeConfig(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "analytics.yaml")
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
	return path
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		name string
		args func(t *testing.T) []string
		code int
		want string
	}{
		{"help", func(*testing.T) []string { return []string{"--help"} }, startup.ExitOK, "-config file"},
		{"unknown flag", func(*testing.T) []string { return []string{"--nope"} }, startup.ExitConfig, "flag provided but not defined"},
		{"missing file", func(*testing.T) []string { return []string{"--config", "/nonexistent.yaml"} }, startup.ExitConfig, "read config"},
		{"bad field", func(t *testing.T) []string {
			return []string{"--config", writeConfig(t, "group: g\nretry_pause: -1s\n")}
		}, startup.ExitConfig, "analytics.yaml:2: retry_pause"},
		{"password in file", func(t *testing.T) []string {
			return []string{"--config", writeConfig(t, "clickhouse:\n  password: x\n")}
		}, startup.ExitConfig, "password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			require.Equal(t, tt.code, run(t.Context(), tt.args(t), &stderr, noEnv))
			require.Contains(t, stderr.String(), tt.want)
		})
	}
}

// Stopped while ClickHouse is still unreachable, the service exits 0.
func TestStopWhileWaitingForClickHouse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	path := writeConfig(t, "clickhouse:\n  addr: "+addr+"\n")

	var stderr logtest.Buffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"--config", path}, &stderr, noEnv) }()
	require.Eventually(t, func() bool {
		return strings.Contains(stderr.String(), `"msg":"waiting for clickhouse"`)
	}, 10*time.Second, 20*time.Millisecond)
	cancel()
	select {
	case code := <-done:
		require.Equal(t, startup.ExitOK, code, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("analytics did not stop")
	}
	require.Contains(t, stderr.String(), `"msg":"analytics stopped"`)
}
