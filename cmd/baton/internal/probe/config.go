// Package probe is `baton probe`: it reads the router's and transfer's
// configurations, sends SIP OPTIONS to every destination and trunk over
// the transport transfer would use, and reports reachability, round-trip
// time, the TLS certificate and what the far end advertises (package
// pkg/sipprobe does the SIP); with Options.Call it places a short test
// call to each destination with the headers the router renders for it.
package probe

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/baton-voice/baton/pkg/sipprobe"
)

// ErrConfig is wrapped by every error about a configuration file.
var ErrConfig = errors.New("probe config")

// Kinds of target.
const (
	KindDestination = "destination"
	KindTrunk       = "trunk"
)

// routerFile is the part of the router's configuration the probe reads.
// The router validates the whole file (router --check-config); the probe
// reads only where destinations and trunks go, leniently.
type routerFile struct {
	Destinations []struct {
		Name       string `yaml:"name"`
		Method     string `yaml:"method"`
		Route      string `yaml:"route"`
		Trunk      string `yaml:"trunk"`
		Encryption string `yaml:"encryption"`
	} `yaml:"destinations"`
	Trunks []struct {
		Name   string `yaml:"name"`
		Method string `yaml:"method"`
		Route  string `yaml:"route"`
	} `yaml:"trunks"`
}

// transferFile is the part of transfer's configuration the probe reads:
// where tel: routes and extensions go, and how TLS destinations are
// verified.
type transferFile struct {
	Invite struct {
		TrunkHost string `yaml:"trunk_host"`
	} `yaml:"invite"`
	TLS struct {
		CertFile string `yaml:"cert_file"`
		KeyFile  string `yaml:"key_file"`
		CAFile   string `yaml:"ca_file"`
	} `yaml:"tls"`
}

// Entry is one configured target: what is probed, or why it is not.
type Entry struct {
	sipprobe.Target
	// Method is the destination's method (REFER, INVITE, BYE); empty for
	// a trunk.
	Method string `json:"method,omitempty"`
	// Route is the route as configured (tel:, extension or SIP URI).
	Route string `json:"route,omitempty"`
	// Skip says why the target is not probed (a BYE destination has no
	// route of its own; a tel: route without transfer's trunk_host).
	Skip string `json:"skip,omitempty"`
}

// Plan is what the configurations say to probe, and how to verify TLS.
type Plan struct {
	Entries []Entry
	// TLS verifies TLS targets with transfer's ca_file (nil: the system
	// roots) and presents its certificate.
	TLS *tls.Config
}

// Load reads the router's configuration (required) and transfer's
// (optional: without it tel: routes and extensions are not probed and
// TLS verifies against the system roots).
func Load(routerPath, transferPath string) (Plan, error) {
	var rf routerFile
	if err := readYAML(routerPath, &rf); err != nil {
		return Plan{}, err
	}
	var tf transferFile
	if transferPath != "" {
		if err := readYAML(transferPath, &tf); err != nil {
			return Plan{}, err
		}
	}
	tlsCfg, err := tlsConfig(transferPath, tf)
	if err != nil {
		return Plan{}, err
	}
	return Plan{Entries: entries(rf, tf), TLS: tlsCfg}, nil
}

func readYAML(path string, into any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrConfig, path, err)
	}
	return nil
}

func tlsConfig(path string, tf transferFile) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if tf.TLS.CAFile != "" {
		pem, err := os.ReadFile(tf.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: tls.ca_file: %w", ErrConfig, path, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: %s: tls.ca_file %s: no PEM certificate in it", ErrConfig, path, tf.TLS.CAFile)
		}
		cfg.RootCAs = pool
	}
	if tf.TLS.CertFile != "" && tf.TLS.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(tf.TLS.CertFile, tf.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: tls.cert_file/key_file: %w", ErrConfig, path, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// entries lists the destinations in configuration order, then the trunks
// with a route of their own, then transfer's trunk_host.
func entries(rf routerFile, tf transferFile) []Entry {
	trunkOf := map[string]int{}
	for i, t := range rf.Trunks {
		trunkOf[t.Name] = i
	}
	var out []Entry
	for _, d := range rf.Destinations {
		method, route := strings.ToUpper(d.Method), d.Route
		if i, ok := trunkOf[d.Trunk]; ok {
			// A destination on a trunk takes the trunk's method and route
			// when it has none (the router's rule).
			if method == "" {
				method = strings.ToUpper(rf.Trunks[i].Method)
			}
			if route == "" {
				route = rf.Trunks[i].Route
			}
		}
		if method == "" {
			method = "REFER"
		}
		e := Entry{Target: sipprobe.Target{Name: d.Name, Kind: KindDestination}, Method: method, Route: route}
		e.URI, e.Skip = sipURI(route, tf.Invite.TrunkHost)
		if e.Skip == "" && method == "INVITE" && !strings.EqualFold(d.Encryption, "udp_rtp") {
			// Transfer signals a warm transfer's leg over TLS unless the
			// destination says udp_rtp (encryption tls_srtp, the default).
			e.Transport = sipprobe.TLS
		}
		if route == "" && method == "BYE" {
			e.Skip = "BYE hands the call back to the SBC: no route to probe"
		}
		out = append(out, e)
	}
	for _, t := range rf.Trunks {
		if t.Route == "" {
			continue
		}
		e := Entry{Target: sipprobe.Target{Name: t.Name, Kind: KindTrunk}, Method: strings.ToUpper(t.Method), Route: t.Route}
		e.URI, e.Skip = sipURI(t.Route, tf.Invite.TrunkHost)
		out = append(out, e)
	}
	if h := tf.Invite.TrunkHost; h != "" {
		out = append(out, Entry{Target: sipprobe.Target{Name: "trunk_host", Kind: KindTrunk, URI: "sip:" + h}, Route: h})
	}
	return out
}

// sipURI is the SIP URI a route is dialled at, as transfer dials it: a
// sip:/sips: URI as it is, tel:+N as sip:+N@trunkHost;user=phone, an
// extension as sip:EXT@trunkHost. skip says why there is none.
func sipURI(route, trunkHost string) (uri, skip string) {
	lower := strings.ToLower(route)
	switch {
	case route == "":
		return "", "no route"
	case strings.HasPrefix(lower, "sip:"), strings.HasPrefix(lower, "sips:"):
		return route, ""
	case trunkHost == "":
		return "", "tel: routes and extensions go through transfer's invite.trunk_host, which is not set (--transfer)"
	case strings.HasPrefix(lower, "tel:"):
		number, _, _ := strings.Cut(route[len("tel:"):], ";")
		return "sip:" + number + "@" + trunkHost + ";user=phone", ""
	default:
		return "sip:" + route + "@" + trunkHost, ""
	}
}
