// Package opshttp serves a process's operational endpoints: Prometheus
// /metrics, /healthz and /readyz, and, when asked, Go's /debug/pprof.
package opshttp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/baton-voice/baton/pkg/config"
)

// NewRegistry returns a registry with the Go runtime and process
// collectors; each service registers its own metrics on it (never on the
// global default registry).
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// ReadyFunc reports why a service is not ready to take work, or nil.
type ReadyFunc func(ctx context.Context) error

// Server serves /metrics, /healthz (the process is alive) and /readyz (it
// can take work: ready returns nil).
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen binds cfg.Listen ("" disables: Listen returns nil, nil) and
// prepares the handlers; Serve runs them.
func Listen(cfg Config, reg *prometheus.Registry, ready ReadyFunc, logger *slog.Logger) (*Server, error) {
	if cfg.Listen == "" {
		return nil, nil
	}
	addr, err := ExpandListen(cfg.Listen, os.Getenv)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("observability listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	limits := DefaultLimits()
	if cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		// A CPU profile or trace takes its ?seconds= to write.
		limits.Write = max(limits.Write, maxProfile+10*time.Second)
	}
	return &Server{ln: ln, srv: NewHTTPServer(mux, limits)}, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx ends, then shuts down within five seconds.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("observability server: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("observability shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("observability server: %w", err)
	}
	return nil
}

// maxProfile is the longest profile the write limit leaves room for.
const maxProfile = 60 * time.Second

// Start listens on cfg.Listen and serves until ctx ends, in a goroutine wg
// waits for. An empty Listen serves nothing and is not an error.
func Start(ctx context.Context, wg *sync.WaitGroup, cfg Config, reg *prometheus.Registry, ready ReadyFunc,
	logger *slog.Logger) error {
	srv, err := Listen(cfg, reg, ready, logger)
	if err != nil || srv == nil {
		return err
	}
	wg.Go(func() {
		if err := srv.Serve(ctx); err != nil {
			logger.ErrorContext(ctx, "metrics server stopped", "err", err)
		}
	})
	logger.InfoContext(ctx, "metrics listening", "addr", srv.Addr(), "url", "http://"+srv.Addr()+"/metrics")
	return nil
}

// Config is the metrics section of a service's configuration.
type Config struct {
	// Listen is the host:port of /metrics, /healthz and /readyz; "" turns
	// them off. The host may be an environment variable, ${NAME}: on
	// Kubernetes with hostNetwork, ${POD_IP} (from the downward API's
	// status.podIP) binds the node's cluster address and not every
	// address the node has, its public ones included.
	Listen string `yaml:"listen"`
	// Pprof serves Go's /debug/pprof on the same listener (CPU and heap
	// profiles, goroutine dumps; bench/ingress profiles through it). Off
	// by default: it shows the process's internals to whoever reaches the
	// listener, so turn it on only where that is the operator.
	Pprof bool `yaml:"pprof"`
}

// Validate checks that Listen is "" or host:port, and that a ${NAME} in
// it is set in the environment.
func (c Config) Validate() error {
	if c.Listen == "" {
		if c.Pprof {
			return config.Errorf("metrics.pprof", "needs metrics.listen: pprof is served there")
		}
		return nil
	}
	addr, err := ExpandListen(c.Listen, os.Getenv)
	if err != nil {
		return config.Errorf("metrics.listen", "%v", err)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return config.Errorf("metrics.listen", "%q: want host:port or \"\" (%v)", c.Listen, err)
	}
	return nil
}

// ExpandListen replaces each ${NAME} in addr with getenv(NAME); a name
// that is unset or empty is an error, so a missing variable never turns
// into an empty host (which would bind every address).
func ExpandListen(addr string, getenv func(string) string) (string, error) {
	return config.ExpandEnv(addr, getenv, func(v string) string {
		if strings.Contains(v, ":") && !strings.HasPrefix(v, "[") {
			v = "[" + v + "]" // an IPv6 pod IP
		}
		return v
	})
}

// All is ready when every check is: it returns the first failure.
func All(checks ...ReadyFunc) ReadyFunc {
	return func(ctx context.Context) error {
		for _, c := range checks {
			if c == nil {
				continue
			}
			if err := c(ctx); err != nil {
				return err
			}
		}
		return nil
	}
}
