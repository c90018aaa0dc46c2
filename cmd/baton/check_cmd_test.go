package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// TestCheckCommand runs `baton check` against a kfake broker holding one
// call that started and never ended, and one acknowledged call that never
// reached Kafka: the report names both and the command fails.
func TestCheckCommand(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "baton.calls"))
	require.NoError(t, err)
	defer cluster.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	ev, err := events.New("baton/test", "call-1", &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: "call-1"}}, time.Now())
	require.NoError(t, err)
	rec, err := events.Encode("baton.calls", ev)
	require.NoError(t, err)
	require.NoError(t, cl.ProduceSync(t.Context(), rec).FirstErr())

	calls := filepath.Join(t.TempDir(), "calls.txt")
	require.NoError(t, os.WriteFile(calls, []byte("# answered\ncall-1\n\ncall-2\n"), 0o600))
	brokers := strings.Join(cluster.ListenAddrs(), ",")

	run := func(args ...string) (string, error) {
		var c cli
		var out bytes.Buffer
		p, err := newParser(&c, &out, &out, func(int) { t.Fatal("exit called") })
		require.NoError(t, err)
		kctx, err := p.Parse(args)
		require.NoError(t, err)
		kctx.BindTo(t.Context(), (*context.Context)(nil))
		err = kctx.Run(&streams{out: &out, err: &out})
		return out.String(), err
	}
	out, err := run("check", "--brokers", brokers)
	require.NoError(t, err, out)
	require.Contains(t, out, "calls: 1 started, 0 ended")
	require.True(t, strings.HasSuffix(out, "OK\n"), out)

	out, err = run("check", "--brokers", brokers, "--calls", calls, "--require-ended")
	require.ErrorContains(t, err, "2 findings")
	require.Contains(t, out, "lost: acknowledged call has no CallStarted: call call-2")
	require.Contains(t, out, "lost: call never ended: call call-1")
	require.Contains(t, out, "FAILED")
}

func TestCheckHelp(t *testing.T) {
	var c cli
	var out bytes.Buffer
	exited := -1
	p, err := newParser(&c, &out, &out, func(code int) { exited = code })
	require.NoError(t, err)
	_, _ = p.Parse([]string{"check", "--help"})
	require.Equal(t, 0, exited)
	for _, want := range []string{"--brokers", "--calls=FILE", "--require-ended", "aborted\ntransactions"} {
		require.Contains(t, out.String(), want)
	}
}
