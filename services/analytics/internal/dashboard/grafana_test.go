package dashboard

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/schemas/panels"
)

var update = flag.Bool("update", false, "rewrite "+GrafanaPath)

// repoRoot is four levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", "..", "..", ".."))
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "go.work"))
	require.NoError(t, err, "repository root")
	return root
}

// The Grafana dashboard runs exactly panels.sql (the page and baton report
// read it from the schemas module).
func TestGeneratedFilesMatchPanels(t *testing.T) {
	root := repoRoot(t)
	dash, err := Grafana()
	require.NoError(t, err)
	files := map[string][]byte{GrafanaPath: dash}
	for path, want := range files {
		full := filepath.Join(root, path)
		if *update {
			require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
			require.NoError(t, os.WriteFile(full, want, 0o644))
		}
		got, err := os.ReadFile(full)
		require.NoError(t, err, "run go test ./internal/dashboard -run TestGeneratedFilesMatchPanels -update")
		require.Equal(t, string(want), string(got), "%s is stale: run go test ./internal/dashboard -run TestGeneratedFilesMatchPanels -update", path)
	}

	// Every panel is in the dashboard with Grafana's macros, no placeholder.
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RawSQL string `json:"rawSql"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(dash, &d))
	require.Len(t, d.Panels, len(panels.All()))
	for i, p := range panels.All() {
		require.Equal(t, p.Title, d.Panels[i].Title)
		sql := d.Panels[i].Targets[0].RawSQL
		require.Contains(t, sql, "$__fromTime")
		require.NotContains(t, sql, "{from}")
		require.NotContains(t, sql, "{limit}")
	}
}

// The Grafana dashboard runs the page's SQL: each panel's rawSql, with
// Grafana's time macros and its filter variables expanded as Grafana
// would (${x:sqlstring} quotes the value), is the query the analytics page
// sends for the same window and filter; the variables are there.
func TestGrafanaRunsThePageSQL(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), GrafanaPath))
	require.NoError(t, err)
	var d struct {
		Templating struct {
			List []struct {
				Name string `json:"name"`
				Type string `json:"type"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RawSQL string `json:"rawSql"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(data, &d))
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	for _, name := range []string{"trunk", "destination", "method", "outcome"} {
		require.Equal(t, "textbox", vars[name], "variable %s", name)
	}
	from, to := time.Unix(1_750_000_000, 0), time.Unix(1_750_086_400, 0)
	for _, f := range []Filter{{}, {Trunk: "carrier-a", Destination: "support", Method: "REFER", Outcome: "failed"}} {
		values := map[string]string{"trunk": f.Trunk, "destination": f.Destination, "method": f.Method, "outcome": f.Outcome}
		pairs := []string{"$__fromTime", "toDateTime(1750000000)", "$__toTime", "toDateTime(1750086400)"}
		for name, v := range values {
			pairs = append(pairs, "${"+name+":sqlstring}", "'"+strings.ReplaceAll(v, "'", "''")+"'")
		}
		expand := strings.NewReplacer(pairs...)
		all := panels.All()
		require.Len(t, d.Panels, len(all))
		for i, p := range all {
			require.Equal(t, p.Title, d.Panels[i].Title)
			require.Equal(t, p.RenderFilter(from, to, grafanaLimit, f), expand.Replace(d.Panels[i].Targets[0].RawSQL),
				"panel %s with filter %+v", p.Name, f)
		}
	}
}
