package stack

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"gopkg.in/yaml.v3"
)

func (s *Stack) configPath(service string) string {
	return filepath.Join(s.opts.RunDir, "config", service+".yaml")
}

// rtpPortMin and rtpPortMax bound ingress's RTP ports: 5000 calls (one
// even port each), below the kernel's ephemeral range, so calls held while
// a stage restarts under load do not run out of ports.
const rtpPortMin, rtpPortMax = 20000, 29999

// sessionTimeout lets a group hand a killed member's partitions to the
// others quickly (kfake's floor is 6 s).
const sessionTimeout = "6s"

// writeConfigs writes each service instance's configuration for this
// stack; they are ordinary config files an operator can read and reuse.
func (s *Stack) writeConfigs() error {
	kafka := func(service string) map[string]any {
		return map[string]any{
			"brokers":         []string{s.BrokerAddr},
			"client_id":       "baton-" + service,
			"session_timeout": sessionTimeout,
		}
	}
	logs := map[string]any{"level": "info", "format": "json"}
	configs := map[string]map[string]any{
		"ingress": {
			"kafka": kafka("ingress"),
			"log":   logs,
			// UDP and TCP on one port, as SBCs expect (RFC 3261 18).
			"listeners": []map[string]any{
				{"transport": "udp", "address": s.IngressAddr},
				{"transport": "tcp", "address": s.IngressAddr},
			},
			"external_host": s.opts.SIPHost,
			"trunk":         "demo-sbc",
			"rtp":           map[string]any{"host": s.opts.SIPHost, "port_min": rtpPortMin, "port_max": rtpPortMax},
			"limits":        map[string]any{"max_calls": (rtpPortMax - rtpPortMin + 1) / 2},
			// Off loopback (the loss tests put SIPp in another network
			// namespace) ingress refuses to start without trunks unless
			// told that any source is meant; this local stack means it.
			"allow_any_source": !isLoopback(s.opts.SIPHost),
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
			"external_host": s.opts.SIPHost,
			// Transfer dials only what the router's destinations name.
			"routes": map[string]any{"allow": []string{"sip:*@agents.example.com"}},
		},
		"analytics": {
			"kafka": kafka("analytics"),
			"log":   logs,
			"clickhouse": map[string]any{
				"addr":     s.ClickHouseTCP,
				"database": s.Database,
			},
			// The recent-handoffs table shows these X- headers of each call.
			"http": map[string]any{"listen": s.DashboardAddr, "context": []string{"Customer-Id", "Intent", "Language"}},
		},
	}
	if s.opts.AgentURL != "" {
		// The agent in each call decides when it is handed off.
		delete(configs["router"], "rules")
		configs["ingress"]["agents"] = []map[string]any{{
			"name": "demo-agent", "url": s.opts.AgentURL, "default": true,
			"on_agent_failure": map[string]any{"action": "handoff", "destination": "support"},
		}}
	}
	if d := s.opts.Demo; d != nil {
		// The demo's destinations and rules (demoroutes.go); transfer may
		// dial its SIPp destinations too.
		for k, v := range demoRouter(*d) {
			configs["router"][k] = v
		}
		configs["transfer"]["routes"] = map[string]any{"allow": []string{
			"sip:*@agents.example.com", "sip:*@" + d.BusyAddr, "sip:*@" + d.AnswerAddr,
		}}
	}
	if s.opts.OutboundTarget != "" {
		s.outboundConfigs(configs)
	}
	for _, inst := range s.instances() {
		cfg := map[string]any{}
		for k, v := range configs[inst.service] {
			cfg[k] = v
		}
		// /metrics, /healthz and /readyz on a free port per instance;
		// analytics serves them on its dashboard's listener.
		if inst.service != "analytics" {
			p, err := freePort()
			if err != nil {
				return fmt.Errorf("metrics port for %s: %w", inst.name, err)
			}
			addr := fmt.Sprintf("127.0.0.1:%d", p)
			cfg["metrics"] = map[string]any{"listen": addr}
			s.progress("%s metrics on http://%s/metrics", inst.name, addr)
		}
		if s.opts.StaticMembership && inst.service != "ingress" {
			// A fresh section: instances of a service share the other.
			k := kafka(inst.service)
			k["instance_id"] = "baton-" + inst.name
			cfg["kafka"] = k
		}
		switch inst.service {
		case "router":
			cfg["transactional_id"] = "baton-" + inst.name
			if s.opts.APIToken != "" {
				p, err := freePort()
				if err != nil {
					return fmt.Errorf("api port for %s: %w", inst.name, err)
				}
				addr := fmt.Sprintf("127.0.0.1:%d", p)
				cfg["api"] = map[string]any{"listen": addr, "tokens_env": apiTokensEnv}
				if len(s.RouterAPIs) == 0 {
					s.RouterAPI = "http://" + addr
				}
				s.RouterAPIs = append(s.RouterAPIs, "http://"+addr)
				s.progress("%s agent API on http://%s", inst.name, addr)
			}
		case "analytics":
			if inst.index > 1 {
				cfg["http"] = map[string]any{"listen": ""} // one dashboard is enough
			} else {
				s.progress("%s metrics on http://%s/metrics", inst.name, s.DashboardAddr)
			}
		case "transfer":
			port := s.opts.TransferPort
			if inst.index > 1 {
				p, err := freePort()
				if err != nil {
					return fmt.Errorf("port for %s: %w", inst.name, err)
				}
				port = p
			}
			cfg["listen"] = net.JoinHostPort(s.opts.SIPHost, strconv.Itoa(port))
		}
		name := inst.name
		if s.opts.Configure != nil {
			s.opts.Configure(name, cfg)
		}
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

// apiTokensEnv holds the agent API's token in the routers' environment.
const apiTokensEnv = "BATON_API_TOKENS"

// isLoopback reports whether host is a loopback IP address.
func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// outboundConfigs adds the outbound trunk of Options.OutboundTarget.
func (s *Stack) outboundConfigs(configs map[string]map[string]any) {
	host := s.opts.SIPHost
	if host == "" {
		host = "127.0.0.1"
	}
	configs["ingress"]["trunks"] = []map[string]any{{"name": "demo-sbc", "sources": []string{host}}}
	configs["ingress"]["outbound"] = map[string]any{"trunks": []map[string]any{{
		"name": "demo-sbc", "target": s.opts.OutboundTarget, "domain": "carrier.example", "max_calls": 2,
	}}}
	configs["router"]["outbound"] = map[string]any{"trunks": []map[string]any{{
		"name": "demo-sbc", "allow": []string{"+1555*"}, "deny_numbers": []string{"+1555900"},
		"caller_ids":     []string{"+15550001111"},
		"headers":        map[string]string{"X-Campaign": "{campaign}", "X-Baton-Call": "baton-$call_id"},
		"answer_timeout": "10s", "max_calls_per_second": 10,
	}}}
}
