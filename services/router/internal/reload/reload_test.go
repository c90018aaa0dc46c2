package reload

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/pkg/logtest"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// load makes a table whose default is the file's first line; "bad" is
// invalid.
func load(path string) (*handoff.Table, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	name := strings.TrimSpace(string(data))
	if name == "bad" {
		return nil, nil, errors.New("router.yaml:1: destinations: bad")
	}
	return &handoff.Table{Default: name}, []string{"w-" + name}, nil
}

func setup(t *testing.T, content string) (*Holder, string, *logtest.Buffer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "router.yaml")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	initial, _, err := load(path)
	require.NoError(t, err)
	logs := &logtest.Buffer{}
	h, err := New(initial, path, load, slog.New(slog.NewJSONHandler(logs, nil)))
	require.NoError(t, err)
	return h, path, logs
}

func TestSighupReloadsAndAnInvalidFileKeepsTheOldTable(t *testing.T) {
	h, path, logs := setup(t, "one")
	hup := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx, hup, 0) }()
	defer func() { cancel(); <-done }()

	first := h.Current()
	require.NoError(t, os.WriteFile(path, []byte("two"), 0o600))
	hup <- os.Interrupt
	require.Eventually(t, func() bool { return h.Current().Default == "two" }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, "one", first.Default, "a table in use is never changed")
	require.Contains(t, logs.String(), `"warning":"w-two"`)

	require.NoError(t, os.WriteFile(path, []byte("bad"), 0o600))
	hup <- os.Interrupt
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "config reload rejected") }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, "two", h.Current().Default)
	require.Contains(t, logs.String(), "router.yaml:1: destinations: bad")
}

func TestFileChangeReloads(t *testing.T) {
	h, path, logs := setup(t, "one")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx, nil, 5*time.Millisecond) }()
	defer func() { cancel(); <-done }()

	require.NoError(t, os.WriteFile(path, []byte("bad"), 0o600))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "config reload rejected") }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, "one", h.Current().Default)
	// A bad file is reported once, not at every poll.
	require.Never(t, func() bool { return strings.Count(logs.String(), "config reload rejected") > 1 }, 50*time.Millisecond, 5*time.Millisecond)

	require.NoError(t, os.WriteFile(path, []byte("three"), 0o600))
	require.Eventually(t, func() bool { return h.Current().Default == "three" }, 5*time.Second, 5*time.Millisecond)
	require.Contains(t, logs.String(), `"trigger":"file changed"`)
}
