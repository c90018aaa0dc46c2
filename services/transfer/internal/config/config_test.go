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
	require.Equal(t, "baton.transfer-attempts", c.AttemptLog.Topic)
	require.Equal(t, 4*time.Second, c.ByeAfterRefer)
	require.Equal(t, "caller", c.Invite.CallerID.Policy)
	require.Equal(t, "127.0.0.1", c.MediaAddr().String())
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
		{"negative bye wait", "bye_after_refer: -1s\n", "t.yaml:1: bye_after_refer:"},
		{"attempt topic empty", "attempt_log:\n  topic: ''\n", "t.yaml:2: attempt_log.topic:"},
		{"attempt topic reused", "attempt_log:\n  topic: baton.calls\n", "attempt_log.topic: \"baton.calls\" is also"},
		{"retention under command age", "max_command_age: 1h\nattempt_log:\n  retention: 30m\n", "t.yaml:3: attempt_log.retention:"},
		{"media host", "media:\n  host: localhost\n", "t.yaml:2: media.host:"},
		{"wildcard media host", "media:\n  host: 0.0.0.0\n", "media.external_host: required"},
		{"media port range", "media:\n  port_min: 40000\n  port_max: 30000\n", "media.port_min: range"},
		{"idle timeout", "media:\n  idle_timeout: 0s\n", "media.idle_timeout:"},
		{"answer timeout", "invite:\n  answer_timeout: 0s\n", "t.yaml:2: invite.answer_timeout:"},
		{"caller id policy", "invite:\n  caller_id:\n    policy: random\n", "t.yaml:3: invite.caller_id.policy:"},
		{"fixed caller id needs a number", "invite:\n  caller_id:\n    policy: fixed\n", "invite.caller_id.number:"},
		{"srtp suite", "invite:\n  srtp_suites: [AES_256_CM]\n", "invite.srtp_suites[0]:"},
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
