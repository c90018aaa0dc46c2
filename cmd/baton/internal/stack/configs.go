package stack

import (
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

func (s *Stack) configPath(service string) string {
	return filepath.Join(s.opts.RunDir, "config", service+".yaml")
}

// writeConfigs writes each service's configuration for this stack; they
// are ordinary config files an operator can read and reuse.
func (s *Stack) writeConfigs() error {
	kafka := func(service string) map[string]any {
		return map[string]any{
			"brokers":   []string{s.BrokerAddr},
			"client_id": "baton-" + service,
		}
	}
	logs := map[string]any{"level": "info", "format": "json"}
	configs := map[string]map[string]any{
		"ingress": {
			"kafka":         kafka("ingress"),
			"log":           logs,
			"listen":        s.IngressAddr,
			"external_host": "127.0.0.1",
			"trunk":         "demo-sbc",
			"rtp":           map[string]any{"host": "127.0.0.1", "port_min": 31000, "port_max": 31999},
		},
		"router": {
			"kafka": kafka("router"),
			"log":   logs,
			"destinations": []map[string]any{{
				"name":        "support",
				"description": "Human support queue behind the demo SBC",
				"method":      "REFER",
				"route":       "sip:+4930123456@agents.example.com",
				"default":     true,
				"headers": map[string]string{
					"X-Customer-Id":   "{Customer-Id}",
					"X-Intent":        "{Intent}",
					"X-Language":      "{Language}",
					"X-Baton-Call-Id": "$call_id",
				},
			}},
			"rules": []map[string]any{{"name": "handoff-everyone", "handoff": "support"}},
		},
		"transfer": {
			"kafka":         kafka("transfer"),
			"log":           logs,
			"listen":        fmt.Sprintf("127.0.0.1:%d", s.opts.TransferPort),
			"external_host": "127.0.0.1",
		},
		"analytics": {
			"kafka": kafka("analytics"),
			"log":   logs,
			"clickhouse": map[string]any{
				"addr":     s.ClickHouseTCP,
				"database": s.Database,
			},
		},
	}
	for name, cfg := range configs {
		data, err := yaml.Marshal(cfg)
		if err != nil {
			return fmt.Errorf("config for %s: %w", name, err)
		}
		header := []byte("# Written by baton dev for this local stack.\n")
		if err := os.WriteFile(s.configPath(name), append(header, data...), 0o644); err != nil {
			return fmt.Errorf("config for %s: %w", name, err)
		}
	}
	return nil
}
