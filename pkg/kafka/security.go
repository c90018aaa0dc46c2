package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/baton-voice/baton/pkg/config"
)

// TLS is how a client reaches brokers over TLS.
type TLS struct {
	// Enabled turns TLS on; the system roots verify the brokers unless
	// CAFile names others.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the CAs that sign the brokers'
	// certificates.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate (mutual TLS).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name verified in the brokers' certificates.
	ServerName string `yaml:"server_name"`
}

// SASL mechanisms Baton's clients speak.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// SASL is how a client authenticates to the brokers.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty means no
	// SASL.
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	// PasswordEnv names the environment variable that holds the password
	// (never the file). It is read at each connection, so a rotated
	// secret takes effect on the next one.
	PasswordEnv string `yaml:"password_env"`
}

// validateSecurity checks the TLS files and the SASL settings.
func (c Config) validateSecurity() []error {
	var errs []error
	if c.TLS.Enabled {
		if _, err := c.TLS.config(); err != nil {
			errs = append(errs, err)
		}
	} else if c.TLS.CAFile != "" || c.TLS.CertFile != "" || c.TLS.KeyFile != "" || c.TLS.ServerName != "" {
		errs = append(errs, config.Errorf("kafka.tls", "files or server_name set but enabled is false"))
	}
	switch c.SASL.Mechanism {
	case "":
		if c.SASL.Username != "" || c.SASL.PasswordEnv != "" {
			errs = append(errs, config.Errorf("kafka.sasl.mechanism", "required when username or password_env is set"))
		}
		return errs
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
	default:
		errs = append(errs, config.Errorf("kafka.sasl.mechanism", "%q, want %s, %s or %s", c.SASL.Mechanism, SASLPlain, SASLScramSHA256, SASLScramSHA512))
	}
	if c.SASL.Username == "" {
		errs = append(errs, config.Errorf("kafka.sasl.username", "required with a mechanism"))
	}
	if c.SASL.PasswordEnv == "" {
		errs = append(errs, config.Errorf("kafka.sasl.password_env", "required with a mechanism (the password never lives in the file)"))
	} else if os.Getenv(c.SASL.PasswordEnv) == "" {
		errs = append(errs, config.Errorf("kafka.sasl.password_env", "%s is unset or empty", c.SASL.PasswordEnv))
	}
	if c.SASL.Mechanism == SASLPlain && !c.TLS.Enabled {
		errs = append(errs, config.Errorf("kafka.sasl.mechanism", "PLAIN sends the password in clear; enable kafka.tls"))
	}
	return errs
}

// config builds the client's tls.Config from the files.
func (t TLS) config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, config.Errorf("kafka.tls.ca_file", "%v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, config.Errorf("kafka.tls.ca_file", "%s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, config.Errorf("kafka.tls.cert_file", "cert_file and key_file go together")
	}
	if t.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, config.Errorf("kafka.tls.cert_file", "%v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// securityOpts are the TLS and SASL options of c. The files were checked
// by Validate; if one went bad since, every connection fails its
// handshake with the reason instead of going out in clear.
func (c Config) securityOpts() []kgo.Opt {
	var opts []kgo.Opt
	if c.TLS.Enabled {
		cfg, err := c.TLS.config()
		if err != nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12, VerifyConnection: func(tls.ConnectionState) error { return err }}
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	if m := c.SASL.mechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts
}

// mechanism is the SASL mechanism, reading the password at each
// connection; nil without SASL.
func (s SASL) mechanism() sasl.Mechanism {
	password := func() (string, error) {
		p := os.Getenv(s.PasswordEnv)
		if p == "" {
			return "", fmt.Errorf("kafka sasl: %s is unset or empty", s.PasswordEnv)
		}
		return p, nil
	}
	scramAuth := func(context.Context) (scram.Auth, error) {
		p, err := password()
		return scram.Auth{User: s.Username, Pass: p}, err
	}
	switch strings.ToUpper(s.Mechanism) {
	case SASLPlain:
		return plain.Plain(func(context.Context) (plain.Auth, error) {
			p, err := password()
			return plain.Auth{User: s.Username, Pass: p}, err
		})
	case SASLScramSHA256:
		return scram.Sha256(scramAuth)
	case SASLScramSHA512:
		return scram.Sha512(scramAuth)
	}
	return nil
}
