package chconn

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/services/analytics/internal/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// While nothing listens, Open keeps trying, logs each attempt and gives up
// only when ctx ends.
func TestOpenWaitsUntilContextEnds(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // a closed port: connection refused

	c := config.Default().ClickHouse
	c.Addr = addr
	c.DialTimeout = time.Second
	var logs lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))

	ctx, cancel := context.WithTimeout(t.Context(), 800*time.Millisecond)
	defer cancel()
	conn, err := Open(ctx, Options(c, "default"), logger)
	require.Nil(t, conn)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, addr)
	// 100ms, 200ms, 400ms pauses fit in 800ms: at least three attempts.
	require.GreaterOrEqual(t, strings.Count(logs.String(), `"msg":"waiting for clickhouse"`), 3)
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestOptionsClusterInsertsSynchronously(t *testing.T) {
	c := config.Default().ClickHouse
	require.NotContains(t, Options(c, "baton").Settings, "insert_distributed_sync")
	c.Cluster = "baton"
	require.Equal(t, 1, Options(c, "baton").Settings["insert_distributed_sync"],
		"a Distributed INSERT must return only once the shards have the rows")
}
