package kafka

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// selfSigned writes a CA-signed-by-itself certificate for 127.0.0.1 and
// returns the server's tls.Config and the PEM file of the certificate.
func selfSigned(t *testing.T) (*tls.Config, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}, ca
}

// produceOne produces one record with c's client options and returns the
// error.
func produceOne(t *testing.T, c Config) error {
	t.Helper()
	cl, err := kgo.NewClient(append(ClientOpts(c, slog.New(slog.DiscardHandler)), kgo.RequestRetries(0))...)
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	return cl.ProduceSync(ctx, &kgo.Record{Topic: c.Topics.Calls, Key: []byte("k"), Value: []byte("v")}).FirstErr()
}

// A broker behind TLS and SCRAM-SHA-256 (kfake over TCP) takes records
// from a client configured with the CA and the password from the
// environment; a wrong password, or no TLS, gets nothing through.
func TestTLSAndSCRAM(t *testing.T) {
	serverTLS, ca := selfSigned(t)
	topics := DefaultConfig().Topics
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(serverTLS), kfake.EnableSASL(),
		kfake.Superuser(SASLScramSHA256, "baton", "right-password"), kfake.SeedTopics(1, topics.All()...))
	require.NoError(t, err)
	defer cluster.Close()

	c := DefaultConfig()
	c.Brokers = cluster.ListenAddrs()
	c.TLS = TLS{Enabled: true, CAFile: ca}
	c.SASL = SASL{Mechanism: SASLScramSHA256, Username: "baton", PasswordEnv: "BATON_TEST_KAFKA_PASSWORD"}

	t.Setenv("BATON_TEST_KAFKA_PASSWORD", "right-password")
	require.NoError(t, c.Validate())
	require.NoError(t, produceOne(t, c), "TLS + SCRAM with the right password")

	t.Setenv("BATON_TEST_KAFKA_PASSWORD", "wrong-password")
	require.Error(t, produceOne(t, c), "a wrong password is refused")

	t.Setenv("BATON_TEST_KAFKA_PASSWORD", "right-password")
	plainText := c
	plainText.TLS = TLS{}
	require.Error(t, produceOne(t, plainText), "no TLS against a TLS listener")

	otherCA := c
	_, otherCA.TLS.CAFile = selfSigned(t)
	require.Error(t, produceOne(t, otherCA), "a broker certificate from another CA is not trusted")
}

func TestSecurityValidation(t *testing.T) {
	t.Setenv("BATON_TEST_KAFKA_PASSWORD", "")
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"unknown mechanism", func(c *Config) { c.SASL = SASL{Mechanism: "GSSAPI", Username: "u", PasswordEnv: "P"} }, `kafka.sasl.mechanism: "GSSAPI"`},
		{"no username", func(c *Config) { c.SASL = SASL{Mechanism: SASLScramSHA512, PasswordEnv: "P"} }, "kafka.sasl.username: required"},
		{"no password env", func(c *Config) { c.SASL = SASL{Mechanism: SASLScramSHA512, Username: "u"} }, "kafka.sasl.password_env: required"},
		{"password unset", func(c *Config) {
			c.SASL = SASL{Mechanism: SASLScramSHA512, Username: "u", PasswordEnv: "BATON_TEST_KAFKA_PASSWORD"}
		}, "BATON_TEST_KAFKA_PASSWORD is unset"},
		{"plain without tls", func(c *Config) { c.SASL = SASL{Mechanism: SASLPlain, Username: "u", PasswordEnv: "HOME"} }, "PLAIN sends the password in clear"},
		{"username without mechanism", func(c *Config) { c.SASL = SASL{Username: "u"} }, "kafka.sasl.mechanism: required"},
		{"ca missing", func(c *Config) { c.TLS = TLS{Enabled: true, CAFile: "/nonexistent.pem"} }, "kafka.tls.ca_file:"},
		{"cert without key", func(c *Config) { c.TLS = TLS{Enabled: true, CertFile: "/x.pem"} }, "cert_file and key_file go together"},
		{"files while disabled", func(c *Config) { c.TLS = TLS{CAFile: "/x.pem"} }, "enabled is false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			require.ErrorContains(t, c.Validate(), tc.want)
		})
	}
}
