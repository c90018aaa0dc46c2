package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/pkg/logtest"
	"github.com/baton-voice/baton/pkg/startup"
	"github.com/baton-voice/baton/services/transfer/internal/config"
)

func TestMain(m *testing.M) {
	// signal.Notify starts the runtime's signal watcher, which lives on.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("os/signal.signal_recv"))
}

func writeConfig(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "transfer.yaml")
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
	return path
}

func TestBadConfigExitsWith2(t *testing.T) {
	for _, tc := range []struct {
		name string
		args func(t *testing.T) []string
		want string
	}{
		{"bad timeout", func(t *testing.T) []string {
			return []string{"--config", writeConfig(t, "notify_timeout: -1s\n")}
		}, "transfer.yaml:1: notify_timeout:"},
		{"bad sip limit", func(t *testing.T) []string {
			return []string{"--config", writeConfig(t, "sip:\n  first_read_timeout: 0s\n")}
		}, "transfer.yaml:2: sip.first_read_timeout:"},
		{"missing file", func(t *testing.T) []string {
			return []string{"--config", filepath.Join(t.TempDir(), "nope.yaml")}
		}, "no such file"},
		{"unknown flag", func(*testing.T) []string { return []string{"--nope"} }, "flag provided but not defined"},
		{"trunk password unset", func(t *testing.T) []string {
			return []string{"--config", writeConfig(t, "trunks:\n  - name: carrier\n    hosts: [192.0.2.1]\n    auth:\n"+
				"      username: baton\n      password_env: BATON_TEST_UNSET_TRUNK_PASSWORD\n")}
		}, "trunks[0].auth: environment variable BATON_TEST_UNSET_TRUNK_PASSWORD is empty or unset"},
		{"destination password file missing", func(t *testing.T) []string {
			return []string{"--config", writeConfig(t, "destinations:\n  support:\n    auth:\n      username: baton\n"+
				"      password_file: "+filepath.Join(t.TempDir(), "nope")+"\n")}
		}, "destinations.support.auth: password file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr logtest.Buffer
			require.Equal(t, startup.ExitConfig, run(t.Context(), tc.args(t), &stderr))
			require.Contains(t, stderr.String(), tc.want)
		})
	}
}

// TestTrunksReadTheirSecrets: the passwords come from the environment
// and secret files, and the trunks keep their networks and names.
func TestTrunksReadTheirSecrets(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(file, []byte("file-secret\n"), 0o600))
	var cfg config.Config
	cfg.Trunks = []config.Trunk{{Name: "carrier", Hosts: []string{"192.0.2.0/24", "SBC.example"}, ReferRefusalTTL: time.Hour,
		Auth: &config.Auth{Username: "baton", PasswordEnv: "PW"}}}
	cfg.Destinations = map[string]config.Destination{"Support": {ReferFallback: "invite",
		Auth: &config.Auth{Username: "b2", PasswordFile: file}}}
	trunkList, dests, err := trunks(cfg, func(k string) string { return map[string]string{"PW": "env-secret"}[k] })
	require.NoError(t, err)
	require.Len(t, trunkList, 1)
	require.Equal(t, "env-secret", trunkList[0].Auth.Password)
	require.Equal(t, []string{"sbc.example"}, trunkList[0].Hosts)
	require.Len(t, trunkList[0].Networks, 1)
	require.Equal(t, time.Hour, trunkList[0].ReferRefusalTTL)
	require.Equal(t, "file-secret", dests["support"].Auth.Password, "destination names are matched lower-cased")
	require.Equal(t, "invite", dests["support"].ReferFallback)
}

func TestHelpExitsZero(t *testing.T) {
	var stderr logtest.Buffer
	require.Equal(t, startup.ExitOK, run(t.Context(), []string{"--help"}, &stderr))
	require.Contains(t, stderr.String(), "-config")
}

func TestStartsAndStopsCleanly(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", withTLS), func(t *testing.T) { startAndStop(t, withTLS) })
	}
}

func startAndStop(t *testing.T, withTLS bool) {
	brokers := kafkatest.NewCluster(t, 1)
	doc := "listen: 127.0.0.1:0\nkafka:\n  brokers: [" + brokers[0] + "]\n  partitions: 1\nmetrics:\n  listen: 127.0.0.1:0\n" +
		"sip:\n  first_read_timeout: 200ms\n" +
		// A destination on a closed port: its health reads down.
		"health_checks:\n  interval: 1s\n  timeout: 500ms\n  publish: true\n  destinations:\n" +
		"    - {name: gone, route: \"sip:x@127.0.0.1:" + closedPort(t) + ";transport=tcp\"}\n"
	if withTLS {
		cert, key := writeCert(t)
		doc += "tls:\n  listen: 127.0.0.1:0\n  cert_file: " + cert + "\n  key_file: " + key + "\n  ca_file: " + cert + "\n"
	}
	path := writeConfig(t, doc)
	ctx, cancel := context.WithCancel(t.Context())
	var stderr logtest.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"--config", path}, &stderr) }()
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), `"msg":"transfer started"`) },
		10*time.Second, 10*time.Millisecond, "log: %s", &stderr)
	if withTLS {
		require.Regexp(t, `"sip_tls":"127\.0\.0\.1:[1-9][0-9]*"`, stderr.String(), "the TLS listener is up")
	} else {
		require.Contains(t, stderr.String(), `"sip_tls":""`)
	}
	addr := regexp.MustCompile(`"msg":"metrics listening".*?"addr":"([^"]+)"`).FindStringSubmatch(stderr.String())
	require.NotNil(t, addr, "log: %s", &stderr)
	require.Eventually(t, func() bool {
		code, _ := httpGet(t, "http://"+addr[1]+"/readyz")
		return code == http.StatusOK
	}, 15*time.Second, 20*time.Millisecond, "ready once in the group")
	// sip.first_read_timeout reaches the TCP listener: a silent
	// connection is closed and counted.
	sipTCP := regexp.MustCompile(`"sip_tcp":"([^"]+)"`).FindStringSubmatch(stderr.String())
	require.NotNil(t, sipTCP)
	var d net.Dialer
	silent, err := d.DialContext(t.Context(), "tcp", sipTCP[1])
	require.NoError(t, err)
	defer func() { _ = silent.Close() }()
	require.NoError(t, silent.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = silent.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "closed after sip.first_read_timeout")
	code, body := httpGet(t, "http://"+addr[1]+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "baton_transfer_in_flight 0")
	require.Contains(t, body, "baton_transfer_sip_connections_open 0")
	require.Contains(t, body, `baton_transfer_sip_connections_refused_total{reason="per_source"} 0`)
	require.Contains(t, body, "baton_transfer_sip_connections_timed_out_total 1")
	require.Contains(t, body, `baton_transfer_sip_udp_dropped_total{reason="stray_request"} 0`)
	require.Contains(t, body, "baton_transfer_sip_udp_pool_entries 1")
	require.Eventually(t, func() bool {
		_, body := httpGet(t, "http://"+addr[1]+"/metrics")
		return strings.Contains(body, `baton_transfer_destination_up{destination="gone"} 0`) &&
			strings.Contains(body, `baton_transfer_destination_checks_total{destination="gone",result="down"}`)
	}, 10*time.Second, 20*time.Millisecond, "health_checks run and expose the destination down")
	require.Contains(t, stderr.String(), `"msg":"destination down"`)
	// publish: the change is a DestinationHealth on the calls topic.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("baton.calls"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	pollCtx, cancelPoll := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancelPoll()
	var health *events.Event
	for health == nil && pollCtx.Err() == nil {
		for _, rec := range cl.PollFetches(pollCtx).Records() {
			if ev, err := events.Decode(rec); err == nil && ev.Type == events.TypeDestinationHealth {
				health = &ev
			}
		}
	}
	require.NotNil(t, health, "no DestinationHealth on baton.calls")
	require.Equal(t, "destination-health/gone", health.Subject)
	cancel()
	select {
	case code := <-done:
		require.Equal(t, startup.ExitOK, code, stderr.String())
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	require.Contains(t, stderr.String(), `"msg":"transfer stopped"`)
}

func writeCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "transfer"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	return certFile, keyFile
}

// closedPort is a TCP port on loopback nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return fmt.Sprint(port)
}

func httpGet(t *testing.T, url string) (int, string) {
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
