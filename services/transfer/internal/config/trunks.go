package config

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/services/transfer/internal/sipauth"
)

// Trunk is an SBC or carrier transfer sends requests to, recognised by
// the address a request goes to: the caller's SBC (REFER, BYE, re-INVITE
// in the caller's dialog) or the trunk a new leg is dialled through.
type Trunk struct {
	// Name names the trunk in logs, metrics and ReferRefusalLearned.
	Name string `yaml:"name"`
	// Hosts are IP addresses, CIDRs or host names of the trunk's next
	// hops.
	Hosts []string `yaml:"hosts"`
	// Auth answers the trunk's digest challenges (401/407).
	Auth *Auth `yaml:"auth"`
	// ReferRefusalTTL is how long a REFER refused by this trunk (405,
	// 501, 603) is remembered, so handoffs whose destination has a
	// refer_fallback go straight to it; 0 (the default) learns nothing.
	// At most attempt_log.retention, where it is kept.
	ReferRefusalTTL time.Duration `yaml:"refer_refusal_ttl"`
}

// Destination is transfer's own settings of one router destination.
type Destination struct {
	// ReferFallback is what a REFER to this destination falls back to when
	// it is refused (405, 501, 603) or its NOTIFY reports a failure:
	// "invite" (a warm transfer to the same route), "bye" (hand the call
	// back to the SBC with the command's headers) or empty (none).
	ReferFallback string `yaml:"refer_fallback"`
	// Auth answers the challenges of a new leg's INVITE to this
	// destination (before the trunk's).
	Auth *Auth `yaml:"auth"`
	// ReleaseBridge, "replaces", makes a warm transfer to this
	// destination leave the media path once bridged: after ReleaseDelay
	// (the whisper heard, the human greeted), Baton sends the caller's
	// side a REFER with Replaces (RFC 3891) naming its dialog with the
	// destination. Empty (the default) keeps the bridge until the call
	// ends.
	ReleaseBridge string `yaml:"release_bridge"`
	// ReleaseDelay is how long after BRIDGED the REFER is sent.
	ReleaseDelay time.Duration `yaml:"release_delay"`
}

// ReleaseBridge values.
const ReleaseReplaces = "replaces"

// Auth is a digest credential. The password is never in the file: it is
// read from the environment variable PasswordEnv or the file
// PasswordFile (a mounted secret; one trailing newline is dropped).
type Auth struct {
	Username     string `yaml:"username"`
	Realm        string `yaml:"realm"`
	PasswordEnv  string `yaml:"password_env"`
	PasswordFile string `yaml:"password_file"`
}

// Credentials reads the password.
func (a *Auth) Credentials(getenv func(string) string) (sipauth.Credentials, error) {
	var pw string
	switch {
	case a.PasswordEnv != "":
		pw = getenv(a.PasswordEnv)
		if pw == "" {
			return sipauth.Credentials{}, fmt.Errorf("environment variable %s is empty or unset", a.PasswordEnv)
		}
	case a.PasswordFile != "":
		b, err := os.ReadFile(a.PasswordFile)
		if err != nil {
			return sipauth.Credentials{}, fmt.Errorf("password file: %w", err)
		}
		pw = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if pw == "" {
			return sipauth.Credentials{}, fmt.Errorf("password file %s is empty", a.PasswordFile)
		}
	}
	return sipauth.Credentials{Username: a.Username, Realm: a.Realm, Password: pw}, nil
}

func (a *Auth) validate(field string) []error {
	if a == nil {
		return nil
	}
	var errs []error
	if strings.TrimSpace(a.Username) == "" || strings.ContainsAny(a.Username, "\"\\\r\n\x00") {
		errs = append(errs, pkgconfig.Errorf(field+".username", "required, without quotes, backslashes or control characters"))
	}
	if strings.ContainsAny(a.Realm, "\"\\\r\n\x00") {
		errs = append(errs, pkgconfig.Errorf(field+".realm", "must not contain quotes, backslashes or control characters"))
	}
	if (a.PasswordEnv == "") == (a.PasswordFile == "") {
		errs = append(errs, pkgconfig.Errorf(field, "set exactly one of password_env and password_file (never the password itself)"))
	}
	return errs
}

// TrunkNetworks splits a trunk's hosts into networks and host names
// (validated at load).
func (t *Trunk) TrunkNetworks() ([]netip.Prefix, []string) {
	var nets []netip.Prefix
	var names []string
	for _, h := range t.Hosts {
		if p, err := parsePrefix(h); err == nil {
			nets = append(nets, p)
		} else {
			names = append(names, strings.ToLower(h))
		}
	}
	return nets, names
}

// ReferFallback values.
const (
	FallbackInvite = "invite"
	FallbackBye    = "bye"
)

func (c *Config) validateTrunks() []error {
	var errs []error
	names := map[string]bool{}
	for i, t := range c.Trunks {
		f := fmt.Sprintf("trunks[%d]", i)
		switch {
		case strings.TrimSpace(t.Name) == "" || strings.ContainsFunc(t.Name, isControl):
			errs = append(errs, pkgconfig.Errorf(f+".name", "required, without control characters"))
		case names[strings.ToLower(t.Name)]:
			errs = append(errs, pkgconfig.Errorf(f+".name", "%q is used twice", t.Name))
		}
		names[strings.ToLower(t.Name)] = true
		if len(t.Hosts) == 0 {
			errs = append(errs, pkgconfig.Errorf(f+".hosts", "list the trunk's addresses (IP, CIDR or host name)"))
		}
		for j, h := range t.Hosts {
			if _, err := parsePrefix(h); err != nil && !hostName.MatchString(h) {
				errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("%s.hosts[%d]", f, j), "%q, want an IP address, a CIDR or a host name", h))
			}
		}
		errs = append(errs, t.Auth.validate(f+".auth")...)
		if t.ReferRefusalTTL < 0 || t.ReferRefusalTTL > c.AttemptLog.Retention {
			errs = append(errs, pkgconfig.Errorf(f+".refer_refusal_ttl", "%v, want 0 (off) up to attempt_log.retention %v, where it is kept",
				t.ReferRefusalTTL, c.AttemptLog.Retention))
		}
	}
	for name, d := range c.Destinations {
		f := "destinations." + name
		switch d.ReferFallback {
		case "", FallbackInvite, FallbackBye:
		default:
			errs = append(errs, pkgconfig.Errorf(f+".refer_fallback", "%q, want invite, bye or empty", d.ReferFallback))
		}
		errs = append(errs, d.Auth.validate(f+".auth")...)
		switch d.ReleaseBridge {
		case "", ReleaseReplaces:
		default:
			errs = append(errs, pkgconfig.Errorf(f+".release_bridge", "%q, want replaces or empty", d.ReleaseBridge))
		}
		if d.ReleaseDelay < 0 || d.ReleaseDelay > time.Hour {
			errs = append(errs, pkgconfig.Errorf(f+".release_delay", "%v, want 0 up to 1h", d.ReleaseDelay))
		}
	}
	return errs
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
