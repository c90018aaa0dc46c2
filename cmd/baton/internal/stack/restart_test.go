package stack

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestKillAndRestart kills a part and starts it again with the same
// command line, its log kept and appended to.
func TestKillAndRestart(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "logs"), 0o755))
	s := &Stack{opts: Options{RunDir: dir, Logger: slog.New(slog.DiscardHandler)}}
	require.NoError(t, s.spawn("sleeper", "/bin/sh", "-c", "echo started; exec sleep 60"))
	t.Cleanup(func() {
		for _, p := range s.procs {
			_ = p.run.cmd.Process.Kill()
			<-p.run.exit
		}
	})
	first := s.procs[0].run.cmd.Process.Pid
	started := func(n int) func() bool {
		return func() bool {
			data, err := os.ReadFile(s.LogPath("sleeper"))
			return err == nil && strings.Count(string(data), "started") == n
		}
	}
	require.Eventually(t, started(1), 5*time.Second, 10*time.Millisecond)

	require.ErrorContains(t, s.Restart(t.Context(), "sleeper"), "still running")
	require.ErrorContains(t, s.Restart(t.Context(), "nobody"), "no process named nobody")
	require.NoError(t, s.Kill("sleeper"))
	require.Error(t, s.exited(), "a killed part is reported")
	require.NoError(t, s.Restart(t.Context(), "sleeper"))
	require.Len(t, s.procs, 1)
	require.NotEqual(t, first, s.procs[0].run.cmd.Process.Pid)
	require.NoError(t, s.exited(), "the restarted part runs")
	require.Eventually(t, started(2), 5*time.Second, 10*time.Millisecond, "the log holds both runs")
}

// TestSuperviseRestartsWhatExits restarts a part that exits on its own and
// leaves a killed one dead.
func TestSuperviseRestartsWhatExits(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "logs"), 0o755))
	s := &Stack{opts: Options{RunDir: dir, Logger: slog.New(slog.DiscardHandler), Progress: io.Discard}}
	require.NoError(t, s.spawn("crasher", "/bin/sh", "-c", "echo started; sleep 0.2; exit 3"))
	require.NoError(t, s.spawn("victim", "/bin/sh", "-c", "exec sleep 60"))
	require.NoError(t, s.Kill("victim"))
	ctx, cancel := context.WithCancel(t.Context())
	supervised := make(chan struct{})
	go func() {
		s.Supervise(ctx)
		close(supervised)
	}()
	t.Cleanup(func() {
		cancel()
		<-supervised
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, p := range s.procs {
			_ = p.run.cmd.Process.Kill()
			<-p.run.exit
		}
	})
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(s.LogPath("crasher"))
		return err == nil && strings.Count(string(data), "started") >= 3
	}, 10*time.Second, 20*time.Millisecond, "the crasher runs again and again")
	restarts := s.Restarts()
	require.GreaterOrEqual(t, restarts["crasher"], 2)
	require.Zero(t, restarts["victim"], "a part Kill ended stays dead until Restart")
}
