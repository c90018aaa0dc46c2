package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRunRefusesBadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ingress.yaml")
	require.NoError(t, os.WriteFile(path, []byte("listen: 127.0.0.1:5060\nrtp:\n  port_min: 9\n"), 0o600))
	var stderr bytes.Buffer
	require.Equal(t, 2, run(t.Context(), []string{"--config", path}, &stderr))
	require.Contains(t, stderr.String(), "ingress.yaml:3: rtp.port_min")

	stderr.Reset()
	require.Equal(t, 2, run(t.Context(), []string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}, &stderr))
	require.Contains(t, stderr.String(), "read config")
}

func TestRunHelp(t *testing.T) {
	var stderr bytes.Buffer
	require.Equal(t, 0, run(t.Context(), []string{"--help"}, &stderr))
	require.Contains(t, stderr.String(), "-config")
}
