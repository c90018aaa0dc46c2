package hops

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestOffWithoutEnv(t *testing.T) {
	l, err := FromEnv(func(string) string { return "" })
	require.NoError(t, err)
	require.Nil(t, l)
	require.False(t, l.On())
	l.Mark(RouterConsumed, "c1", time.Now()) // no panic on nil
	require.NoError(t, l.Close())
}

func TestMarkWritesLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hops")
	l, err := FromEnv(func(k string) string {
		if k == Env {
			return path
		}
		return ""
	})
	require.NoError(t, err)
	require.True(t, l.On())
	l.Mark(RouterConsumed, "call-1", time.Unix(1, 5))
	l.Mark(TransferSending, "call-2", time.Unix(2, 0))
	require.NoError(t, l.Close())
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "router.consumed call-1 1000000005\ntransfer.sending call-2 2000000000\n", string(data))
}

func TestUnwritablePathIsAnError(t *testing.T) {
	_, err := FromEnv(func(string) string { return filepath.Join(t.TempDir(), "missing", "hops") })
	require.ErrorContains(t, err, Env)
}
