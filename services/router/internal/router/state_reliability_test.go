//go:build reliability

package router

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/opshttp"
	"github.com/baton-voice/baton/pkg/reliabilitytest"
	"github.com/baton-voice/baton/services/router/internal/api"
	"github.com/baton-voice/baton/services/router/internal/config"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// stateAttack is what the PATCHes against one call got back.
type stateAttack struct {
	callID        string
	patches       int
	keysAsked     int // new keys in all the PATCHes together
	bytesAsked    int // their keys and values, as the caps count them
	status        map[int]int
	refusedByCode map[string]int
}

// patchState sends patches PATCHes of perPatch new keys with values of
// valueLen bytes to callID's state through the agent API, from workers
// concurrent clients, and counts the answers.
func patchState(t *testing.T, base, token, callID string, patches, perPatch, valueLen, workers int) stateAttack {
	t.Helper()
	a := stateAttack{callID: callID, patches: patches, status: map[int]int{}, refusedByCode: map[string]int{}}
	value := strings.Repeat("v", valueLen)
	bodies := make(chan []byte, patches)
	for i := range patches {
		m := make(map[string]string, perPatch)
		for j := range perPatch {
			k := fmt.Sprintf("%s-%04d-%02d", callID, i, j)
			m[k] = value
			a.keysAsked++
			a.bytesAsked += len(k) + len(value)
		}
		body, err := json.Marshal(m)
		require.NoError(t, err)
		bodies <- body
	}
	close(bodies)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			client := &http.Client{Timeout: 10 * time.Second}
			for body := range bodies {
				code, problem, err := patch(t.Context(), client, base+"/v1/calls/"+callID+"/state", token, body)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				a.status[code]++
				if problem != "" {
					a.refusedByCode[problem]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	return a
}

// patch sends one PATCH and returns the status and the problem's code.
func patch(ctx context.Context, client *http.Client, url, token string, body []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, url, strings.NewReader(string(body)))
	if err != nil {
		return 0, "", fmt.Errorf("patch: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/merge-patch+json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("patch: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", fmt.Errorf("patch: read answer: %w", err)
	}
	var problem struct {
		Code string `json:"code"`
	}
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(data, &problem); err != nil {
			return 0, "", fmt.Errorf("patch: %d answer %q: %w", resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode, problem.Code, nil
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// settledHeap is heapInUse once it stops falling (kfake and franz-go let
// go of megabytes of buffers some time after a produce), at most 5 s.
func settledHeap() uint64 {
	last := heapInUse()
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		h := heapInUse()
		if h+256<<10 >= last {
			return h
		}
		last = h
	}
	return last
}

const mib = 1 << 20

// TestReliabilitySecurityAgentState (issue 14, finding 8): an agent API
// client sends 1,000 PATCHes, each under the API's body and entry limits
// (15 new keys of 4,096 bytes, as the review did), to one live
// call, then 1,000 of 15 small new keys to another; and a producer with
// access to Kafka writes 1,000 such CallStateChanged records to a third
// call without the API. Before, the router held 15,000 keys and +70 MiB
// for the PATCHes alone. Now the router (its fold, reading the records
// over TCP from kfake) and the agent API (over HTTP, the PATCHes from 8
// concurrent clients, so writes accepted against the same committed state
// race to the fold) hold each call at max_state_keys_per_call (256) keys
// and max_state_bytes_per_call (64 KiB): the API refuses what it can see
// is over with 422 and counts it, the fold refuses the rest and counts it.
func TestReliabilitySecurityAgentState(t *testing.T) {
	const (
		patches, perPatch, bigValue, smallValue, workers = 1000, 15, 4096, 64, 8
		token                                            = "reliability-token"
	)
	h := newHarness(t)
	require.Equal(t, config.DefaultMaxStateKeysPerCall, h.table.MaxStateKeys)
	require.Equal(t, config.DefaultMaxStateBytesPerCall, h.table.MaxStateBytes)

	fold := handoff.New(h.table, h.logger)
	reg := prometheus.NewRegistry()
	metrics := NewMetrics(reg)
	rt, err := New(Options{Kafka: h.kcfg, Group: "baton-router-state", TransactionalID: "router-state", Metrics: metrics},
		fold, h.logger)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
		rt.Close()
	}()

	// The agent API as the router's main serves it.
	apiMetrics := api.NewMetrics(reg)
	srv := opshttp.NewHTTPServer(api.New(fold, h.table, api.NewKafkaPublisher(h.prod, h.kcfg.Topics.Calls, h.kcfg.ProduceTimeout),
		[]string{token}, h.logger, time.Now, apiMetrics),
		opshttp.DefaultLimits())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		require.NoError(t, srv.Close())
		require.ErrorIs(t, <-served, http.ErrServerClosed)
	}()
	base := "http://" + ln.Addr().String()

	calls := []string{"large", "many", "forged", "sentinel"}
	for _, id := range calls {
		h.publish(h.callStarted(id))
	}
	require.Eventually(t, func() bool {
		for _, id := range calls {
			if _, found, _ := fold.View(id); !found {
				return false
			}
		}
		return true
	}, waitTimeout, 10*time.Millisecond, "calls never started")
	heapBefore := settledHeap()

	large := patchState(t, base, token, "large", patches, perPatch, bigValue, workers)
	many := patchState(t, base, token, "many", patches, perPatch, 1, workers)
	// A producer that can reach Kafka writes state without the API.
	started := h.callStarted("forged")
	forgedBytes := 0
	for i := range patches {
		set := make(map[string]string, perPatch)
		for j := range perPatch {
			k := fmt.Sprintf("forged-%04d-%02d", i, j)
			set[k] = strings.Repeat("f", smallValue)
			forgedBytes += len(k) + smallValue
		}
		ev, err := events.New("baton/router", "forged", &batonv1.CallStateChanged{CallId: "forged", SetBy: "agent-api", Set: set},
			started.Time.Add(time.Duration(i+1)*time.Millisecond))
		require.NoError(t, err)
		h.publish(ev)
	}
	// Everything before the sentinel's write is folded once it shows.
	ev, err := events.New("baton/router", "sentinel", &batonv1.CallStateChanged{CallId: "sentinel", SetBy: "agent-api",
		Set: map[string]string{"done": "yes"}}, started.Time.Add(time.Hour))
	require.NoError(t, err)
	h.publish(ev)
	require.Eventually(t, func() bool { v, _, _ := fold.View("sentinel"); return v.State["done"] == "yes" },
		waitTimeout, 10*time.Millisecond, "the sentinel write was never folded")

	held := map[string]handoff.StateSize{}
	for _, id := range []string{"large", "many", "forged"} {
		v, found, _ := fold.View(id)
		require.True(t, found, id)
		held[id] = handoff.SizeOf(v.State)
		require.LessOrEqual(t, held[id].Keys, h.table.MaxStateKeys, id)
		require.LessOrEqual(t, held[id].Bytes, h.table.MaxStateBytes, id)
		require.Zero(t, held[id].Keys%perPatch, "%s: a write was applied in part", id)
	}
	// Each write adds 15 new keys: what the fold applied is what it holds
	// over 15, and it refused every other record in the log.
	applied := func(id string) int { return held[id].Keys / perPatch }
	require.Equal(t, 1, applied("large"), "one write of 15 x 4 KiB fits 64 KiB")
	require.Equal(t, h.table.MaxStateKeys/perPatch, applied("many"), "17 writes of 15 keys fit 256")
	require.Equal(t, h.table.MaxStateKeys/perPatch, applied("forged"))

	for _, a := range []stateAttack{large, many} {
		require.Equal(t, patches, a.status[http.StatusAccepted]+a.status[http.StatusUnprocessableEntity],
			"%s: every PATCH accepted or refused 422: %v", a.callID, a.status)
	}
	require.Equal(t, map[string]int{handoff.StateTooLarge: large.status[http.StatusUnprocessableEntity]}, withoutZero(large.refusedByCode))
	require.Equal(t, map[string]int{handoff.StateTooManyKeys: many.status[http.StatusUnprocessableEntity]}, withoutZero(many.refusedByCode))
	apiTooLarge := testutil.ToFloat64(apiMetrics.Rejected.WithLabelValues("state", api.RejectStateTooLarge))
	apiTooMany := testutil.ToFloat64(apiMetrics.Rejected.WithLabelValues("state", api.RejectStateTooManyKeys))
	require.InDelta(t, large.status[http.StatusUnprocessableEntity], apiTooLarge, 0, "API refusals counted")
	require.InDelta(t, many.status[http.StatusUnprocessableEntity], apiTooMany, 0, "API refusals counted")

	foldTooLarge := large.status[http.StatusAccepted] - applied("large")
	foldTooMany := many.status[http.StatusAccepted] - applied("many") + patches - applied("forged")
	var gotTooLarge, gotTooMany float64
	require.Eventually(t, func() bool {
		gotTooLarge = testutil.ToFloat64(metrics.StateRefused.WithLabelValues(handoff.StateTooLarge))
		gotTooMany = testutil.ToFloat64(metrics.StateRefused.WithLabelValues(handoff.StateTooManyKeys))
		return int(gotTooLarge) == foldTooLarge && int(gotTooMany) == foldTooMany
	}, waitTimeout, 10*time.Millisecond, "fold refusals counted: too large %v of %d, too many keys %v of %d",
		gotTooLarge, foldTooLarge, gotTooMany, foldTooMany)
	heapAfter := settledHeap()

	describe := func(a stateAttack) string {
		return fmt.Sprintf("%s: %d PATCHes asked for %d keys / %d bytes; 202 x%d, 422 x%d %v (API counted), other statuses %d; "+
			"the fold applied %d and refused %d (counted); held %d keys / %d bytes",
			a.callID, a.patches, a.keysAsked, a.bytesAsked, a.status[http.StatusAccepted], a.status[http.StatusUnprocessableEntity],
			withoutZero(a.refusedByCode), a.patches-a.status[http.StatusAccepted]-a.status[http.StatusUnprocessableEntity],
			applied(a.callID), a.status[http.StatusAccepted]-applied(a.callID), held[a.callID].Keys, held[a.callID].Bytes)
	}
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 9, Test: t.Name(),
		Load: fmt.Sprintf("router (fold on kfake over TCP) and its agent API over HTTP; 3 live calls; %d concurrent API clients",
			workers),
		Faults: "finding 8: an agent (or a prompt-injected LLM) fills one call's state; a producer with Kafka access writes state without the API",
		Inputs: fmt.Sprintf("%d PATCHes of %d new keys x %d-byte values (about %d KiB each, under the 64 KiB body limit); %d PATCHes of %d new keys x 1 byte; "+
			"%d CallStateChanged records of %d new keys x %d bytes straight to baton.calls; caps %d keys, %d bytes per call",
			patches, perPatch, bigValue, large.bytesAsked/patches>>10, patches, perPatch, patches, perPatch, smallValue,
			h.table.MaxStateKeys, h.table.MaxStateBytes),
		Lost: fmt.Sprintf("before (issue 14): 1,000 such PATCHes left 15,000 keys and +70 MiB in the router; now %s; %s; "+
			"forged: %d records asked for %d keys / %d bytes, the fold applied %d and refused %d (counted); held %d keys / %d bytes; "+
			"baton_router_state_writes_refused_total state_too_large %.0f, state_too_many_keys %.0f; "+
			"heap %.1f MiB before, %.1f MiB after (%+.1f MiB, kfake's copy of the log included)",
			describe(large), describe(many), patches, patches*perPatch, forgedBytes, applied("forged"), patches-applied("forged"),
			held["forged"].Keys, held["forged"].Bytes, gotTooLarge, gotTooMany,
			float64(heapBefore)/mib, float64(heapAfter)/mib, (float64(heapAfter)-float64(heapBefore))/mib),
	})
}

// withoutZero drops empty problem codes (answers without a problem).
func withoutZero(m map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		if k != "" && v != 0 {
			out[k] = v
		}
	}
	return out
}
