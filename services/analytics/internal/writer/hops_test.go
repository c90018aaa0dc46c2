package writer

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/hops"
)

// With hops on, each transfer outcome is marked when polled and when its
// batch was written and committed; the call's other events are not.
func TestHopsMarkOutcomesPolledAndWritten(t *testing.T) {
	e := newEnv(t, false)
	e.cfg.Batch.MaxWait = 50 * time.Millisecond
	recs := callEvents(t, e.cfg.Kafka.Topics, "call-hops")
	e.produce(recs...)
	path := filepath.Join(t.TempDir(), "hops")
	log, err := hops.FromEnv(func(string) string { return path })
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, log.Close()) })

	insert := func(context.Context, *rows) error { return nil }
	w := newWriter(e.consumer(), insert, Options{Config: e.cfg, Hops: log}, e.logger())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	require.Eventually(t, func() bool { return e.committedSum(t.Context(), e.cfg.Group) == int64(len(recs)) }, waitTimeout, pollEvery)
	cancel()
	require.NoError(t, <-done)

	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var points []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		require.Len(t, f, 3, "line %q", line)
		require.Equal(t, "call-hops", f[1])
		points = append(points, f[0])
	}
	require.Equal(t, []string{hops.AnalyticsPolled, hops.AnalyticsWritten}, points, "one outcome among the call's events")
}
