package config_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/services/analytics/internal/config"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func write(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "analytics.yaml")
	require.NoError(t, os.WriteFile(p, []byte(yaml), 0o600))
	return p
}

func TestDefaults(t *testing.T) {
	c, err := config.Load("", env(nil))
	require.NoError(t, err)
	require.Equal(t, "baton-analytics", c.Group)
	require.Equal(t, "baton.dlq", c.DeadLetterTopic)
	require.Equal(t, time.Second, c.RetryPause)
	require.Equal(t, "127.0.0.1:19000", c.ClickHouse.Addr)
	require.Equal(t, "baton", c.ClickHouse.Database)
	require.Equal(t, "default", c.ClickHouse.Username)
	require.Equal(t, 5*time.Second, c.ClickHouse.DialTimeout)
	require.Empty(t, c.ClickHouse.Password)
	require.Equal(t, config.Batch{MaxRows: 50000, MaxWait: time.Second}, c.Batch)
	require.Equal(t, "127.0.0.1:8081", c.HTTP.Listen)
	require.Equal(t, 30*time.Second, c.RetryMaxPause)
	require.Equal(t, 45*time.Second, c.Kafka.SessionTimeout)
}

func TestHTTPDisabled(t *testing.T) {
	c, err := config.Load(write(t, "http:\n  listen: \"\"\n"), env(nil))
	require.NoError(t, err)
	require.Empty(t, c.HTTP.Listen)
}

func TestPasswordFromEnvironmentOnly(t *testing.T) {
	c, err := config.Load(write(t, "group: g\n"), env(map[string]string{config.PasswordEnv: "s3cret"}))
	require.NoError(t, err)
	require.Equal(t, "s3cret", c.ClickHouse.Password)

	_, err = config.Load(write(t, "clickhouse:\n  password: s3cret\n"), env(nil))
	require.ErrorContains(t, err, "password")
}

// Off loopback the dashboard needs its token, from the environment only.
func TestDashboardOffLoopbackNeedsToken(t *testing.T) {
	public := write(t, "http:\n  listen: 0.0.0.0:8081\n")
	_, err := config.Load(public, env(nil))
	require.ErrorContains(t, err, "http.listen: \"0.0.0.0:8081\" is not loopback and BATON_DASHBOARD_TOKEN is unset")
	c, err := config.Load(public, env(map[string]string{config.DashboardTokenEnv: "t0ken"}))
	require.NoError(t, err)
	require.Equal(t, "t0ken", c.HTTP.Token)
	_, err = config.Load(write(t, "http:\n  listen: 127.0.0.1:8081\n"), env(nil))
	require.NoError(t, err, "loopback needs no token")
	_, err = config.Load(write(t, "http:\n  token: t0ken\n"), env(nil))
	require.ErrorContains(t, err, "token", "a token in the file is refused")
}

func TestExampleConfig(t *testing.T) {
	c, err := config.Load("../../analytics.example.yaml", env(nil))
	require.NoError(t, err)
	require.Equal(t, "baton-analytics", c.Group)
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"group", "group: ''\n", "analytics.yaml:1: group: a consumer group id is required"},
		{"retry pause", "retry_pause: 0s\n", "retry_pause: 0s: want a positive duration"},
		{"dead letters loop", "dead_letter_topic: baton.calls\n", "dead_letter_topic: \"baton.calls\" is a consumed topic"},
		{"addr", "clickhouse:\n  addr: localhost\n", "analytics.yaml:2: clickhouse.addr"},
		{"addr port", "clickhouse:\n  addr: localhost:0\n", "port must be 1-65535"},
		{"database", "clickhouse:\n  database: baton-prod\n", "clickhouse.database: \"baton-prod\""},
		{"cluster", "clickhouse:\n  cluster: prod-cluster\n", "clickhouse.cluster: \"prod-cluster\""},
		{"username", "clickhouse:\n  username: ''\n", "clickhouse.username"},
		{"dial timeout", "clickhouse:\n  dial_timeout: -1s\n", "clickhouse.dial_timeout"},
		{"log level", "log:\n  level: loud\n", "log.level"},
		{"kafka", "kafka:\n  brokers: []\n", "kafka.brokers"},
		{"batch rows", "batch:\n  max_rows: 0\n", "analytics.yaml:2: batch.max_rows: 0: want at least 1"},
		{"batch wait", "batch:\n  max_wait: 0s\n", "batch.max_wait"},
		{"retry max pause", "retry_pause: 2s\nretry_max_pause: 1s\n", "retry_max_pause: 1s: want at least retry_pause"},
		{"session timeout", "kafka:\n  session_timeout: 10ms\n", "kafka.session_timeout"},
		{"http listen", "http:\n  listen: nope\n", "http.listen: \"nope\""},
		{"unknown key", "clikhouse: {}\n", "clikhouse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Load(write(t, tt.yaml), env(nil))
			require.ErrorContains(t, err, tt.want)
		})
	}
}

// http.context names the call variables the dashboard shows: names of
// letters, digits, '-' and '_', at most 16 of them.
func TestDashboardContext(t *testing.T) {
	c, err := config.Load(write(t, "http:\n  context: [Customer-Id, intent_2]\n"), env(nil))
	require.NoError(t, err)
	require.Equal(t, []string{"Customer-Id", "intent_2"}, c.HTTP.Context)
	_, err = config.Load(write(t, "http:\n  context: [\"a b\"]\n"), env(nil))
	require.ErrorContains(t, err, "http.context[0]")
	_, err = config.Load(write(t, "http:\n  context: [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q]\n"), env(nil))
	require.ErrorContains(t, err, "at most 16")
}
