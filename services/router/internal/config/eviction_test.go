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

// TestWebhooksConfig: webhooks are off by default; an entry gets its
// defaults, and each bad field names its file, line and field.
func TestWebhooksConfig(t *testing.T) {
	c, err := parse(t, `destinations:
  - name: support
    route: sip:support@example.com
`)
	require.NoError(t, err)
	require.Empty(t, c.Webhooks)
	require.Equal(t, 15*time.Second, c.API.StreamHeartbeat)

	c, err = parse(t, `destinations:
  - name: support
    route: sip:support@example.com
webhooks:
  - url: https://agent.example.com/baton
    secret_env: AGENT_HOOK_SECRET
    events: [failed, returned_to_agent]
`)
	require.NoError(t, err)
	require.Equal(t, Webhook{Name: "webhook-0", URL: "https://agent.example.com/baton", SecretEnv: "AGENT_HOOK_SECRET",
		Events: []string{"failed", "returned_to_agent"}, MaxInFlight: 4, MaxQueue: 10_000, Timeout: 5 * time.Second,
		MaxRetry: 10 * time.Minute}, c.Webhooks[0])

	_, err = parse(t, `destinations:
  - name: support
    route: sip:support@example.com
webhooks:
  - url: https://user:pw@agent.example.com/baton
    events: [rejected]
    max_in_flight: 100
  - url: ftp://agent.example.com
    secret_env: S
    max_queue: 2
    max_in_flight: 4
api:
  listen: 127.0.0.1:8080
  max_streams_per_call: 0
`)
	require.ErrorContains(t, err, `router.yaml:5: webhooks[0].url: credentials in the URL`)
	require.ErrorContains(t, err, `webhooks[0].secret_env: the environment variable holding the signing secret is required`)
	require.ErrorContains(t, err, `router.yaml:6: webhooks[0].events[0]: "rejected": want one of requested, refused`)
	require.ErrorContains(t, err, `router.yaml:7: webhooks[0].max_in_flight: 100: want 1 to 64`)
	require.ErrorContains(t, err, `router.yaml:8: webhooks[1].url: "ftp://agent.example.com": want an absolute http(s) URL`)
	require.ErrorContains(t, err, `router.yaml:10: webhooks[1].max_queue: 2: want max_in_flight (4) to 1000000`)
	require.ErrorContains(t, err, `router.yaml:14: api.max_streams_per_call: 0: want 1 to 100`)
}
