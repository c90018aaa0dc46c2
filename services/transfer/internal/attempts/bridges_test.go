package attempts

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
)

// TestLostBridgeIsClaimedOnce: a bridge held with a lease is not lost
// while the lease runs; once it passed, every instance sees it lost, the
// first claim in the log wins (a later one loses, and the holder's next
// heartbeat is refused), a claimed bridge is no longer lost, and a
// tombstone forgets it.
func TestLostBridgeIsClaimedOnce(t *testing.T) {
	brokers := kafkatest.NewCluster(t, 3)
	holder, b, c := open(t, brokers, "holder"), open(t, brokers, "b"), open(t, brokers, "c")
	now := time.Now()
	held := &batonv1.BridgeHeld{CommandId: "cmd-1", CallId: "call-1", LeaseUntil: timestamppb.New(now.Add(time.Minute))}
	require.NoError(t, holder.HoldBridge(t.Context(), held))
	require.NoError(t, b.Sync(t.Context()))
	require.Empty(t, b.LostBridges(now), "the lease runs")
	lost := b.LostBridges(now.Add(2 * time.Minute))
	require.Len(t, lost, 1)
	require.Equal(t, "holder", lost[0].GetInstance())

	won, err := b.ClaimBridge(t.Context(), lost[0])
	require.NoError(t, err)
	require.True(t, won, "the first claim")
	require.NoError(t, c.Sync(t.Context()))
	require.Empty(t, c.LostBridges(now.Add(2*time.Minute)), "claimed: no longer lost")
	won, err = c.ClaimBridge(t.Context(), lost[0])
	require.NoError(t, err)
	require.False(t, won, "a later claim loses")

	require.NoError(t, holder.Sync(t.Context()))
	require.ErrorIs(t, holder.HoldBridge(t.Context(), held), ErrBridgeClaimed, "the stalled holder learns it")

	require.NoError(t, b.EndBridge(t.Context(), "cmd-1"))
	require.NoError(t, holder.HoldBridge(t.Context(),
		&batonv1.BridgeHeld{CommandId: "cmd-2", LeaseUntil: timestamppb.New(now.Add(-time.Second))}))
	require.NoError(t, c.Sync(t.Context()))
	lost = c.LostBridges(now)
	require.Len(t, lost, 1, "the tombstoned bridge is gone")
	require.Equal(t, "cmd-2", lost[0].GetCommandId())
}
