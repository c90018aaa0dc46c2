package main

import (
	"fmt"
	"strings"

	"github.com/baton-voice/baton/services/transfer/internal/config"
	"github.com/baton-voice/baton/services/transfer/internal/transfer"
)

// trunks turns the trunks and destinations of the config into transfer's,
// reading their passwords from the environment or secret files.
func trunks(cfg config.Config, getenv func(string) string) ([]transfer.Trunk, map[string]transfer.Destination, error) {
	out := make([]transfer.Trunk, 0, len(cfg.Trunks))
	for i, t := range cfg.Trunks {
		nets, hosts := t.TrunkNetworks()
		tr := transfer.Trunk{Name: t.Name, Networks: nets, Hosts: hosts, ReferRefusalTTL: t.ReferRefusalTTL}
		if t.Auth != nil {
			c, err := t.Auth.Credentials(getenv)
			if err != nil {
				return nil, nil, fmt.Errorf("trunks[%d].auth: %w", i, err)
			}
			tr.Auth = &c
		}
		out = append(out, tr)
	}
	dests := make(map[string]transfer.Destination, len(cfg.Destinations))
	for name, d := range cfg.Destinations {
		td := transfer.Destination{ReferFallback: d.ReferFallback, ReleaseBridge: d.ReleaseBridge, ReleaseDelay: d.ReleaseDelay}
		if d.Auth != nil {
			c, err := d.Auth.Credentials(getenv)
			if err != nil {
				return nil, nil, fmt.Errorf("destinations.%s.auth: %w", name, err)
			}
			td.Auth = &c
		}
		dests[strings.ToLower(name)] = td
	}
	return out, dests, nil
}
