package attempts

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, brokers []string, instance string) *Log {
	t.Helper()
	cfg := kafka.DefaultConfig()
	cfg.Brokers = brokers
	logger := slog.New(slog.DiscardHandler)
	l, err := Open(t.Context(), kafka.ClientOpts(cfg, logger), Options{
		Topic: "attempts", Partitions: 3, ReplicationFactor: -1, Retention: time.Hour, Instance: instance,
	}, logger)
	require.NoError(t, err)
	t.Cleanup(l.Close)
	return l
}

func TestAnotherInstanceSeesTheAttemptAfterSync(t *testing.T) {
	brokers := kafkatest.NewCluster(t, 3)
	a := open(t, brokers, "a")
	require.NoError(t, a.EnsureSynced(t.Context()), "an empty log syncs at once")

	cmds := []*batonv1.HandoffCommand{
		{CommandId: "c1", Method: batonv1.Method_METHOD_REFER},
		{CommandId: "", Method: batonv1.Method_METHOD_BYE}, // no id: not recorded
		{CommandId: "c2", Method: batonv1.Method_METHOD_INVITE},
	}
	errs := a.Record(t.Context(), cmds, []string{"call-1", "call-2", "call-3"})
	require.Equal(t, []error{nil, nil, nil}, errs)
	got, ok := a.Lookup("c1")
	require.True(t, ok, "the writer knows its attempt at once")
	require.Equal(t, "call-1", got.CallID)

	b := open(t, brokers, "b")
	require.NoError(t, b.Sync(t.Context()))
	for _, id := range []string{"c1", "c2"} {
		got, ok := b.Lookup(id)
		require.True(t, ok, "command %s", id)
		require.Equal(t, "a", got.Instance)
	}
	got, _ = b.Lookup("c2")
	require.Equal(t, "METHOD_INVITE", got.Method)
	require.Equal(t, "call-3", got.CallID)
	_, ok = b.Lookup("")
	require.False(t, ok)

	// Written after b's sync, seen once b is invalidated and synced again.
	require.Equal(t, []error{nil}, a.Record(t.Context(), []*batonv1.HandoffCommand{{CommandId: "c3"}}, []string{"call-4"}))
	b.Invalidate()
	require.NoError(t, b.EnsureSynced(t.Context()))
	_, ok = b.Lookup("c3")
	require.True(t, ok)
}
