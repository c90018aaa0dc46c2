package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDefaultsAreValid(t *testing.T) {
	c, err := Load("")
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:5070", c.Listen)
	require.Equal(t, "baton-transfer", c.Group)
	require.Equal(t, 32*time.Second, c.NotifyTimeout)
	require.Equal(t, 10*time.Second, c.ShutdownTimeout)
	require.Equal(t, "127.0.0.1", c.ViaHost())
}

func TestExampleConfigLoads(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "transfer.example.yaml"))
	require.NoError(t, err)
	require.Equal(t, Default().NotifyTimeout, c.NotifyTimeout)
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want string
	}{
		{"wildcard listen needs external_host", "listen: 0.0.0.0:5070\n", "t.yaml: external_host: required"},
		{"listen not host:port", "listen: nope\n", "t.yaml:1: listen:"},
		{"listen host is a name", "listen: localhost:5070\n", "want an IP address"},
		{"bad external host", "external_host: 'a b'\n", "t.yaml:1: external_host:"},
		{"zero notify timeout", "group: g\nnotify_timeout: 0s\n", "t.yaml:2: notify_timeout:"},
		{"empty group", "group: ''\n", "t.yaml:1: group:"},
		{"no in-flight room", "max_in_flight: 0\n", "t.yaml:1: max_in_flight:"},
		{"negative shutdown", "shutdown_timeout: -1s\n", "t.yaml:1: shutdown_timeout:"},
		{"unknown key", "listne: 127.0.0.1:5070\n", "field listne not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t.yaml")
			require.NoError(t, os.WriteFile(path, []byte(tc.doc), 0o600))
			_, err := Load(path)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestExternalHostGoesIntoTheVia(t *testing.T) {
	c := Default()
	c.Listen = "0.0.0.0:5070"
	c.ExternalHost = "transfer.example.com"
	require.NoError(t, c.Validate())
	require.Equal(t, "transfer.example.com", c.ViaHost())
}
