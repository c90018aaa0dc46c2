package router

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/config"
)

const skipYAML = `
destinations:
  - name: support
    route: sip:support@127.0.0.1:5090
    skip_when_down: true
    fallback: [desk]
  - name: desk
    route: sip:desk@127.0.0.1:5091
rules:
  - name: everyone
    handoff: support
`

// TestRouterSkipsADestinationDown: over Kafka (kfake), a DestinationHealth
// saying support is down, in the calls topic's partition before a call
// starts, makes the router hand the call to support's fallback, desk,
// with support in skipped; once support is up again the next call goes
// to support.
func TestRouterSkipsADestinationDown(t *testing.T) {
	h := newHarness(t)
	c := config.Default("test")
	c.Kafka = h.kcfg
	require.NoError(t, pkgconfig.Parse("router.yaml", []byte(skipYAML), &c))
	table, err := c.Table()
	require.NoError(t, err)
	h.table = table
	h.start("router-skip")
	out := h.consumer(kgo.ReadCommitted())

	at := time.Date(2025, 3, 1, 11, 59, 0, 0, time.UTC)
	health := func(up bool) events.Event {
		ev, err := events.New("baton/transfer", "destination-health/support", &batonv1.DestinationHealth{
			Destination: "support", Up: up, Status: 503, Partition: 0, Partitions: h.kcfg.Partitions,
		}, at)
		require.NoError(t, err)
		return ev
	}
	h.publish(health(false))
	h.publish(h.callStarted("skip-1"))
	ev, err := events.Decode(next(t, out, 1)[0])
	require.NoError(t, err)
	cmd := ev.Data.(*batonv1.HandoffCommand)
	require.Equal(t, "desk", cmd.GetDestination())
	require.Equal(t, []string{"support"}, cmd.GetSkipped())
	require.Equal(t, "everyone", cmd.GetRule())

	h.publish(health(true))
	h.publish(h.callStarted("skip-2"))
	ev, err = events.Decode(next(t, out, 1)[0])
	require.NoError(t, err)
	cmd = ev.Data.(*batonv1.HandoffCommand)
	require.Equal(t, "skip-2", cmd.GetCallId())
	require.Equal(t, "support", cmd.GetDestination())
	require.Empty(t, cmd.GetSkipped())
}
