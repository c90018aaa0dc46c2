package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/cmd/baton/internal/broker"
)

func TestBrokerFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    func(broker.Config) broker.Config
		wantErr string
	}{
		{
			name: "defaults",
			args: []string{"broker"},
			want: func(c broker.Config) broker.Config { return c },
		},
		{
			name: "every flag",
			args: []string{"broker", "--listen", "0.0.0.0:9093", "--advertise", "kafka:9093", "--data-dir", "/var/lib/baton",
				"--sync-writes", "--partitions", "3", "--topics", "a.calls,a.handoffs", "--auto-create-topics"},
			want: func(broker.Config) broker.Config {
				return broker.Config{Listen: "0.0.0.0:9093", Advertise: "kafka:9093", DataDir: "/var/lib/baton",
					SyncWrites: true, Partitions: 3, Topics: []string{"a.calls", "a.handoffs"}, AutoCreateTopics: true}
			},
		},
		{name: "zero partitions", args: []string{"broker", "--partitions", "0"}, wantErr: "--partitions: 0"},
		{name: "wildcard without advertise", args: []string{"broker", "--listen", "0.0.0.0:9092"}, wantErr: "--advertise: required"},
		{name: "no port", args: []string{"broker", "--listen", "127.0.0.1"}, wantErr: `--listen "127.0.0.1"`},
		{name: "bad topic", args: []string{"broker", "--topics", "ok,no way"}, wantErr: `--topics[1] "no way"`},
		{name: "bad log level", args: []string{"broker", "--log-level", "loud"}, wantErr: "--log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c cli
			p, err := newParser(&c, &bytes.Buffer{}, &bytes.Buffer{}, func(int) { t.Fatal("exit called") })
			require.NoError(t, err)
			_, err = p.Parse(tt.args)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want(broker.DefaultConfig()), c.Broker.config())
		})
	}
}

func TestHelpListsCommands(t *testing.T) {
	var c cli
	var out bytes.Buffer
	exited := -1
	p, err := newParser(&c, &out, &out, func(code int) { exited = code })
	require.NoError(t, err)
	_, _ = p.Parse([]string{"--help"}) // help exits; with exit stubbed, parsing goes on
	require.Equal(t, 0, exited)
	for _, want := range []string{"broker", "Run the embedded Kafka-protocol broker", "version", "Print baton's version"} {
		require.Contains(t, out.String(), want)
	}
}

func TestReplayRulesFlags(t *testing.T) {
	rules := filepath.Join(t.TempDir(), "router.yaml")
	require.NoError(t, os.WriteFile(rules, []byte("destinations: []\n"), 0o600))
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "rules and router binary", args: []string{"replay", "--call", "c", "--rules", rules, "--router-bin", "/opt/baton/router"}},
		{name: "rules file must exist", args: []string{"replay", "--call", "c", "--rules", rules + ".missing"}, wantErr: "--rules"},
		{name: "rules with html", args: []string{"replay", "--call", "c", "--rules", rules, "--html", "x.html"}, wantErr: "--html draws the recording"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c cli
			p, err := newParser(&c, &bytes.Buffer{}, &bytes.Buffer{}, func(int) { t.Fatal("exit called") })
			require.NoError(t, err)
			_, err = p.Parse(tt.args)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, rules, c.Replay.Rules)
			require.Equal(t, "/opt/baton/router", c.Replay.RouterBin)
		})
	}
}
