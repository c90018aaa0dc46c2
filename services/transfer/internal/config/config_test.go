package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDefaultsAreValid(t *testing.T) {
	c, err := Load("")
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:5070", c.Listen)
	require.Equal(t, "baton-transfer", c.Group)
	require.Equal(t, 32*time.Second, c.NotifyTimeout)
	require.Equal(t, 10*time.Second, c.ShutdownTimeout)
	require.Equal(t, "127.0.0.1", c.ViaHost())
	require.Equal(t, "baton.transfer-attempts", c.AttemptLog.Topic)
	require.Equal(t, 4*time.Second, c.ByeAfterRefer)
	require.Equal(t, "caller", c.Invite.CallerID.Policy)
	require.Equal(t, "127.0.0.1", c.MediaAddr().String())
	require.Equal(t, SIP{MaxConnections: 1024, MaxConnectionsPerSource: 64, FirstReadTimeout: 5 * time.Second,
		IdleTimeout: 3 * time.Minute}, c.SIP)
}

func TestSIPLimitsLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.yaml")
	doc := "sip:\n  max_connections: 10\n  max_connections_per_source: 2\n  first_read_timeout: 1s\n  idle_timeout: 30s\n"
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
	c, err := Load(path)
	require.NoError(t, err)
	require.Equal(t, SIP{MaxConnections: 10, MaxConnectionsPerSource: 2, FirstReadTimeout: time.Second, IdleTimeout: 30 * time.Second}, c.SIP)
}

func TestExampleConfigLoads(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "transfer.example.yaml"))
	require.NoError(t, err)
	require.Equal(t, Default().NotifyTimeout, c.NotifyTimeout)
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want string
	}{
		{"wildcard listen needs external_host", "listen: 0.0.0.0:5070\n", "t.yaml: external_host: required"},
		{"listen not host:port", "listen: nope\n", "t.yaml:1: listen:"},
		{"listen host is a name", "listen: localhost:5070\n", "want an IP address"},
		{"bad external host", "external_host: 'a b'\n", "t.yaml:1: external_host:"},
		{"zero notify timeout", "group: g\nnotify_timeout: 0s\n", "t.yaml:2: notify_timeout:"},
		{"empty group", "group: ''\n", "t.yaml:1: group:"},
		{"no in-flight room", "max_in_flight: 0\n", "t.yaml:1: max_in_flight:"},
		{"negative shutdown", "shutdown_timeout: -1s\n", "t.yaml:1: shutdown_timeout:"},
		{"unknown key", "listne: 127.0.0.1:5070\n", "field listne not found"},
		{"negative bye wait", "bye_after_refer: -1s\n", "t.yaml:1: bye_after_refer:"},
		{"attempt topic empty", "attempt_log:\n  topic: ''\n", "t.yaml:2: attempt_log.topic:"},
		{"attempt topic reused", "attempt_log:\n  topic: baton.calls\n", "attempt_log.topic: \"baton.calls\" is also"},
		{"retention under command age", "max_command_age: 1h\nattempt_log:\n  retention: 30m\n", "t.yaml:3: attempt_log.retention:"},
		{"media host", "media:\n  host: localhost\n", "t.yaml:2: media.host:"},
		{"wildcard media host", "media:\n  host: 0.0.0.0\n", "media.external_host: required"},
		{"media port range", "media:\n  port_min: 40000\n  port_max: 30000\n", "media.port_min: range"},
		{"idle timeout", "media:\n  idle_timeout: 0s\n", "media.idle_timeout:"},
		{"rtcp interval", "media:\n  rtcp_interval: 1ms\n", "t.yaml:2: media.rtcp_interval:"},
		{"answer timeout", "invite:\n  answer_timeout: 0s\n", "t.yaml:2: invite.answer_timeout:"},
		{"caller id policy", "invite:\n  caller_id:\n    policy: random\n", "t.yaml:3: invite.caller_id.policy:"},
		{"fixed caller id needs a number", "invite:\n  caller_id:\n    policy: fixed\n", "invite.caller_id.number:"},
		{"srtp suite", "invite:\n  srtp_suites: [AES_256_CM]\n", "invite.srtp_suites[0]:"},
		{"trunk host", "invite:\n  trunk_host: 'a b:5060'\n", "t.yaml:2: invite.trunk_host:"},
		{"trunk port", "invite:\n  trunk_host: trunk.example:0\n", "invite.trunk_host: port"},
		{"whisper length", "invite:\n  whisper:\n    max_duration: 0s\n", "t.yaml:3: invite.whisper.max_duration:"},
		{"whisper host with port", "invite:\n  whisper:\n    allow_hosts:\n      - cdn.example.com\n      - tts.example.com:443\n",
			"t.yaml:5: invite.whisper.allow_hosts[1]: \"tts.example.com:443\": want a host name"},
		{"whisper host is a URL", "invite:\n  whisper:\n    allow_hosts: [\"https://cdn.example.com\"]\n",
			"t.yaml:3: invite.whisper.allow_hosts[0]:"},
		{"whisper any host", "invite:\n  whisper:\n    allow_hosts: [\"*\"]\n", "invite.whisper.allow_hosts[0]: \"*\""},
		{"whisper top-level domain", "invite:\n  whisper:\n    allow_hosts: [\"*.com\"]\n", "whole top-level domain"},
		{"whisper timeout", "invite:\n  whisper:\n    timeout: 0s\n", "t.yaml:3: invite.whisper.timeout:"},
		{"whisper max bytes", "invite:\n  whisper:\n    max_bytes: 100\n", "t.yaml:3: invite.whisper.max_bytes: 100, want at least 364"},
		{"whisper cache entries", "invite:\n  whisper:\n    cache_entries: -1\n", "t.yaml:3: invite.whisper.cache_entries:"},
		{"whisper cache bytes", "invite:\n  whisper:\n    cache_bytes: 1000\n", "t.yaml:3: invite.whisper.cache_bytes: 1000, want at least invite.whisper.max_bytes"},
		{"whisper cache ttl", "invite:\n  whisper:\n    cache_ttl: 0s\n", "t.yaml:3: invite.whisper.cache_ttl:"},
		{"tls without listen", "tls:\n  cert_file: /x.pem\n", "tls.listen: required"},
		{"tls without cert", "tls:\n  listen: 127.0.0.1:5061\n", "tls.cert_file: tls.cert_file and tls.key_file are required"},
		{"tls cert missing", "tls:\n  listen: 127.0.0.1:5061\n  cert_file: /nope.pem\n  key_file: /nope.key\n", "tls.cert_file: open /nope.pem"},
		{"tls listen", "tls:\n  listen: nope\n  cert_file: a\n  key_file: b\n", "t.yaml:2: tls.listen:"},
		{"sip max connections", "sip:\n  max_connections: 0\n", "t.yaml:2: sip.max_connections: 0, want at least 1"},
		{"sip per source over the cap", "sip:\n  max_connections: 8\n  max_connections_per_source: 9\n",
			"t.yaml:3: sip.max_connections_per_source: 9, want 1 to sip.max_connections (8)"},
		{"sip per source zero", "sip:\n  max_connections_per_source: 0\n", "t.yaml:2: sip.max_connections_per_source:"},
		{"sip first read", "sip:\n  first_read_timeout: 0s\n", "t.yaml:2: sip.first_read_timeout:"},
		{"bad route pattern", "routes:\n  allow: [\"re:(\"]\n", "routes.allow[0]"},
		{"bad peer network", "peers:\n  networks: [10.0.0.0/33]\n", "peers.networks[0]"},
		{"sip idle under first read", "sip:\n  first_read_timeout: 10s\n  idle_timeout: 5s\n", "t.yaml:3: sip.idle_timeout: 5s"},
		{"health checks with nothing to check", "health_checks:\n  interval: 30s\n", "health_checks.destinations: empty"},
		{"health check route outside routes.allow",
			"routes:\n  allow: [\"sip:*@pbx.example.com\"]\nhealth_checks:\n  interval: 30s\n  destinations:\n    - name: evil\n      route: sip:x@evil.example.com\n",
			"t.yaml:7: health_checks.destinations[0].route:"},
		{"health check tel route without trunk host",
			"health_checks:\n  interval: 30s\n  destinations:\n    - name: phone\n      route: tel:+15551234567\n",
			"t.yaml:5: health_checks.destinations[0].route: route not supported: route \"tel:+15551234567\" is a tel: URI: set invite.trunk_host"},
		{"trunk without name", "trunks:\n  - hosts: [192.0.2.1]\n", "trunks[0].name: required"},
		{"trunk without hosts", "trunks:\n  - name: a\n", "trunks[0].hosts:"},
		{"trunk bad host", "trunks:\n  - name: a\n    hosts: ['a b']\n", "trunks[0].hosts[0]:"},
		{"trunk twice", "trunks:\n  - name: a\n    hosts: [192.0.2.1]\n  - name: A\n    hosts: [192.0.2.2]\n", "trunks[1].name: \"A\" is used twice"},
		{"auth password inline is not a field", "trunks:\n  - name: a\n    hosts: [192.0.2.1]\n    auth:\n      username: u\n      password: x\n",
			"field password not found"},
		{"auth without a secret", "trunks:\n  - name: a\n    hosts: [192.0.2.1]\n    auth:\n      username: u\n",
			"trunks[0].auth: set exactly one of password_env and password_file"},
		{"auth with both secrets", "destinations:\n  support:\n    auth:\n      username: u\n      password_env: P\n      password_file: /p\n",
			"destinations.support.auth: set exactly one"},
		{"auth without username", "destinations:\n  support:\n    auth:\n      password_env: P\n", "destinations.support.auth.username:"},
		{"refusal ttl over the retention", "trunks:\n  - name: a\n    hosts: [192.0.2.1]\n    refer_refusal_ttl: 48h\n",
			"trunks[0].refer_refusal_ttl: 48h0m0s, want 0 (off) up to attempt_log.retention"},
		{"refer fallback", "destinations:\n  support:\n    refer_fallback: hangup\n", "destinations.support.refer_fallback: \"hangup\""},
		{"bridge lease", "attempt_log:\n  bridge_lease: 10ms\n", "attempt_log.bridge_lease: 10ms, want 0 (off) or 1s"},
		{"release bridge", "destinations:\n  support:\n    release_bridge: refer\n", "destinations.support.release_bridge: \"refer\", want replaces"},
		{"release delay", "destinations:\n  support:\n    release_bridge: replaces\n    release_delay: -1s\n",
			"destinations.support.release_delay: -1s, want 0 up to 1h"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t.yaml")
			require.NoError(t, os.WriteFile(path, []byte(tc.doc), 0o600))
			_, err := Load(path)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestHealthChecksLoad: off by default; a tel: route goes through
// invite.trunk_host as a command's would.
func TestHealthChecksLoad(t *testing.T) {
	require.False(t, Default().HealthChecks.Enabled())
	path := filepath.Join(t.TempDir(), "t.yaml")
	require.NoError(t, os.WriteFile(path, []byte("invite:\n  trunk_host: sbc.example.com:5080\nhealth_checks:\n  interval: 30s\n"+
		"  destinations:\n    - name: phone\n      route: tel:+15551234567\n      transport: tcp\n"), 0o600))
	c, err := Load(path)
	require.NoError(t, err)
	require.True(t, c.HealthChecks.Enabled())
	uri, err := c.HealthRoute(c.HealthChecks.Destinations[0].Route)
	require.NoError(t, err)
	require.Equal(t, "sip:+15551234567@sbc.example.com:5080;user=phone", uri)
}

// TestWhisperDefaults: whisper URLs are refused until allow_hosts names
// hosts; the fetch and cache bounds have defaults.
func TestWhisperDefaults(t *testing.T) {
	c := Default()
	require.Equal(t, Whisper{MaxDuration: 30 * time.Second, Timeout: 3 * time.Second, MaxBytes: 2 << 20,
		CacheEntries: 256, CacheBytes: 64 << 20, CacheTTL: 10 * time.Minute}, c.Invite.Whisper)
	require.Empty(t, c.Invite.Whisper.AllowHosts)

	path := filepath.Join(t.TempDir(), "t.yaml")
	doc := "invite:\n  whisper:\n    allow_hosts: [cdn.example.com, \"*.tts.example.net\", 10.0.0.7]\n    timeout: 1s\n    cache_entries: 0\n"
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
	c, err := Load(path)
	require.NoError(t, err)
	require.Equal(t, []string{"cdn.example.com", "*.tts.example.net", "10.0.0.7"}, c.Invite.Whisper.AllowHosts)
	require.Equal(t, time.Second, c.Invite.Whisper.Timeout)
	require.Zero(t, c.Invite.Whisper.CacheEntries, "0 turns the cache off")
}

func TestExternalHostGoesIntoTheVia(t *testing.T) {
	c := Default()
	c.Listen = "0.0.0.0:5070"
	c.ExternalHost = "transfer.example.com"
	c.Routes.Allow = []string{"sip:*@pbx.example.com"}
	require.NoError(t, c.Validate())
	require.Equal(t, "transfer.example.com", c.ViaHost())
}

// Off loopback, transfer dials only the routes it lists, unless told to
// dial any (fail closed, as ingress does with trunks).
func TestRoutesFailClosedOffLoopback(t *testing.T) {
	c := Default()
	require.NoError(t, c.Validate(), "loopback: no list needed")
	c.Listen, c.ExternalHost = "0.0.0.0:5070", "transfer.example.com"
	require.ErrorContains(t, c.Validate(), "routes.allow: empty with listen")
	c.Routes.AllowAny = true
	require.NoError(t, c.Validate())
	c.Routes = Routes{Allow: []string{"sip:*@pbx.example.com", `re:tel:\+1555[0-9]{7}`}}
	require.NoError(t, c.Validate())
	c.Peers.Networks = []string{"10.20.0.0/16", "192.0.2.7"}
	require.NoError(t, c.Validate())
	require.Equal(t, "[10.20.0.0/16 192.0.2.7/32]", fmt.Sprint(c.PeerNetworks()))
}

func TestTLSConfigs(t *testing.T) {
	c := Default()
	server, client, err := c.TLSConfigs()
	require.NoError(t, err)
	require.Nil(t, server, "TLS is off by default")
	require.Nil(t, client)

	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir)
	c.TLS = TLS{Listen: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile, CAFile: certFile}
	require.NoError(t, c.Validate())
	server, client, err = c.TLSConfigs()
	require.NoError(t, err)
	require.Len(t, server.Certificates, 1)
	require.NotNil(t, client.RootCAs, "ca_file verifies peers")
	require.False(t, client.InsecureSkipVerify)

	c.TLS.CAFile = keyFile // not a certificate
	require.ErrorContains(t, c.Validate(), "tls.ca_file:")
}

func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	return certFile, keyFile
}

// TestTrunkCredentials: a password comes from the environment or a
// secret file (one trailing newline dropped), and a missing one is an
// error that names it.
func TestTrunkCredentials(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(file, []byte("from-file\n"), 0o600))
	env := map[string]string{"TRUNK_PW": "from-env"}
	getenv := func(k string) string { return env[k] }

	c, err := (&Auth{Username: "u", Realm: "r", PasswordEnv: "TRUNK_PW"}).Credentials(getenv)
	require.NoError(t, err)
	require.Equal(t, "from-env", c.Password)
	require.Equal(t, "r", c.Realm)
	c, err = (&Auth{Username: "u", PasswordFile: file}).Credentials(getenv)
	require.NoError(t, err)
	require.Equal(t, "from-file", c.Password)
	_, err = (&Auth{Username: "u", PasswordEnv: "UNSET"}).Credentials(getenv)
	require.ErrorContains(t, err, "environment variable UNSET is empty or unset")
	_, err = (&Auth{Username: "u", PasswordFile: file + ".missing"}).Credentials(getenv)
	require.ErrorContains(t, err, "password file")

	tr := Trunk{Hosts: []string{"192.0.2.0/24", "10.0.0.1", "SBC.example.com"}}
	nets, names := tr.TrunkNetworks()
	require.Len(t, nets, 2)
	require.Equal(t, []string{"sbc.example.com"}, names)
}
