package api

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/config"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// patchBody is a state patch of the given keys, each set to value.
func patchBody(t *testing.T, keys []string, value string) string {
	t.Helper()
	m := make(map[string]string, len(keys))
	for _, k := range keys {
		m[k] = value
	}
	data, err := json.Marshal(m)
	require.NoError(t, err)
	return string(data)
}

// startCall makes a new live call in the fixture's committed fold.
func (f *fixture) startCall(t *testing.T, id string) {
	t.Helper()
	ev, err := events.New("baton/ingress", id, &batonv1.CallStarted{CallerNumber: "+15551230001"}, at)
	require.NoError(t, err)
	f.fold.Apply(t.Context(), ev)
	f.fold.Commit()
}

// refusedForCap checks a 422 for a per-call cap: a problem naming the cap
// and the call's size, counted by reason, nothing published.
func (f *fixture) refusedForCap(t *testing.T, path, body, reason, limit string, maxSize, current, after int) {
	t.Helper()
	before := len(f.pub.events)
	counted := testutil.ToFloat64(f.metrics.Rejected.WithLabelValues(opState, reason))
	resp, problem := f.do(t, "PATCH", path, "tok-1", body)
	require.Equal(t, 422, resp.StatusCode, "%v", problem)
	require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	require.Equal(t, float64(422), problem["status"])
	require.Equal(t, reason, problem["code"])
	require.Equal(t, map[string]any{"name": limit, "max": float64(maxSize), "current": float64(current), "after": float64(after)},
		problem["limit"])
	require.Contains(t, problem["detail"], fmt.Sprintf("%s %d; it holds %d", limit, maxSize, current))
	require.Len(t, f.pub.events, before, "nothing published")
	require.Equal(t, counted+1, testutil.ToFloat64(f.metrics.Rejected.WithLabelValues(opState, reason)))
}

// TestStateWritesAreCappedPerCall (issue 14, finding 8): PATCHes, each
// under the body and entry limits, may fill a call's state up to
// max_state_keys_per_call keys and max_state_bytes_per_call bytes, never
// past them: the write that would is refused with 422, named and counted.
func TestStateWritesAreCappedPerCall(t *testing.T) {
	f := newFixture(t)

	// Keys: 4 PATCHes of 64 keys (the most one may carry) fill the
	// default 256.
	var keys []string
	for i := range config.DefaultMaxStateKeysPerCall {
		keys = append(keys, fmt.Sprintf("k%03d", i))
	}
	for i := 0; i < len(keys); i += maxEntries {
		resp, body := f.do(t, "PATCH", "/v1/calls/c1/state", "tok-1", patchBody(t, keys[i:i+maxEntries], "v"))
		require.Equal(t, 202, resp.StatusCode, "PATCH %d: %v", i/maxEntries, body)
	}
	v, _, _ := f.fold.View("c1")
	require.Len(t, v.State, config.DefaultMaxStateKeysPerCall, "up to the cap is accepted and applied")

	f.refusedForCap(t, "/v1/calls/c1/state", `{"one_more":"v"}`, RejectStateTooManyKeys, "max_state_keys_per_call",
		config.DefaultMaxStateKeysPerCall, config.DefaultMaxStateKeysPerCall, config.DefaultMaxStateKeysPerCall+1)
	v, _, _ = f.fold.View("c1")
	require.Len(t, v.State, config.DefaultMaxStateKeysPerCall)
	require.NotContains(t, v.State, "one_more")

	// At the cap, a call may still change, replace and delete keys.
	resp, body := f.do(t, "PATCH", "/v1/calls/c1/state", "tok-1", `{"k000":"changed","k001":null,"new":"v"}`)
	require.Equal(t, 202, resp.StatusCode, "%v", body)
	v, _, _ = f.fold.View("c1")
	require.Len(t, v.State, config.DefaultMaxStateKeysPerCall)
	require.Equal(t, "changed", v.State["k000"])

	// Bytes: 16 keys of 3 bytes with values of 4093 make exactly the
	// default 64 KiB, in two PATCHes under the 64 KiB body limit.
	f.startCall(t, "c2")
	per := config.DefaultMaxStateBytesPerCall / 16
	value := strings.Repeat("x", per-3)
	var big []string
	for i := range 16 {
		big = append(big, fmt.Sprintf("b%02d", i))
	}
	for _, half := range [][]string{big[:8], big[8:]} {
		resp, body := f.do(t, "PATCH", "/v1/calls/c2/state", "tok-1", patchBody(t, half, value))
		require.Equal(t, 202, resp.StatusCode, "%v", body)
	}
	v, _, _ = f.fold.View("c2")
	require.Equal(t, handoff.StateSize{Keys: 16, Bytes: config.DefaultMaxStateBytesPerCall}, handoff.SizeOf(v.State))

	f.refusedForCap(t, "/v1/calls/c2/state", `{"x":"y"}`, RejectStateTooLarge, "max_state_bytes_per_call",
		config.DefaultMaxStateBytesPerCall, config.DefaultMaxStateBytesPerCall, config.DefaultMaxStateBytesPerCall+2)
	// A shorter value is fine.
	resp, body = f.do(t, "PATCH", "/v1/calls/c2/state", "tok-1", `{"b00":"short"}`)
	require.Equal(t, 202, resp.StatusCode, "%v", body)
}
