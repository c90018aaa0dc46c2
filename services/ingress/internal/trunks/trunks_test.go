package trunks

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/services/ingress/internal/config"
)

func TestLookup(t *testing.T) {
	table, err := New([]config.Trunk{
		{Name: "carrier", Sources: []string{"203.0.113.0/24", "2001:db8::/32"}},
		{Name: "sbc", Sources: []string{"203.0.113.10", "192.0.2.0/25"}},
	})
	require.NoError(t, err)
	cases := map[string]string{
		"203.0.113.7":         "carrier",
		"203.0.113.10":        "sbc", // the /32 is more specific than the /24
		"::ffff:203.0.113.10": "sbc", // IPv4-mapped
		"192.0.2.1":           "sbc",
		"192.0.2.200":         "",
		"2001:db8::1":         "carrier",
		"2001:db9::1":         "",
		"198.51.100.1":        "",
	}
	for addr, want := range cases {
		got := table.Lookup(netip.MustParseAddr(addr))
		if want == "" {
			require.Nil(t, got, addr)
			continue
		}
		require.NotNil(t, got, addr)
		require.Equal(t, want, got.Name, addr)
	}
}

func TestDefaultTrunkAcceptsAny(t *testing.T) {
	cfg := config.Default()
	table, err := New(cfg.EffectiveTrunks())
	require.NoError(t, err)
	for _, a := range []string{"127.0.0.1", "198.51.100.1", "::1", "2001:db8::5"} {
		tr := table.Lookup(netip.MustParseAddr(a))
		require.NotNil(t, tr, a)
		require.Equal(t, "default", tr.Name)
	}
}
