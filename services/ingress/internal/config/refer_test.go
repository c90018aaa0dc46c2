package config

import (
	"testing"

	"github.com/stretchr/testify/require"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
)

// TestReferDefaultRefuses: with no refer section, inbound REFERs are
// refused as before (405), and the per-call bound has its default.
func TestReferDefaultRefuses(t *testing.T) {
	c := Default()
	require.NoError(t, pkgconfig.Parse("ingress.yaml", []byte("trunk: t\n"), &c))
	require.False(t, c.Refer.Routes())
	require.Equal(t, DefaultReferMaxPerCall, c.Refer.Max())

	require.NoError(t, pkgconfig.Parse("ingress.yaml", []byte("refer: {policy: route, max_per_call: 16}\n"), &c))
	require.True(t, c.Refer.Routes())
	require.Equal(t, 16, c.Refer.Max())
}

func TestReferValidation(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"policy", "refer: {policy: accept}\n", `refer.policy: "accept", want refuse or route`},
		{"negative", "refer: {max_per_call: -1}\n", "refer.max_per_call: -1"},
		{"over", "refer: {max_per_call: 17}\n", "refer.max_per_call: 17"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			require.ErrorContains(t, pkgconfig.Parse("ingress.yaml", []byte(tc.yaml), &c), tc.want)
		})
	}
}
