package health

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sipURI resolves like transfer for the tests: SIP URIs as they are.
func sipURI(route string) (string, error) {
	if !strings.HasPrefix(route, "sip:") && !strings.HasPrefix(route, "sips:") {
		return "", fmt.Errorf("route %q: set invite.trunk_host", route)
	}
	return route, nil
}

func allowAll(string) error { return nil }

func TestValidate(t *testing.T) {
	ok := Config{Interval: 10 * time.Second, Timeout: 2 * time.Second, WarnDays: 14,
		Destinations: []Destination{{Name: "support", Route: "sip:support@pbx.example.com"}}}
	require.Empty(t, DefaultConfig().Validate("health_checks", sipURI, allowAll), "off by default, and off needs nothing")
	require.Empty(t, ok.Validate("health_checks", sipURI, allowAll))
	for _, tc := range []struct {
		name  string
		edit  func(c *Config)
		allow func(string) error
		want  string
	}{
		{"interval too short", func(c *Config) { c.Interval = time.Millisecond }, allowAll, "health_checks.interval"},
		{"timeout beyond interval", func(c *Config) { c.Timeout = time.Minute }, allowAll, "health_checks.timeout"},
		{"nothing to check", func(c *Config) { c.Destinations = nil }, allowAll, "health_checks.destinations"},
		{"no name", func(c *Config) { c.Destinations[0].Name = "" }, allowAll, "destinations[0].name"},
		{"duplicate", func(c *Config) { c.Destinations = append(c.Destinations, c.Destinations[0]) }, allowAll, "duplicate"},
		{"tel without trunk host", func(c *Config) { c.Destinations[0].Route = "tel:+15551234567" }, allowAll, "trunk_host"},
		{"route not allowed", func(c *Config) {}, func(string) error { return errors.New("not in routes.allow") }, "not in routes.allow"},
		{"bad transport", func(c *Config) { c.Destinations[0].Transport = "sctp" }, allowAll, "destinations[0].transport"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			c.Destinations = append([]Destination(nil), ok.Destinations...)
			tc.edit(&c)
			errs := c.Validate("health_checks", sipURI, tc.allow)
			require.NotEmpty(t, errs)
			require.ErrorContains(t, errors.Join(errs...), tc.want)
		})
	}
}

// TestChecksExposeHealth: a SIPp destination answering OPTIONS
// (deploy/sipp/dest_options.xml) reads up with its round-trip time; a
// closed TCP port reads down; each check is counted, and a change is
// logged once.
func TestChecksExposeHealth(t *testing.T) {
	port := startSIPp(t, 1)
	closed := closedTCPPort(t)
	cfg := Config{Interval: time.Minute, Timeout: 3 * time.Second, WarnDays: 14, Destinations: []Destination{
		{Name: "support", Route: "sip:queue@127.0.0.1:" + strconv.Itoa(port)},
		{Name: "gone", Route: "sip:queue@127.0.0.1:" + strconv.Itoa(closed), Transport: "tcp"},
	}}
	require.Empty(t, cfg.Validate("health_checks", sipURI, allowAll))
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	var logs bytes.Buffer
	c, err := New(cfg, sipURI, nil, m, slog.New(slog.NewTextHandler(&logs, nil)))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })

	c.Round(t.Context())
	require.Equal(t, 1.0, testutil.ToFloat64(m.Up.WithLabelValues("support")))
	require.Positive(t, testutil.ToFloat64(m.RTT.WithLabelValues("support")))
	require.Equal(t, 0.0, testutil.ToFloat64(m.Up.WithLabelValues("gone")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.Checks.WithLabelValues("support", "up")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.Checks.WithLabelValues("gone", "down")))
	last, ok := c.Last("support")
	require.True(t, ok)
	require.Equal(t, 200, last.Status)
	require.True(t, last.AcceptsRefer)
	require.Contains(t, logs.String(), "destination up")
	require.Contains(t, logs.String(), "destination down")

	// A second round: SIPp answered its one OPTIONS (-m 1) and exited, so
	// support goes down (logged once, as a change); gone stays down
	// (counted, not logged again).
	c.Round(t.Context())
	require.Equal(t, 2.0, testutil.ToFloat64(m.Checks.WithLabelValues("gone", "down")))
	require.Equal(t, 1, strings.Count(logs.String(), `msg="destination down" destination=gone`))
	require.Equal(t, 0.0, testutil.ToFloat64(m.Up.WithLabelValues("support")))
	require.Equal(t, 1, strings.Count(logs.String(), `msg="destination down" destination=support`))
}

func startSIPp(t *testing.T, calls int) int {
	t.Helper()
	bin, err := exec.LookPath("sipp")
	require.NoError(t, err, "SIPp is required (Debian package sip-tester)")
	scenario, err := filepath.Abs(filepath.Join("..", "..", "..", "..", "deploy", "sipp", "dest_options.xml"))
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	port := pc.LocalAddr().(*net.UDPAddr).Port
	require.NoError(t, pc.Close())
	var out bytes.Buffer
	cmd := exec.CommandContext(t.Context(), bin, "-sf", scenario, "-i", "127.0.0.1", "-p", strconv.Itoa(port),
		"-m", strconv.Itoa(calls), "-timeout", "60s", "-timeout_error", "-nostdin")
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("sipp output:\n%s", out.String())
		}
	})
	require.Eventually(t, func() bool { return udpBound(t, port) }, 10*time.Second, 5*time.Millisecond, "sipp did not bind")
	return port
}

func udpBound(t *testing.T, port int) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/net/udp")
	require.NoError(t, err)
	suffix := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(data), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 1 && strings.HasSuffix(f[1], suffix) {
			return true
		}
	}
	return false
}

func closedTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}
