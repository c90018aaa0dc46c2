// Package netem gives tests a lossy network path on one machine: a network
// namespace joined to the root namespace by a veth pair, with a private /30
// between the two ends, and nftables rules in the namespace that drop a
// share of the UDP packets crossing the pair, in both directions, counting
// what they saw and what they dropped.
//
// The rules hook the namespace's end of the pair (netdev family, ingress
// and egress hooks) rather than an inet output chain: a packet dropped in
// the output hook fails the sender's sendto with EPERM (SIPp then ends the
// call as "cannot send"), while a packet dropped at the device is lost the
// way a network loses it, silently. Everything lives in the namespace, so
// deleting it removes the pair and the rules; traffic on the root
// namespace's loopback (Kafka, ClickHouse) is never touched.
//
// It needs root, ip (iproute2) and nft.
package netem

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// Pool is the private range links take their /30 from.
const Pool = "10.213.0.0/16"

// table is the nftables table (netdev family) the loss rules live in.
const table = "netem_loss"

// maxDevName is IFNAMSIZ less the terminating NUL.
const maxDevName = 15

// Link is a namespace joined to the root namespace by a veth pair.
type Link struct {
	// Namespace is the network namespace's name (ip netns).
	Namespace string
	// HostDev is the pair's end in the root namespace, PeerDev the end in
	// Namespace.
	HostDev, PeerDev string
	// Prefix is the /30 of the pair; HostIP and PeerIP are its two hosts.
	Prefix         netip.Prefix
	HostIP, PeerIP netip.Addr
}

// Create makes a namespace named prefix plus a random suffix, a veth pair
// into it and the addresses of a free /30 of Pool on both ends, all up. On
// error whatever was made is deleted again; on success Close deletes it.
func Create(ctx context.Context, prefix string) (_ *Link, err error) {
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("netem needs %s: %w", tool, err)
		}
	}
	var raw [7]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("random link name: %w", err)
	}
	id := hex.EncodeToString(raw[:3])
	dev := strings.ReplaceAll(prefix, "-", "") + id
	if len(dev)+1 > maxDevName {
		return nil, fmt.Errorf("prefix %q too long for an interface name", prefix)
	}
	taken, err := takenPrefixes(ctx)
	if err != nil {
		return nil, err
	}
	subnet, err := pickSubnet(netip.MustParsePrefix(Pool), taken, binary.BigEndian.Uint32(raw[3:]))
	if err != nil {
		return nil, err
	}
	host := subnet.Addr().Next()
	l := &Link{
		Namespace: prefix + id, HostDev: dev + "h", PeerDev: dev + "p",
		Prefix: subnet, HostIP: host, PeerIP: host.Next(),
	}
	if err := run(ctx, nil, "ip", "netns", "add", l.Namespace); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close(context.WithoutCancel(ctx)))
		}
	}()
	hostAddr := netip.PrefixFrom(l.HostIP, subnet.Bits()).String()
	peerAddr := netip.PrefixFrom(l.PeerIP, subnet.Bits()).String()
	for _, args := range [][]string{
		{"link", "add", l.HostDev, "type", "veth", "peer", "name", l.PeerDev, "netns", l.Namespace},
		{"addr", "add", hostAddr, "dev", l.HostDev},
		{"link", "set", l.HostDev, "up"},
		{"-n", l.Namespace, "addr", "add", peerAddr, "dev", l.PeerDev},
		{"-n", l.Namespace, "link", "set", l.PeerDev, "up"},
		{"-n", l.Namespace, "link", "set", "lo", "up"},
	} {
		if err := run(ctx, nil, "ip", args...); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Close deletes the namespace, and with it the veth pair and the rules.
// Processes still running inside keep it alive until they exit.
func (l *Link) Close(ctx context.Context) error {
	return run(ctx, nil, "ip", "netns", "delete", l.Namespace)
}

// Command runs name with args inside the namespace (ip netns exec, which
// execs name in place: the command's process is name itself).
func (l *Link) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.Namespace, name}, args...)...)
}

// SetLoss drops percent of the UDP packets to or from ports of the
// namespace's side, independently in each direction (numgen random), and
// counts every such packet; other traffic passes. Calling it again
// replaces the rules and resets the counters.
func (l *Link) SetLoss(ctx context.Context, percent int, ports ...int) error {
	rules, err := lossRules(l.PeerDev, percent, ports)
	if err != nil {
		return err
	}
	// Adding the table first makes the delete succeed on the first call.
	script := fmt.Sprintf("add table netdev %s\ndelete table netdev %s\n%s", table, table, rules)
	if err := run(ctx, strings.NewReader(script), "ip", "netns", "exec", l.Namespace, "nft", "-f", "-"); err != nil {
		return fmt.Errorf("set %d%% loss in %s: %w", percent, l.Namespace, err)
	}
	return nil
}

// Counters reads the loss rules' counters.
func (l *Link) Counters(ctx context.Context) (Counters, error) {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.Namespace, "nft", "-j", "list", "table", "netdev", table)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Counters{}, fmt.Errorf("read loss counters in %s: %w: %s", l.Namespace, err, strings.TrimSpace(stderr.String()))
	}
	return parseCounters(out)
}

// Counters are the packets the loss rules saw and dropped. In is towards
// the namespace, Out is leaving it.
type Counters struct {
	InSeen, InDropped, OutSeen, OutDropped uint64
}

// Seen is every packet the rules looked at.
func (c Counters) Seen() uint64 { return c.InSeen + c.OutSeen }

// Dropped is every packet the rules dropped.
func (c Counters) Dropped() uint64 { return c.InDropped + c.OutDropped }

// Rate is the measured share of packets dropped (0 when none were seen).
func (c Counters) Rate() float64 { return ratio(c.Dropped(), c.Seen()) }

// InRate and OutRate are the measured loss of each direction.
func (c Counters) InRate() float64  { return ratio(c.InDropped, c.InSeen) }
func (c Counters) OutRate() float64 { return ratio(c.OutDropped, c.OutSeen) }

func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func (c Counters) String() string {
	return fmt.Sprintf("%d of %d packets dropped (%.1f%%): in %d of %d (%.1f%%), out %d of %d (%.1f%%)",
		c.Dropped(), c.Seen(), 100*c.Rate(), c.InDropped, c.InSeen, 100*c.InRate(),
		c.OutDropped, c.OutSeen, 100*c.OutRate())
}

// Rule comments name the counters.
const (
	inSeen     = "in_seen"
	inDropped  = "in_dropped"
	outSeen    = "out_seen"
	outDropped = "out_dropped"
)

// lossRules renders the table for dev.
func lossRules(dev string, percent int, ports []int) (string, error) {
	if percent < 0 || percent > 100 {
		return "", fmt.Errorf("loss %d%%: want 0 to 100", percent)
	}
	if len(ports) == 0 {
		return "", errors.New("loss rules need at least one UDP port")
	}
	set := make([]string, 0, len(ports))
	for _, p := range ports {
		if p < 1 || p > 65535 {
			return "", fmt.Errorf("port %d out of range", p)
		}
		set = append(set, strconv.Itoa(p))
	}
	slices.Sort(set)
	ps := "{ " + strings.Join(slices.Compact(set), ", ") + " }"
	var b strings.Builder
	fmt.Fprintf(&b, "table netdev %s {\n", table)
	for _, c := range []struct{ name, hook, field, seen, dropped string }{
		{"in", "ingress", "dport", inSeen, inDropped},
		{"out", "egress", "sport", outSeen, outDropped},
	} {
		fmt.Fprintf(&b, "\tchain %s {\n", c.name)
		fmt.Fprintf(&b, "\t\ttype filter hook %s device %q priority 0; policy accept;\n", c.hook, dev)
		fmt.Fprintf(&b, "\t\tudp %s %s counter comment %q\n", c.field, ps, c.seen)
		fmt.Fprintf(&b, "\t\tudp %s %s numgen random mod 100 < %d counter drop comment %q\n", c.field, ps, percent, c.dropped)
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String(), nil
}

// parseCounters reads the packet counters of the commented rules out of
// `nft -j list table`.
func parseCounters(data []byte) (Counters, error) {
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Comment string            `json:"comment"`
				Expr    []json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return Counters{}, fmt.Errorf("parse nft counters: %w", err)
	}
	var c Counters
	found := map[string]bool{}
	for _, item := range doc.Nftables {
		if item.Rule == nil {
			continue
		}
		var dst *uint64
		switch item.Rule.Comment {
		case inSeen:
			dst = &c.InSeen
		case inDropped:
			dst = &c.InDropped
		case outSeen:
			dst = &c.OutSeen
		case outDropped:
			dst = &c.OutDropped
		default:
			continue
		}
		for _, raw := range item.Rule.Expr {
			var e struct {
				Counter *struct {
					Packets uint64 `json:"packets"`
				} `json:"counter"`
			}
			if err := json.Unmarshal(raw, &e); err != nil {
				return Counters{}, fmt.Errorf("parse nft rule %s: %w", item.Rule.Comment, err)
			}
			if e.Counter != nil {
				*dst = e.Counter.Packets
				found[item.Rule.Comment] = true
			}
		}
	}
	for _, name := range []string{inSeen, inDropped, outSeen, outDropped} {
		if !found[name] {
			return Counters{}, fmt.Errorf("nft table %s has no counter %s", table, name)
		}
	}
	return c, nil
}

// pickSubnet returns a /30 of pool that overlaps none of taken, starting
// the search at the /30 numbered start (mod the pool's size).
func pickSubnet(pool netip.Prefix, taken []netip.Prefix, start uint32) (netip.Prefix, error) {
	if !pool.Addr().Is4() || pool.Bits() > 30 {
		return netip.Prefix{}, fmt.Errorf("pool %s: want an IPv4 prefix of /30 or wider", pool)
	}
	n := uint32(1) << (30 - pool.Bits())
	base := binary.BigEndian.Uint32(pool.Masked().Addr().AsSlice())
	for i := range n {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], base+((start+i)%n)*4)
		p := netip.PrefixFrom(netip.AddrFrom4(a), 30)
		if !slices.ContainsFunc(taken, p.Overlaps) {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /30 left in %s", pool)
}

// takenPrefixes lists the IPv4 prefixes of the root namespace's addresses
// and routes, so a new link does not shadow one.
func takenPrefixes(ctx context.Context) ([]netip.Prefix, error) {
	addrs, err := output(ctx, "ip", "-j", "-4", "addr", "show")
	if err != nil {
		return nil, err
	}
	routes, err := output(ctx, "ip", "-j", "-4", "route", "show", "table", "all")
	if err != nil {
		return nil, err
	}
	return parseTaken(addrs, routes)
}

func parseTaken(addrs, routes []byte) ([]netip.Prefix, error) {
	var ifs []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(addrs, &ifs); err != nil {
		return nil, fmt.Errorf("parse ip addr: %w", err)
	}
	var out []netip.Prefix
	for _, i := range ifs {
		for _, a := range i.AddrInfo {
			if addr, err := netip.ParseAddr(a.Local); err == nil {
				out = append(out, netip.PrefixFrom(addr, a.PrefixLen).Masked())
			}
		}
	}
	var rs []struct {
		Dst string `json:"dst"`
	}
	if err := json.Unmarshal(routes, &rs); err != nil {
		return nil, fmt.Errorf("parse ip route: %w", err)
	}
	for _, r := range rs {
		// "default" covers everything and is not a subnet to avoid.
		if p, err := netip.ParsePrefix(r.Dst); err == nil {
			out = append(out, p.Masked())
		} else if a, err := netip.ParseAddr(r.Dst); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out, nil
}

func run(ctx context.Context, stdin *strings.Reader, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func output(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
