package config

import "github.com/baton-voice/baton/pkg/config"

// Refer is what ingress does with a REFER the far end (the carrier or
// PBX) sends in a call's dialog (docs/decisions/0019).
type Refer struct {
	// Policy is refuse (the default: 405 Method Not Allowed, as before
	// it existed) or route: 202 Accepted, an InboundReferReceived for the
	// router to decide like a handoff request (allowlist, denied
	// numbers), and NOTIFYs (RFC 3515) of what came of it.
	Policy string `yaml:"policy"`
	// MaxPerCall bounds the REFERs one dialog may send under route: the
	// ones beyond it get 403 without reaching Kafka. 0 is
	// DefaultReferMaxPerCall; at most MaxReferMaxPerCall.
	MaxPerCall int `yaml:"max_per_call"`
}

// Refer policies.
const (
	ReferRefuse = "refuse"
	ReferRoute  = "route"
)

// Bounds of refer.max_per_call.
const (
	DefaultReferMaxPerCall = 3
	MaxReferMaxPerCall     = 16
)

// Routes reports whether inbound REFERs go to the router.
func (r Refer) Routes() bool { return r.Policy == ReferRoute }

// Max is refer.max_per_call, or its default.
func (r Refer) Max() int {
	if r.MaxPerCall == 0 {
		return DefaultReferMaxPerCall
	}
	return r.MaxPerCall
}

func (c Config) validateRefer() []error {
	var errs []error
	switch c.Refer.Policy {
	case "", ReferRefuse, ReferRoute:
	default:
		errs = append(errs, config.Errorf("refer.policy", "%q, want refuse or route", c.Refer.Policy))
	}
	if n := c.Refer.MaxPerCall; n < 0 || n > MaxReferMaxPerCall {
		errs = append(errs, config.Errorf("refer.max_per_call", "%d, want 0 (default %d) to %d", n, DefaultReferMaxPerCall, MaxReferMaxPerCall))
	}
	return errs
}
