package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
)

const outboundTrunks = "trunks: [{name: carrier, sources: [192.0.2.10]}]\n"

// TestOutboundValidation: every field of outbound and its bounds.
func TestOutboundValidation(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"not a trunk", "outbound: {trunks: [{name: other, target: 192.0.2.10:5060}]}\n", `outbound.trunks[0].name: "other" is not a trunk of trunks[]`},
		{"twice", "outbound: {trunks: [{name: carrier, target: 192.0.2.10:5060}, {name: carrier, target: 192.0.2.10:5060}]}\n", "outbound.trunks[1].name: \"carrier\" is listed twice"},
		{"target a name", "outbound: {trunks: [{name: carrier, target: sbc.example:5060}]}\n", "outbound.trunks[0].target:"},
		{"target without port", "outbound: {trunks: [{name: carrier, target: 192.0.2.10:0}]}\n", "outbound.trunks[0].target:"},
		{"target unspecified", "outbound: {trunks: [{name: carrier, target: 0.0.0.0:5060}]}\n", "outbound.trunks[0].target:"},
		{"tcp not built", "outbound: {trunks: [{name: carrier, target: 192.0.2.10:5060, transport: tcp}]}\n", "outbound.trunks[0].transport: \"tcp\": only udp"},
		{"domain", "outbound: {trunks: [{name: carrier, target: 192.0.2.10:5060, domain: \"a b\"}]}\n", "outbound.trunks[0].domain:"},
		{"max calls negative", "outbound: {trunks: [{name: carrier, target: 192.0.2.10:5060, max_calls: -1}]}\n", "outbound.trunks[0].max_calls:"},
		{"max calls over", "outbound: {trunks: [{name: carrier, target: 192.0.2.10:5060, max_calls: 100001}]}\n", "outbound.trunks[0].max_calls:"},
		{"request age negative", "outbound: {max_request_age: -1s}\n", "outbound.max_request_age:"},
		{"request age over", "outbound: {max_request_age: 11m}\n", "outbound.max_request_age:"},
		{"group", "outbound: {group: \"a b\"}\n", "outbound.group:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			err := pkgconfig.Parse("ingress.yaml", []byte(outboundTrunks+tc.yaml), &c)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestOutboundDefaults(t *testing.T) {
	c := Default()
	require.NoError(t, pkgconfig.Parse("ingress.yaml", []byte(outboundTrunks+
		"outbound: {max_request_age: 10m, trunks: [{name: carrier, target: 192.0.2.10:5060, max_calls: 100000}]}\n"), &c))
	require.Equal(t, DefaultOutboundGroup, c.Outbound.OutboundGroup())
	require.Equal(t, 10*time.Minute, c.Outbound.RequestAge())
	tr, ok := c.Outbound.OutboundTrunk("carrier")
	require.True(t, ok)
	require.Equal(t, 100000, tr.MaxCalls)
	_, ok = c.Outbound.OutboundTrunk("other")
	require.False(t, ok)
	require.Equal(t, DefaultOutboundMaxRequestAge, Outbound{}.RequestAge())
}
