package dashboard

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

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
