// Package trunks identifies the trunk a request belongs to by its source
// address: each trunk has a CIDR allowlist, and the most specific prefix
// that contains the address wins. An address no trunk lists belongs to
// none; ingress drops its requests without an answer.
package trunks

import (
	"fmt"
	"net/netip"

	"github.com/baton-voice/baton/services/ingress/internal/config"
	"github.com/baton-voice/baton/services/ingress/internal/numbers"
)

// Trunk is one trunk's settings.
type Trunk struct {
	Name       string
	Region     string
	CallerFrom []numbers.Source
	CalleeFrom []numbers.Source
	// MaxCalls and MaxCPS are the trunk's own limits; 0 means none.
	MaxCalls int
	MaxCPS   int
}

type entry struct {
	prefix netip.Prefix
	trunk  *Trunk
}

// Table finds trunks by address. It is read-only after New.
type Table struct {
	entries []entry
}

// New builds the table of trunks.
func New(trunks []config.Trunk) (*Table, error) {
	t := &Table{}
	for _, c := range trunks {
		tr := &Trunk{Name: c.Name, Region: c.Region, CallerFrom: c.CallerFrom, CalleeFrom: c.CalleeFrom,
			MaxCalls: c.MaxCalls, MaxCPS: c.MaxCPS}
		for _, s := range c.Sources {
			p, err := config.Prefix(s)
			if err != nil {
				return nil, fmt.Errorf("trunk %s source %q: %w", c.Name, s, err)
			}
			t.entries = append(t.entries, entry{prefix: p, trunk: tr})
		}
	}
	return t, nil
}

// Lookup returns the trunk of addr, or nil when no trunk allows it.
func (t *Table) Lookup(addr netip.Addr) *Trunk {
	if e := t.best(addr); e != nil {
		return e.trunk
	}
	return nil
}

// Lists reports whether tr's own ranges name addr: addr's most specific
// entry is tr's and is narrower than a catch-all (0.0.0.0/0 or ::/0,
// what a config without trunks allows). It is what a destination taken
// from a caller's message must pass.
func (t *Table) Lists(tr *Trunk, addr netip.Addr) bool {
	e := t.best(addr)
	return e != nil && e.trunk == tr && e.prefix.Bits() > 0
}

func (t *Table) best(addr netip.Addr) *entry {
	addr = addr.Unmap()
	var best *entry
	for i := range t.entries {
		e := &t.entries[i]
		if e.prefix.Contains(addr) && (best == nil || e.prefix.Bits() > best.prefix.Bits()) {
			best = e
		}
	}
	return best
}
