package uac

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/logtest"
)

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(ctx context.Context, src net.IP, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
	return d.DialContext(ctx, "tcp", addr)
}

// closedBy waits up to within for conn to be closed by the far end (a
// read that ends without data) and reports whether it was.
func closedBy(conn net.Conn, within time.Duration) bool {
	_ = conn.SetReadDeadline(time.Now().Add(within))
	_, err := conn.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// silentConns opens n connections to addr spread over sources loopback
// addresses (127.0.0.10 and up) and sends nothing on them.
func silentConns(t *testing.T, addr string, n, sources int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	for i := range n {
		conn, err := dialFrom(t.Context(), net.IPv4(127, 0, 0, byte(10+i%sources)), addr)
		require.NoError(t, err)
		conns = append(conns, conn)
	}
	return conns
}

// TestSilentTCPConnectionsAreClosed: 300 connections that never send a
// byte hold transfer's TCP listener only for sip.first_read_timeout; then
// each is closed and counted, and the goroutines they cost are gone. A
// source over its per-source cap is refused at accept.
func TestSilentTCPConnectionsAreClosed(t *testing.T) {
	const n, sources, perSource = 300, 10, 32
	const firstRead = 500 * time.Millisecond
	c, err := Listen(t.Context(), "127.0.0.1:0", "127.0.0.1", testLogger(t), Options{Limits: Limits{MaxConnections: 1024, MaxConnectionsPerSource: perSource, FirstReadTimeout: firstRead, IdleTimeout: time.Minute}})

	require.NoError(t, err)
	defer func() { require.NoError(t, c.Close()) }()
	reg := prometheus.NewRegistry()
	c.RegisterMetrics(reg)

	before := runtime.NumGoroutine()
	opened := time.Now()
	conns := silentConns(t, c.TCPAddr().String(), n, sources)
	require.Eventually(t, func() bool { return c.Counters().ConnsOpen == n }, 5*time.Second, 10*time.Millisecond,
		"every connection accepted and held: %+v", c.Counters())
	peak := runtime.NumGoroutine()
	require.Greater(t, peak, before+n/2, "sipgo reads every connection")
	require.Equal(t, float64(n), metric(t, reg, "baton_transfer_sip_connections_open", ""))

	for i, conn := range conns {
		require.True(t, closedBy(conn, firstRead+5*time.Second), "connection %d still open", i)
	}
	took := time.Since(opened)
	require.GreaterOrEqual(t, took, firstRead, "not closed before the timeout")
	require.Less(t, took, firstRead+5*time.Second)
	require.Eventually(t, func() bool { cs := c.Counters(); return cs.ConnsOpen == 0 && cs.ConnsTimedOut == n },
		5*time.Second, 10*time.Millisecond, "%+v", c.Counters())
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= before+5 }, 5*time.Second, 10*time.Millisecond,
		"goroutines back near %d (peak %d)", before, peak)
	require.Equal(t, float64(n), metric(t, reg, "baton_transfer_sip_connections_timed_out_total", ""))

	// One source: perSource connections are held, the next is refused at
	// once (long before the timeout) and counted.
	held := silentConns(t, c.TCPAddr().String(), perSource, 1)
	require.Eventually(t, func() bool { return c.Counters().ConnsOpen == perSource }, 5*time.Second, 10*time.Millisecond)
	over, err := dialFrom(t.Context(), net.IPv4(127, 0, 0, 10), c.TCPAddr().String())
	require.NoError(t, err)
	defer func() { _ = over.Close() }()
	require.True(t, closedBy(over, firstRead/2), "the connection over the per-source cap is closed at accept")
	require.Equal(t, uint64(1), c.Counters().ConnsRefusedPerSource)
	require.Equal(t, int64(perSource), c.Counters().ConnsOpen, "the held ones stay")
	// Another source is not affected.
	other, err := dialFrom(t.Context(), net.IPv4(127, 0, 0, 99), c.TCPAddr().String())
	require.NoError(t, err)
	defer func() { _ = other.Close() }()
	require.Eventually(t, func() bool { return c.Counters().ConnsOpen == perSource+1 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, 1.0, metric(t, reg, "baton_transfer_sip_connections_refused_total", "per_source"))
	for _, conn := range held {
		require.True(t, closedBy(conn, firstRead+5*time.Second))
	}
}

// TestTCPListenerCapsConnections: over sip.max_connections, a connection
// is refused at accept and counted as full.
func TestTCPListenerCapsConnections(t *testing.T) {
	c, err := Listen(t.Context(), "127.0.0.1:0", "127.0.0.1", testLogger(t), Options{Limits: Limits{MaxConnections: 4, MaxConnectionsPerSource: 4, FirstReadTimeout: 5 * time.Second}})

	require.NoError(t, err)
	defer func() { require.NoError(t, c.Close()) }()
	silentConns(t, c.TCPAddr().String(), 4, 4)
	require.Eventually(t, func() bool { return c.Counters().ConnsOpen == 4 }, 5*time.Second, 10*time.Millisecond)
	over, err := dialFrom(t.Context(), net.IPv4(127, 0, 0, 50), c.TCPAddr().String())
	require.NoError(t, err)
	defer func() { _ = over.Close() }()
	require.True(t, closedBy(over, 2*time.Second))
	require.Equal(t, uint64(1), c.Counters().ConnsRefusedFull)
}

// TestSilentTLSHandshakeIsClosed: a connection to the TLS listener that
// never starts its handshake is closed after the first-read timeout (the
// guard sits below TLS), and one that does handshake is served.
func TestSilentTLSHandshakeIsClosed(t *testing.T) {
	const firstRead = 300 * time.Millisecond
	cert := selfSigned(t)
	c, err := Listen(t.Context(), "127.0.0.1:0", "127.0.0.1", testLogger(t),
		Options{TLS: &TLS{Listen: "127.0.0.1:0", Server: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}},
			Limits: Limits{FirstReadTimeout: firstRead}})
	require.NoError(t, err)
	defer func() { require.NoError(t, c.Close()) }()

	silent, err := dialFrom(t.Context(), net.IPv4(127, 0, 0, 1), c.TLSAddr().String())
	require.NoError(t, err)
	defer func() { _ = silent.Close() }()
	start := time.Now()
	require.True(t, closedBy(silent, firstRead+5*time.Second), "the silent TLS connection is closed")
	require.GreaterOrEqual(t, time.Since(start), firstRead*9/10)
	require.Eventually(t, func() bool { return c.Counters().ConnsTimedOut == 1 }, 5*time.Second, 10*time.Millisecond)

	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} //nolint:gosec // test peer
	conn, err := d.DialContext(t.Context(), "tcp", c.TLSAddr().String())
	require.NoError(t, err, "a peer that handshakes is served")
	require.NoError(t, conn.Close())
}

// TestSIPLoggerDropsPackets: sipgo logs a stream it cannot parse at ERROR
// with the packet; transfer's logs get the length, never the bytes.
func TestSIPLoggerDropsPackets(t *testing.T) {
	const marker = "MARKER-7c1e"
	var logs logtest.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := Listen(t.Context(), "127.0.0.1:0", "127.0.0.1", logger, Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, c.Close()) }()
	conn, err := dialFrom(t.Context(), net.IPv4(127, 0, 0, 1), c.TCPAddr().String())
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	_, err = conn.Write([]byte("HELLO " + marker + " nothing\r\nX: y\r\n\r\n"))
	require.NoError(t, err)
	require.True(t, closedBy(conn, 5*time.Second), "sipgo closes a stream it cannot frame")
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `"msg":"failed to parse"`) },
		5*time.Second, 10*time.Millisecond, "sipgo's parse error reaches transfer's logger: %s", &logs)
	require.Contains(t, logs.String(), `"data_bytes":`)
	require.NotContains(t, logs.String(), marker)
}

// metric is the value of reg's metric name, with label reason when one
// is given.
func metric(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := reason == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetName() == "reason" && l.GetValue() == reason
			}
			if match {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	require.Failf(t, "metric missing", "%s{reason=%q}", name, reason)
	return 0
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "transfer"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
