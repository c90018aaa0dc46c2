package broker_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// copyDir copies src to dst but the lock file: the files as a broker
// killed at this moment leaves them (every acknowledged batch is written,
// nothing of a clean shutdown is).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	require.NoError(t, filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if d.Name() == ".lock" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	}))
}

// TestCrashLeftOpenTransactionIsAborted takes a crash image of a broker
// while a transaction is open, starts a broker on it and has the same
// transactional producer commit a new transaction: a read_committed
// consumer must get the new record and not the old one. Without the abort
// marker Start writes, the consumer would skip the new one too.
func TestCrashLeftOpenTransactionIsAborted(t *testing.T) {
	const topic = "baton.handoffs"
	cfg := testConfig(t)
	b1 := start(t, cfg)
	txn := func(addr string) *kgo.Client {
		return newClient(t, addr, kgo.TransactionalID("router-1"), kgo.TransactionTimeout(time.Minute))
	}
	crashed := txn(b1.Addr())
	require.NoError(t, crashed.BeginTransaction())
	require.NoError(t, crashed.ProduceSync(t.Context(),
		&kgo.Record{Topic: topic, Key: []byte("call-1"), Value: []byte("open at the crash")}).FirstErr())
	image := filepath.Join(t.TempDir(), "crashed")
	copyDir(t, cfg.DataDir, image)

	cfg2 := testConfig(t)
	cfg2.DataDir = image
	b2 := start(t, cfg2)
	restarted := txn(b2.Addr())
	for _, v := range []string{"committed after the restart", "and the next"} {
		require.NoError(t, restarted.BeginTransaction())
		require.NoError(t, restarted.ProduceSync(t.Context(),
			&kgo.Record{Topic: topic, Key: []byte("call-1"), Value: []byte(v)}).FirstErr())
		require.NoError(t, restarted.EndTransaction(t.Context(), kgo.TryCommit))
	}

	reader := newClient(t, b2.Addr(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	var got []string
	for len(got) == 0 || got[len(got)-1] != "and the next" {
		fs := reader.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "read so far: %v", got)
		got = append(got, values(fs.Records())...)
	}
	require.Equal(t, []string{"committed after the restart", "and the next"}, got)
}
