package deploycheck

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func deployDir(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return filepath.Join(dir, "deploy")
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, parent, dir, "go.work not found")
		dir = parent
	}
}

func docs(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err, path)
		if doc != nil {
			out = append(out, doc)
		}
	}
}

func TestKubernetesManifests(t *testing.T) {
	dir := deployDir(t)
	kust := docs(t, filepath.Join(dir, "kustomization.yaml"))[0]
	kinds := map[string]int{}
	for _, r := range kust["resources"].([]any) {
		for _, d := range docs(t, filepath.Join(dir, r.(string))) {
			kinds[d["kind"].(string)]++
			if d["kind"] == "Deployment" {
				spec := d["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
				cm := spec["volumes"].([]any)[0].(map[string]any)["configMap"].(map[string]any)["name"].(string)
				require.True(t, strings.HasPrefix(cm, "baton-"), cm)
			}
		}
	}
	require.Equal(t, 4, kinds["Deployment"], "one Deployment per stage")
	require.Equal(t, 4, kinds["HorizontalPodAutoscaler"], "one HPA per stage")
	for _, g := range kust["configMapGenerator"].([]any) {
		for _, f := range g.(map[string]any)["files"].([]any) {
			_, src, _ := strings.Cut(f.(string), "=")
			_, err := os.Stat(filepath.Join(dir, src))
			require.NoError(t, err, "configMapGenerator file %s", src)
		}
	}
}

func TestComposeMountsExist(t *testing.T) {
	dir := deployDir(t)
	compose := docs(t, filepath.Join(dir, "compose.yaml"))[0]
	services := compose["services"].(map[string]any)
	for _, name := range []string{"kafka", "clickhouse", "ingress", "router", "transfer", "analytics", "grafana"} {
		require.Contains(t, services, name)
	}
	for name, s := range services {
		vols, _ := s.(map[string]any)["volumes"].([]any)
		for _, v := range vols {
			src, _, _ := strings.Cut(v.(string), ":")
			if !strings.HasPrefix(src, "./") {
				continue // a named volume
			}
			_, err := os.Stat(filepath.Join(dir, src))
			require.NoError(t, err, "service %s mounts %s", name, src)
		}
	}
}

func TestKamailioConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("needs kamailio; run without -short")
	}
	kamailio, err := exec.LookPath("kamailio")
	if err != nil {
		t.Fatal("kamailio not found: install Debian's kamailio package (make deps)")
	}
	dir := filepath.Join(deployDir(t), "kamailio")
	cfg, err := os.ReadFile(filepath.Join(dir, "kamailio.cfg"))
	require.NoError(t, err)
	// Point the dispatcher at the example list next to the config.
	local := strings.ReplaceAll(string(cfg), "/etc/kamailio/baton/dispatcher.list", filepath.Join(dir, "dispatcher.list"))
	path := filepath.Join(t.TempDir(), "kamailio.cfg")
	require.NoError(t, os.WriteFile(path, []byte(local), 0o600))
	out, err := exec.CommandContext(t.Context(), kamailio, "-c", "-f", path).CombinedOutput()
	require.NoError(t, err, "kamailio -c rejected the config:\n%s", out)
	require.NotContains(t, string(out), "ERROR")
}

// TestConfigsLoad runs each service's own config validation (--check-config)
// on the production configs in deploy/config and the examples next to each
// service, so neither can drift from what the services accept.
func TestConfigsLoad(t *testing.T) {
	deploy := deployDir(t)
	repo := filepath.Dir(deploy)
	bin := t.TempDir()
	for _, svc := range []string{"ingress", "router", "transfer", "analytics"} {
		t.Run(svc, func(t *testing.T) {
			exe := filepath.Join(bin, svc)
			build := exec.CommandContext(t.Context(), "go", "build", "-o", exe, "./cmd/"+svc)
			build.Dir = filepath.Join(repo, "services", svc)
			out, err := build.CombinedOutput()
			require.NoError(t, err, "build %s: %s", svc, out)
			shipped, err := filepath.Glob(filepath.Join(deploy, "config", svc+"*.yaml")) // analytics-cluster.yaml too
			require.NoError(t, err)
			require.NotEmpty(t, shipped)
			for _, cfg := range append(shipped, filepath.Join(repo, "services", svc, svc+".example.yaml")) {
				check := exec.CommandContext(t.Context(), exe, "--check-config", "--config", cfg)
				// The shipped analytics dashboard listens off loopback and
				// so needs its token (the k8s Secret baton-dashboard).
				// POD_IP: the downward API's status.podIP in deploy/k8s.
				check.Env = append(os.Environ(), "BATON_DASHBOARD_TOKEN=deploycheck", "POD_IP=10.0.0.7", "POD_NAME=baton-router-0")
				out, err := check.CombinedOutput()
				require.NoError(t, err, "%s rejects %s:\n%s", svc, cfg, out)
				require.Contains(t, string(out), "config ok")
			}
			bad := filepath.Join(t.TempDir(), "bad.yaml")
			require.NoError(t, os.WriteFile(bad, []byte("no_such_key: 1\n"), 0o600))
			cmd := exec.CommandContext(t.Context(), exe, "--check-config", "--config", bad)
			out, err = cmd.CombinedOutput()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "%s accepted an unknown key", svc)
			require.Equal(t, 2, exit.ExitCode())
			require.Contains(t, string(out), "no_such_key")
			if svc == "ingress" {
				requireFailsClosed(t, exe, filepath.Join(deploy, "config", "ingress.yaml"))
			}
			if svc != "analytics" {
				requireOpsOnPodIP(t, exe, deploy, svc)
			}
		})
	}
}

// requireFailsClosed checks that the shipped ingress config listens off
// loopback only because it lists trunks: the same file without them is
// refused, so nobody ships an ingress that answers every address.
func requireFailsClosed(t *testing.T, exe, shipped string) {
	t.Helper()
	data, err := os.ReadFile(shipped)
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal(data, &cfg))
	require.NotEqual(t, true, cfg["allow_any_source"], "the shipped ingress config must not allow any source")
	require.NotEmpty(t, cfg["trunks"], "the shipped ingress config must list trunks")
	for _, tr := range cfg["trunks"].([]any) {
		for _, src := range tr.(map[string]any)["sources"].([]any) {
			require.NotContains(t, []string{"0.0.0.0/0", "::/0"}, src, "a shipped trunk open to every address")
		}
	}
	delete(cfg, "trunks")
	open, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "ingress-no-trunks.yaml")
	require.NoError(t, os.WriteFile(path, open, 0o600))
	out, err := exec.CommandContext(t.Context(), exe, "--check-config", "--config", path).CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "ingress started on %s with no trunks:\n%s", cfg["listen"], out)
	require.Contains(t, string(out), "trunks: none listed")
}

// requireOpsOnPodIP checks that a shipped service binds /metrics to its
// pod's address (on hostNetwork, the node's cluster address) and not to
// every address, and that its manifest provides POD_IP.
func requireOpsOnPodIP(t *testing.T, exe, deploy, svc string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(deploy, "config", svc+".yaml"))
	require.NoError(t, err)
	var cfg struct {
		Metrics struct {
			Listen string `yaml:"listen"`
		} `yaml:"metrics"`
	}
	require.NoError(t, yaml.Unmarshal(data, &cfg))
	require.True(t, strings.HasPrefix(cfg.Metrics.Listen, "${POD_IP}:"), "%s metrics.listen %q: bind ${POD_IP}, not every address", svc, cfg.Metrics.Listen)
	manifest, err := os.ReadFile(filepath.Join(deploy, "k8s", svc+".yaml"))
	require.NoError(t, err)
	require.Contains(t, string(manifest), "fieldPath: status.podIP", "deploy/k8s/%s.yaml must set POD_IP", svc)
	// Without POD_IP the service refuses the config rather than bind
	// every address.
	check := exec.CommandContext(t.Context(), exe, "--check-config", "--config", filepath.Join(deploy, "config", svc+".yaml"))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "POD_IP=") {
			check.Env = append(check.Env, kv)
		}
	}
	out, err := check.CombinedOutput()
	require.Error(t, err, "%s started its shipped config without POD_IP", svc)
	require.Contains(t, string(out), "POD_IP")
}
