package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/baton-voice/baton/schemas/panels"
)

// GrafanaPath is where the Grafana dashboard lives, from the repository
// root. It is generated from panels.All(), panels.sql then agent.sql
// (go test ./internal/dashboard -run TestGeneratedFilesMatchPanels -update).
const GrafanaPath = "deploy/grafana/baton-handoffs.json"

// grafanaPanel is how each panel is drawn in Grafana.
var grafanaPanel = map[string]struct {
	kind   string // Grafana panel type
	format int    // grafana-clickhouse-datasource: 0 time series, 1 table
	w, h   int
	extra  map[string]any
}{
	panels.HandoffsByReason: {"timeseries", 0, 24, 9, map[string]any{
		"fieldConfig": map[string]any{"defaults": map[string]any{"custom": map[string]any{
			"drawStyle": "bars", "fillOpacity": 80, "stacking": map[string]any{"mode": "normal"},
		}}, "overrides": []any{}},
	}},
	panels.SuccessByDestination: {"table", 1, 12, 9, map[string]any{
		"fieldConfig": map[string]any{"defaults": map[string]any{}, "overrides": []any{map[string]any{
			"matcher":    map[string]any{"id": "byName", "options": "success_rate"},
			"properties": []any{map[string]any{"id": "unit", "value": "percentunit"}, map[string]any{"id": "custom.cellOptions", "value": map[string]any{"type": "gauge"}}},
		}}},
	}},
	panels.TimeToTransfer: {"barchart", 1, 12, 9, map[string]any{
		"fieldConfig": map[string]any{"defaults": map[string]any{"unit": "ms"}, "overrides": []any{}},
		"options":     map[string]any{"xField": "method"},
	}},
	panels.CallsByDialedNumber: {"bargauge", 1, 12, 9, map[string]any{
		"options": map[string]any{"orientation": "horizontal", "reduceOptions": map[string]any{"values": true, "calcs": []any{}, "fields": "/^calls$/"}},
	}},
	panels.RecentHandoffs: {"table", 1, 12, 9, map[string]any{}},
	panels.AgentStreamsByReason: {"timeseries", 0, 24, 9, map[string]any{
		"fieldConfig": map[string]any{"defaults": map[string]any{"custom": map[string]any{
			"drawStyle": "bars", "fillOpacity": 80, "stacking": map[string]any{"mode": "normal"},
		}}, "overrides": []any{}},
	}},
	panels.AgentFailures: {"table", 1, 12, 9, map[string]any{}},
	panels.AgentPlayout: {"table", 1, 12, 9, map[string]any{
		"fieldConfig": map[string]any{"defaults": map[string]any{}, "overrides": []any{
			msColumn("p95_max_queue_ms"), msColumn("deepest_queue_ms"),
		}},
	}},
	panels.AgentMetricsByName: {"table", 1, 12, 9, map[string]any{}},
	panels.RulesByHits:        {"table", 1, 12, 9, map[string]any{}},
}

// msColumn is a table override that shows a column in milliseconds.
func msColumn(name string) map[string]any {
	return map[string]any{
		"matcher":    map[string]any{"id": "byName", "options": name},
		"properties": []any{map[string]any{"id": "unit", "value": "ms"}},
	}
}

// grafanaLimit is the row limit of list panels in Grafana.
const grafanaLimit = 50

// Grafana returns the dashboard JSON for the grafana-clickhouse-datasource
// plugin: one panel per query of panels.All(), the window from Grafana's
// time picker ($__fromTime, $__toTime), the datasource chosen by the
// ${datasource} variable. The datasource's default database must be the
// one analytics writes (baton).
func Grafana() ([]byte, error) {
	ds := map[string]any{"type": "grafana-clickhouse-datasource", "uid": "${datasource}"}
	var out []any
	x, y := 0, 0
	for i, p := range panels.All() {
		g, ok := grafanaPanel[p.Name]
		if !ok {
			return nil, fmt.Errorf("grafana: no layout for panel %s", p.Name)
		}
		if x+g.w > 24 {
			x, y = 0, y+g.h
		}
		panel := map[string]any{
			"id":         i + 1,
			"type":       g.kind,
			"title":      p.Title,
			"datasource": ds,
			"gridPos":    map[string]any{"x": x, "y": y, "w": g.w, "h": g.h},
			"targets": []any{map[string]any{
				"refId":      "A",
				"datasource": ds,
				"editorType": "sql",
				"queryType":  "sql",
				"format":     g.format,
				"rawSql":     p.Grafana(grafanaLimit),
			}},
		}
		for k, v := range g.extra {
			panel[k] = v
		}
		out = append(out, panel)
		x += g.w
		if x >= 24 {
			x, y = 0, y+g.h
		}
	}
	dash := map[string]any{
		"__requires": []any{
			map[string]any{"type": "datasource", "id": "grafana-clickhouse-datasource", "name": "ClickHouse", "version": "4.0.0"},
			map[string]any{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
		},
		"uid":           "baton-handoffs",
		"title":         "Baton handoffs",
		"description":   "Generated from schemas/panels/panels.sql and agent.sql; the analytics page shows the same panels.",
		"tags":          []any{"baton"},
		"timezone":      "utc",
		"schemaVersion": 39,
		"editable":      true,
		"refresh":       "30s",
		"time":          map[string]any{"from": "now-24h", "to": "now"},
		"templating": map[string]any{"list": []any{map[string]any{
			"name": "datasource", "label": "ClickHouse", "type": "datasource", "query": "grafana-clickhouse-datasource",
		}}},
		"panels": out,
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep the SQL's < and > readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(dash); err != nil {
		return nil, fmt.Errorf("grafana dashboard: %w", err)
	}
	return buf.Bytes(), nil
}
