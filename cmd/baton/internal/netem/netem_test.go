package netem

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLossRules(t *testing.T) {
	rules, err := lossRules("btlabcdefp", 20, []int{5070, 5060, 5070})
	require.NoError(t, err)
	// Both directions, on the namespace's end of the pair, the ports once
	// each, a counter before the drop so the seen count includes it.
	for _, want := range []string{
		"table netdev netem_loss {",
		`type filter hook ingress device "btlabcdefp" priority 0; policy accept;`,
		`udp dport { 5060, 5070 } counter comment "in_seen"`,
		`udp dport { 5060, 5070 } numgen random mod 100 < 20 counter drop comment "in_dropped"`,
		`type filter hook egress device "btlabcdefp" priority 0; policy accept;`,
		`udp sport { 5060, 5070 } counter comment "out_seen"`,
		`udp sport { 5060, 5070 } numgen random mod 100 < 20 counter drop comment "out_dropped"`,
	} {
		require.Contains(t, rules, want)
	}
	require.Less(t, strings.Index(rules, `"in_seen"`), strings.Index(rules, `"in_dropped"`))

	for _, bad := range []struct {
		percent int
		ports   []int
	}{{-1, []int{1}}, {101, []int{1}}, {20, nil}, {20, []int{0}}, {20, []int{65536}}} {
		_, err := lossRules("d", bad.percent, bad.ports)
		require.Error(t, err, "%d%% %v", bad.percent, bad.ports)
	}
}

// An `nft -j list table netdev netem_loss` of the rules above, trimmed.
const listed = `{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
 {"table": {"family": "netdev", "name": "netem_loss", "handle": 1}},
 {"chain": {"family": "netdev", "table": "netem_loss", "name": "in", "handle": 1, "type": "filter", "hook": "ingress", "prio": 0, "policy": "accept"}},
 {"rule": {"family": "netdev", "table": "netem_loss", "chain": "in", "handle": 3, "comment": "in_seen", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 5999}}, {"counter": {"packets": 1000, "bytes": 142000}}]}},
 {"rule": {"family": "netdev", "table": "netem_loss", "chain": "in", "handle": 4, "comment": "in_dropped", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 5999}}, {"match": {"op": "<", "left": {"numgen": {"mode": "random", "mod": 100, "offset": 0}}, "right": 20}}, {"counter": {"packets": 205, "bytes": 29110}}, {"drop": null}]}},
 {"rule": {"family": "netdev", "table": "netem_loss", "chain": "out", "handle": 5, "comment": "out_seen", "expr": [{"counter": {"packets": 795, "bytes": 1}}]}},
 {"rule": {"family": "netdev", "table": "netem_loss", "chain": "out", "handle": 6, "comment": "out_dropped", "expr": [{"counter": {"packets": 155, "bytes": 1}}, {"drop": null}]}}]}`

func TestParseCounters(t *testing.T) {
	c, err := parseCounters([]byte(listed))
	require.NoError(t, err)
	require.Equal(t, Counters{InSeen: 1000, InDropped: 205, OutSeen: 795, OutDropped: 155}, c)
	require.EqualValues(t, 1795, c.Seen())
	require.EqualValues(t, 360, c.Dropped())
	require.InDelta(t, 0.205, c.InRate(), 1e-9)
	require.InDelta(t, 155.0/795, c.OutRate(), 1e-9)
	require.InDelta(t, 360.0/1795, c.Rate(), 1e-9)
	require.Contains(t, c.String(), "360 of 1795 packets dropped (20.1%)")

	// A table without the counters (someone else's, or rules not set) is an
	// error, not zero loss.
	_, err = parseCounters([]byte(`{"nftables": [{"table": {"family": "netdev", "name": "netem_loss"}}]}`))
	require.ErrorContains(t, err, "no counter in_seen")
	_, err = parseCounters([]byte(`not json`))
	require.Error(t, err)
	require.Zero(t, Counters{}.Rate())
}

func TestPickSubnet(t *testing.T) {
	pool := netip.MustParsePrefix("10.213.0.0/16")
	p, err := pickSubnet(pool, nil, 5)
	require.NoError(t, err)
	require.Equal(t, "10.213.0.20/30", p.String())

	// Taken prefixes are skipped, whether the same /30, a wider route or a
	// single address inside.
	taken := []netip.Prefix{
		netip.MustParsePrefix("10.213.0.20/30"),
		netip.MustParsePrefix("10.213.0.24/29"),
		netip.MustParsePrefix("10.213.0.33/32"),
	}
	p, err = pickSubnet(pool, taken, 5)
	require.NoError(t, err)
	require.Equal(t, "10.213.0.36/30", p.String())

	// The search wraps around the pool.
	p, err = pickSubnet(pool, nil, 1<<14+1)
	require.NoError(t, err)
	require.Equal(t, "10.213.0.4/30", p.String())

	// A pool entirely in use has nothing to give.
	_, err = pickSubnet(netip.MustParsePrefix("10.213.0.0/29"), []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, 0)
	require.ErrorContains(t, err, "no free /30")
	_, err = pickSubnet(netip.MustParsePrefix("2001:db8::/64"), nil, 0)
	require.Error(t, err)
}

func TestParseTaken(t *testing.T) {
	addrs := `[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
	 {"ifname":"eth0","addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24}]}]`
	routes := `[{"dst":"default","gateway":"192.0.2.1"},{"dst":"10.213.4.0/30"},{"type":"local","dst":"192.0.2.2"}]`
	got, err := parseTaken([]byte(addrs), []byte(routes))
	require.NoError(t, err)
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	require.Equal(t, []string{"127.0.0.0/8", "192.0.2.0/24", "10.213.4.0/30", "192.0.2.2/32"}, s)
	_, err = parseTaken([]byte(`{`), []byte(routes))
	require.Error(t, err)
}
