package opshttp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(body)
}

func TestServer(t *testing.T) {
	reg := NewRegistry()
	calls := prometheus.NewCounter(prometheus.CounterOpts{Name: "baton_test_calls_total", Help: "calls"})
	reg.MustRegister(calls)
	calls.Add(3)
	var ready atomic.Bool
	srv, err := Listen(Config{Listen: "127.0.0.1:0"}, reg, func(context.Context) error {
		if !ready.Load() {
			return errors.New("kafka not reachable")
		}
		return nil
	}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	base := "http://" + srv.Addr()

	code, body := get(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "baton_test_calls_total 3")
	require.Contains(t, body, "go_goroutines")

	code, _ = get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code)
	code, body = get(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.True(t, strings.Contains(body, "kafka not reachable"))
	ready.Store(true)
	code, _ = get(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code)

	cancel()
	require.NoError(t, <-done)
}

func TestListenDisabledAndBusy(t *testing.T) {
	srv, err := Listen(Config{}, NewRegistry(), nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Nil(t, srv)
	a, err := Listen(Config{Listen: "127.0.0.1:0"}, NewRegistry(), nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	_, err = Listen(Config{Listen: a.Addr()}, NewRegistry(), nil, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, a.Addr())
	require.NoError(t, a.ln.Close())
}

func TestStart(t *testing.T) {
	var wg sync.WaitGroup
	logger := slog.New(slog.DiscardHandler)
	require.NoError(t, Start(t.Context(), &wg, Config{}, NewRegistry(), nil, logger), "no address serves nothing")
	wg.Wait()

	busy, err := Listen(Config{Listen: "127.0.0.1:0"}, NewRegistry(), nil, logger)
	require.NoError(t, err)
	defer func() { require.NoError(t, busy.ln.Close()) }()
	require.ErrorContains(t, Start(t.Context(), &wg, Config{Listen: busy.Addr()}, NewRegistry(), nil, logger), busy.Addr())

	ctx, cancel := context.WithCancel(t.Context())
	require.NoError(t, Start(ctx, &wg, Config{Listen: "127.0.0.1:0"}, NewRegistry(), func(context.Context) error { return nil }, logger))
	cancel()
	wg.Wait() // the server goroutine ends with ctx
}

func TestExpandListen(t *testing.T) {
	env := map[string]string{"POD_IP": "10.0.3.7", "POD_IP6": "fd00::7"}
	getenv := func(k string) string { return env[k] }
	for in, want := range map[string]string{
		"${POD_IP}:9461":  "10.0.3.7:9461",
		"$POD_IP:9461":    "10.0.3.7:9461",
		"${POD_IP6}:9461": "[fd00::7]:9461",
		"127.0.0.1:9461":  "127.0.0.1:9461",
	} {
		got, err := ExpandListen(in, getenv)
		if err != nil || got != want {
			t.Errorf("ExpandListen(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	// An unset variable is an error, never an empty host (every address).
	if got, err := ExpandListen("${NOPE}:9461", getenv); err == nil {
		t.Fatalf("unset variable expanded to %q", got)
	}
	t.Setenv("BATON_TEST_OPS_HOST", "")
	if err := (Config{Listen: "${BATON_TEST_OPS_HOST}:9461"}).Validate(); err == nil || !strings.Contains(err.Error(), "BATON_TEST_OPS_HOST") {
		t.Fatalf("Validate with an unset variable: %v", err)
	}
	t.Setenv("BATON_TEST_OPS_HOST", "127.0.0.1")
	if err := (Config{Listen: "${BATON_TEST_OPS_HOST}:0"}).Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := Listen(Config{Listen: "${BATON_TEST_OPS_HOST}:0"}, NewRegistry(), All(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.ln.Close() }()
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Fatalf("bound %s", s.Addr())
	}
}

// pprof is served only when asked for, on the same listener, and a
// profile may take longer than the usual write limit.
func TestPprofOnlyWhenAsked(t *testing.T) {
	get := func(cfg Config, path string) int {
		t.Helper()
		srv, err := Listen(cfg, NewRegistry(), All(), slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx) }()
		defer func() { cancel(); require.NoError(t, <-done) }()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+srv.Addr()+path, nil)
		require.NoError(t, err)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		require.NoError(t, res.Body.Close())
		return res.StatusCode
	}
	require.Equal(t, http.StatusNotFound, get(Config{Listen: "127.0.0.1:0"}, "/debug/pprof/cmdline"), "off by default")
	require.Equal(t, http.StatusOK, get(Config{Listen: "127.0.0.1:0", Pprof: true}, "/debug/pprof/cmdline"))
	require.Equal(t, http.StatusOK, get(Config{Listen: "127.0.0.1:0", Pprof: true}, "/debug/pprof/profile?seconds=1"))
	require.ErrorContains(t, Config{Pprof: true}.Validate(), "metrics.pprof: needs metrics.listen")
}
