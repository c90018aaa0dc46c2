package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	require.NoError(t, c.Validate())
	require.Equal(t, "127.0.0.1", c.ContactHost())
	require.Equal(t, "127.0.0.1", c.RTPHost())
}

func TestExampleConfigLoads(t *testing.T) {
	c := Default()
	require.NoError(t, pkgconfig.Load("../../ingress.example.yaml", &c))
}

func TestValidateNamesFields(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"bad listen", "listen: nope\n", "listen:"},
		{"wildcard needs external host", "listen: 0.0.0.0:5060\n", "external_host: required"},
		{"public listener without trunks", "listen: 192.0.2.7:5060\n", "trunks: none listed, and udp listens on 192.0.2.7:5060, which is not loopback"},
		{"wildcard listener without trunks", "listeners: [{transport: tcp, address: \"[::]:5060\"}]\nexternal_host: sip.example.com\n", "trunks: none listed, and tcp listens on [::]:5060"},
		{"max calls beyond the rtp range", "rtp: {port_min: 20000, port_max: 20099}\nlimits: {max_calls: 51}\n", "limits.max_calls: 51, more than the RTP port range carries: 50 calls"},
		{"bad external host", "external_host: \"a b\"\n", "external_host:"},
		{"bad trunk", "trunk: \"\"\n", "trunk:"},
		{"rtp range", "rtp: {port_min: 30000, port_max: 20000}\n", "rtp.port_max:"},
		{"rtp host", "rtp: {host: example.com}\n", "rtp.host:"},
		{"publish timeout", "publish_timeout: 0s\n", "publish_timeout:"},
		{"kafka", "kafka: {brokers: []}\n", "kafka.brokers"},
		{"log", "log: {level: loud}\n", "log.level:"},
		{"unknown key", "listen_addr: x\n", "field listen_addr not found"},
		{"trunk cidr", "trunks: [{name: a, sources: [10.0.0.0/33]}]\n", "trunks[0].sources[0]:"},
		{"trunk without sources", "trunks: [{name: a}]\n", "trunks[0].sources:"},
		{"trunk name twice", "trunks: [{name: a, sources: [10.0.0.1]}, {name: a, sources: [10.0.0.2]}]\n", "trunks[1].name:"},
		{"trunk region", "trunks: [{name: a, sources: [10.0.0.1], region: XX}]\n", "trunks[0].region:"},
		{"trunk number source", "trunks: [{name: a, sources: [10.0.0.1], caller_from: [contact]}]\n", "trunks[0].caller_from[0]:"},
		{"max calls", "limits: {max_calls: 0}\n", "limits.max_calls:"},
		{"max cps", "limits: {max_cps: -1}\n", "limits.max_cps:"},
		{"retry after", "limits: {retry_after: 1500ms}\n", "limits.retry_after:"},
		{"listener transport", "listeners: [{transport: sctp, address: 127.0.0.1:5060}]\n", "listeners[0].transport:"},
		{"listener address", "listeners: [{transport: udp, address: nowhere}]\n", "listeners[0].address:"},
		{"tls without cert", "listeners: [{transport: tls, address: 127.0.0.1:5061}]\n", "listeners[0].cert_file:"},
		{"tls cert missing", "listeners: [{transport: tls, address: 127.0.0.1:5061, cert_file: /nonexistent.pem, key_file: /nonexistent.key}]\n", "listeners[0].cert_file:"},
		{"cert on udp", "listeners: [{transport: udp, address: 127.0.0.1:5061, cert_file: a.pem}]\n", "listeners[0].cert_file: only for transport tls"},
		{"wildcard listener", "listeners: [{transport: tcp, address: \"[::]:5060\"}]\n", "external_host: required when listeners[0].address"},
		{"greeting missing", "media: {greeting: /nonexistent.wav}\n", "media.greeting:"},
		{"agent selection wait without agents", "agent_selection_wait: 1s\n", "agent_selection_wait: set, but no agents are listed"},
		{"agent selection wait too long", "agents: [{name: a, url: ws://a/, default: true}]\nagent_selection_wait: 11s\n", "agent_selection_wait: 11s, want 0 (do not wait) to 10s"},
		{"agent url", "agents: [{name: bot, url: http://bot.example.com/media}]\n", "agents[0].url: \"http://bot.example.com/media\", want a ws:// or wss:// URL"},
		{"agent url user info", "agents: [{name: bot, url: \"wss://u:p@bot.example.com/\"}]\n", "agents[0].url: user info"},
		{"agent name twice", "agents: [{name: bot, url: ws://a/, default: true}, {name: bot, url: ws://b/}]\n", "agents[1].name: \"bot\" used twice"},
		{"agent two defaults", "agents: [{name: a, url: ws://a/, default: true}, {name: b, url: ws://b/, default: true}]\n", "agents[1].default:"},
		{"agent unknown trunk", "agents: [{name: a, url: ws://a/, trunks: [nowhere]}]\n", "agents[0].trunks[0]: \"nowhere\" is not a configured trunk"},
		{"agent number twice", "agents: [{name: a, url: ws://a/, numbers: [\"+1555\"]}, {name: b, url: ws://b/, numbers: [\"+1555\"]}]\n", "agents[1].numbers[0]:"},
		{"agent auth half", "agents: [{name: a, url: ws://a/, auth: {header: Authorization}}]\n", "agents[0].auth: header and env go together"},
		{"agent auth unset", "agents: [{name: a, url: ws://a/, auth: {header: Authorization, env: BATON_TEST_UNSET_AUTH}}]\n", "agents[0].auth.env: $BATON_TEST_UNSET_AUTH is empty or unset"},
		{"agent format", "agents: [{name: a, url: ws://a/, format: opus}]\n", "agents[0].format:"},
		{"agent playout", "agents: [{name: a, url: ws://a/, playout_buffer: 100ms}]\n", "agents[0].playout_buffer:"},
		{"agent connect timeout", "agents: [{name: a, url: ws://a/, connect_timeout: 1m}]\n", "agents[0].connect_timeout:"},
		{"agent failure action", "agents: [{name: a, url: ws://a/, on_agent_failure: {action: pray}}]\n", "agents[0].on_agent_failure.action:"},
		{"agent failure wav", "agents: [{name: a, url: ws://a/, on_agent_failure: {action: play_then_hangup}}]\n", "agents[0].on_agent_failure.wav: required"},
		{"agent failure destination", "agents: [{name: a, url: ws://a/, on_agent_failure: {action: handoff}}]\n", "agents[0].on_agent_failure.destination:"},
		{"silence", "media: {silence: -1s}\n", "media.silence:"},
		{"drain timeout", "drain_timeout: -1s\n", "drain_timeout:"},
		{"media timeout too short", "rtp: {media_timeout: 500ms}\n", "rtp.media_timeout:"},
		{"media timeout negative", "rtp: {media_timeout: -1s}\n", "rtp.media_timeout:"},
		{"rtp quarantine too short", "rtp: {quarantine: 10ms}\n", "rtp.quarantine: 10ms, want 100ms to 1m"},
		{"rtp quarantine too long", "rtp: {quarantine: 2m}\n", "rtp.quarantine:"},
		{"trunk max calls", "trunks: [{name: a, sources: [10.0.0.1], max_calls: -1}]\n", "trunks[0].max_calls:"},
		{"trunk max cps", "trunks: [{name: a, sources: [10.0.0.1], max_cps: -5}]\n", "trunks[0].max_cps:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ingress.yaml")
			require.NoError(t, os.WriteFile(path, []byte(tc.yaml), 0o600))
			c := Default()
			err := pkgconfig.Load(path, &c)
			require.Error(t, err)
			require.True(t, strings.Contains(err.Error(), tc.want), err.Error())
		})
	}
}

func TestExternalHostWins(t *testing.T) {
	c := Default()
	c.Listen = "0.0.0.0:5060"
	c.AllowAnySource = true
	c.ExternalHost = "198.51.100.4"
	c.RTP.Host = "10.0.0.5"
	require.NoError(t, c.Validate())
	require.Equal(t, "198.51.100.4", c.ContactHost())
	require.Equal(t, "10.0.0.5", c.RTPHost())
}

// Fail closed: a listener off loopback needs trunks with sources, or an
// explicit allow_any_source; loopback alone, or the flag, or a trunk list
// is enough.
func TestPublicListenerNeedsTrunks(t *testing.T) {
	c := Default()
	c.Listen = "198.51.100.4:5060"
	require.ErrorContains(t, c.Validate(), "trunks: none listed")
	c.AllowAnySource = true
	require.NoError(t, c.Validate())
	c.AllowAnySource = false
	c.Trunks = []Trunk{{Name: "carrier", Sources: []string{"203.0.113.0/24"}}}
	require.NoError(t, c.Validate())
	c = Default()
	c.Listen = "[::1]:5060"
	require.NoError(t, c.Validate(), "loopback takes any source without the flag")
}

// A call's agent is the one listing its dialed number, else its trunk,
// else the default.
func TestAgentFor(t *testing.T) {
	c := Default()
	c.Trunks = []Trunk{{Name: "carrier-a", Sources: []string{"10.0.0.1"}}}
	c.Agents = []Agent{
		{Name: "fallback", URL: "ws://f/", Default: true},
		{Name: "by-trunk", URL: "ws://t/", Trunks: []string{"carrier-a"}},
		{Name: "by-number", URL: "ws://n/", Numbers: []string{"+15550100"}},
	}
	require.NoError(t, c.Validate())
	for _, tc := range []struct{ callee, trunk, want, source string }{
		{"+15550100", "carrier-a", "by-number", "number"},
		{"+15550199", "carrier-a", "by-trunk", "trunk"},
		{"+15550199", "default", "fallback", "default"},
	} {
		a, source := c.AgentFor(tc.callee, tc.trunk)
		require.Equal(t, tc.want, a.Name, tc)
		require.Equal(t, tc.source, source)
	}
	c.Agents = c.Agents[1:]
	a, _ := c.AgentFor("+15550199", "default")
	require.Nil(t, a, "no default: no agent")
	d := Agent{}.WithDefaults()
	require.Equal(t, FormatMulaw, d.Format)
	require.Equal(t, FailHangup, d.OnFailure.Action)
	require.Equal(t, 10*time.Second, d.PlayoutBuffer)
}

func TestMaxCallsFitsRTPRange(t *testing.T) {
	c := Default()
	require.Equal(t, 500, c.RTP.Calls(), "20000-20999: 500 even ports")
	require.Equal(t, c.RTP.Calls(), c.Limits.MaxCalls, "the default fills the default range")
	c.RTP.PortMin, c.RTP.PortMax = 20001, 20004 // even ports 20002, 20004
	require.Equal(t, 2, c.RTP.Calls())
	c.Limits.MaxCalls = 3
	require.ErrorContains(t, c.Validate(), "limits.max_calls: 3, more than the RTP port range carries: 2 calls")
	c.Limits.MaxCalls = 2
	require.NoError(t, c.Validate())
}

func TestTrunksKeepDefaults(t *testing.T) {
	c := Default()
	c.Trunk = "demo-sbc"
	got := c.EffectiveTrunks()
	require.Len(t, got, 1)
	require.Equal(t, "demo-sbc", got[0].Name)
	require.Equal(t, []string{"0.0.0.0/0", "::/0"}, got[0].Sources)

	path := filepath.Join(t.TempDir(), "ingress.yaml")
	require.NoError(t, os.WriteFile(path, []byte("trunks:\n  - name: carrier\n    sources: [203.0.113.0/24, \"2001:db8::1\"]\n    region: us\n    caller_from: [pai, from]\n"), 0o600))
	c = Default()
	require.NoError(t, pkgconfig.Load(path, &c))
	got = c.EffectiveTrunks()
	require.Equal(t, "carrier", got[0].Name)
	require.Equal(t, "to", string(got[0].CalleeFrom[0]), "callee defaults to To")
	require.Equal(t, "pai", string(got[0].CallerFrom[0]))
}

func TestListenersReplaceListen(t *testing.T) {
	c := Default()
	require.Equal(t, []Listener{{Transport: UDP, Address: "127.0.0.1:5060"}}, c.EffectiveListeners(), "listen is one UDP listener")
	require.Equal(t, 30*time.Second, c.DrainTimeout)

	path := filepath.Join(t.TempDir(), "ingress.yaml")
	require.NoError(t, os.WriteFile(path, []byte("listen: nonsense\nlisteners:\n  - {transport: udp, address: \"[::1]:5060\"}\n  - {transport: tcp, address: \"127.0.0.1:5060\"}\n"), 0o600))
	c = Default()
	require.NoError(t, pkgconfig.Load(path, &c), "listen is ignored when listeners is set")
	require.Len(t, c.EffectiveListeners(), 2)
	require.Equal(t, "::1", c.ContactHost(), "the first listener's host")
	require.Equal(t, "::1", c.RTPHost())
}

func TestMediaTimeoutAndTrunkLimits(t *testing.T) {
	c := Default()
	require.Equal(t, 60*time.Second, c.RTP.MediaTimeout, "on by default")

	path := filepath.Join(t.TempDir(), "ingress.yaml")
	require.NoError(t, os.WriteFile(path, []byte("rtp: {media_timeout: 0s}\ntrunks:\n  - {name: a, sources: [10.0.0.1], max_calls: 10, max_cps: 2}\n  - {name: b, sources: [10.0.0.2]}\n"), 0o600))
	c = Default()
	require.NoError(t, pkgconfig.Load(path, &c), "0 turns the media timeout off; trunk limits are optional")
	require.Zero(t, c.RTP.MediaTimeout)
	got := c.EffectiveTrunks()
	require.Equal(t, 10, got[0].MaxCalls)
	require.Equal(t, 2, got[0].MaxCPS)
	require.Zero(t, got[1].MaxCalls)
}
