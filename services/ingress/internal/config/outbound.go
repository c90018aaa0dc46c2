package config

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/baton-voice/baton/pkg/config"
)

// Outbound is how ingress places the calls agents ask for (POST /v1/calls
// on the router; OutboundCallRequested on the calls topic). The router
// decides whether a call may be placed (its outbound.trunks: allowlist,
// deny prefixes, caller ids, headers, rate); ingress decides where the
// INVITE goes and how many calls a trunk has up at once on this instance.
// No trunks (the default): ingress places nothing and joins no group.
type Outbound struct {
	// Group is the consumer group of the ingress instances that place
	// outbound calls: each request is read by the one member that holds
	// its partition, so exactly one instance places it.
	Group string `yaml:"group"`
	// MaxRequestAge refuses (FAILED, expired) a request older than this
	// when read, so a backlog read after an outage dials nobody late.
	MaxRequestAge time.Duration   `yaml:"max_request_age"`
	Trunks        []OutboundTrunk `yaml:"trunks"`
}

// OutboundTrunk is where one trunk's outbound INVITEs go.
type OutboundTrunk struct {
	// Name is the trunk's name in the router's outbound.trunks, and a
	// trunk of trunks[]: its sources must list Target's address, or its
	// answers are dropped like any stranger's.
	Name string `yaml:"name"`
	// Target is the carrier's SIP address, IP:port; every INVITE of the
	// trunk goes there (with a Route header naming it, loose routing, so
	// its CANCEL follows), whatever the Request-URI names.
	Target string `yaml:"target"`
	// Transport is udp, the only one built for outbound calls yet.
	Transport string `yaml:"transport"`
	// Domain is the host of the Request-URI, From and To of a call to a
	// number (sip:+15551234567@Domain;user=phone); empty is Target's IP.
	Domain string `yaml:"domain"`
	// MaxCalls bounds the trunk's outbound calls up or ringing at once on
	// this instance; a request beyond it fails (trunk_busy) without an
	// INVITE. 0 is no bound beyond limits.max_calls.
	MaxCalls int `yaml:"max_calls"`
}

// Defaults of outbound.
const (
	DefaultOutboundGroup         = "baton-ingress-outbound"
	DefaultOutboundMaxRequestAge = 10 * time.Second
	MaxOutboundMaxRequestAge     = 10 * time.Minute
)

// OutboundGroup is outbound.group, or its default.
func (o Outbound) OutboundGroup() string {
	if o.Group == "" {
		return DefaultOutboundGroup
	}
	return o.Group
}

// RequestAge is outbound.max_request_age, or its default.
func (o Outbound) RequestAge() time.Duration {
	if o.MaxRequestAge == 0 {
		return DefaultOutboundMaxRequestAge
	}
	return o.MaxRequestAge
}

// OutboundTrunk returns the outbound trunk named name.
func (o Outbound) OutboundTrunk(name string) (OutboundTrunk, bool) {
	for _, t := range o.Trunks {
		if t.Name == name {
			return t, true
		}
	}
	return OutboundTrunk{}, false
}

func (c Config) validateOutbound() []error {
	var errs []error
	o := c.Outbound
	if d := o.MaxRequestAge; d < 0 || d > MaxOutboundMaxRequestAge {
		errs = append(errs, config.Errorf("outbound.max_request_age", "%v: want 0 (default %v) to %v", d, DefaultOutboundMaxRequestAge, MaxOutboundMaxRequestAge))
	}
	if o.Group != "" && !trunkName.MatchString(o.Group) {
		errs = append(errs, config.Errorf("outbound.group", "%q: want letters, digits, '.', '_' or '-'", o.Group))
	}
	inbound := map[string]bool{}
	for _, t := range c.EffectiveTrunks() {
		inbound[t.Name] = true
	}
	seen := map[string]bool{}
	for i, t := range o.Trunks {
		path := fmt.Sprintf("outbound.trunks[%d]", i)
		switch {
		case !trunkName.MatchString(t.Name):
			errs = append(errs, config.Errorf(path+".name", "%q: want letters, digits, '.', '_' or '-'", t.Name))
		case seen[t.Name]:
			errs = append(errs, config.Errorf(path+".name", "%q is listed twice", t.Name))
		case !inbound[t.Name]:
			errs = append(errs, config.Errorf(path+".name", "%q is not a trunk of trunks[]: its sources must let the carrier's answers in", t.Name))
		}
		seen[t.Name] = true
		if ap, err := netip.ParseAddrPort(t.Target); err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			errs = append(errs, config.Errorf(path+".target", "%q: want the carrier's IP:port", t.Target))
		}
		if t.Transport != "" && t.Transport != UDP {
			errs = append(errs, config.Errorf(path+".transport", "%q: only udp is built for outbound calls", t.Transport))
		}
		if !validHost(t.Domain) {
			errs = append(errs, config.Errorf(path+".domain", "%q: want a host name or IP address", t.Domain))
		}
		if t.MaxCalls < 0 || t.MaxCalls > 100_000 {
			errs = append(errs, config.Errorf(path+".max_calls", "%d: want 0 (no bound) to 100000", t.MaxCalls))
		}
	}
	return errs
}
