package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestEvictionAndBoundsConfig: max_call_duration, max_calls and
// api.max_mark_waits have defaults, and a bad value names its file, line
// and field.
func TestEvictionAndBoundsConfig(t *testing.T) {
	c, err := parse(t, `destinations:
  - name: support
    route: sip:support@example.com
`)
	require.NoError(t, err)
	require.Equal(t, 4*time.Hour, c.MaxCallDuration)
	require.Equal(t, 200_000, c.MaxCalls)
	require.Equal(t, 1000, c.API.MaxMarkWaits)

	c, err = parse(t, `destinations:
  - name: support
    route: sip:support@example.com
max_call_duration: 90m
max_calls: 5000
`)
	require.NoError(t, err)
	require.Equal(t, 90*time.Minute, c.MaxCallDuration)
	require.Equal(t, 5000, c.MaxCalls)

	_, err = parse(t, `destinations:
  - name: support
    route: sip:support@example.com
max_call_duration: 30s
max_calls: 10
api:
  listen: 127.0.0.1:8080
  max_mark_waits: 0
`)
	require.ErrorContains(t, err, `router.yaml:4: max_call_duration: 30s: want 1m0s to 168h0m0s`)
	require.ErrorContains(t, err, `router.yaml:5: max_calls: 10: want 100 to 10000000`)
	require.ErrorContains(t, err, `router.yaml:8: api.max_mark_waits: 0: want 1 to 100000`)

	_, err = parse(t, `destinations:
  - name: support
    route: sip:support@example.com
max_call_duration: 200h
`)
	require.ErrorContains(t, err, `router.yaml:4: max_call_duration: 200h0m0s: want 1m0s to 168h0m0s`)
}
