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
	srv, err := Listen("127.0.0.1:0", reg, func(context.Context) error {
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
	srv, err := Listen("", NewRegistry(), nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Nil(t, srv)
	a, err := Listen("127.0.0.1:0", NewRegistry(), nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	_, err = Listen(a.Addr(), NewRegistry(), nil, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, a.Addr())
	require.NoError(t, a.ln.Close())
}

func TestStart(t *testing.T) {
	var wg sync.WaitGroup
	logger := slog.New(slog.DiscardHandler)
	require.NoError(t, Start(t.Context(), &wg, "", NewRegistry(), nil, logger), "no address serves nothing")
	wg.Wait()

	busy, err := Listen("127.0.0.1:0", NewRegistry(), nil, logger)
	require.NoError(t, err)
	defer func() { require.NoError(t, busy.ln.Close()) }()
	require.ErrorContains(t, Start(t.Context(), &wg, busy.Addr(), NewRegistry(), nil, logger), busy.Addr())

	ctx, cancel := context.WithCancel(t.Context())
	require.NoError(t, Start(ctx, &wg, "127.0.0.1:0", NewRegistry(), func(context.Context) error { return nil }, logger))
	cancel()
	wg.Wait() // the server goroutine ends with ctx
}
