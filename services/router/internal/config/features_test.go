package config

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

func TestFeatureErrorsNameFileLineAndField(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{
		{
			name: "rule condition does not compile",
			doc: `destinations:
  - name: support
    route: sip:support@example.com
rules:
  - name: vip
    when: caler_number == '+1555'
    handoff: support
  - name: typed
    when: caller_number
`,
			want: []string{
				`router.yaml:6: rules[0].when: rule condition: ERROR: <input>:1:1: undeclared reference to 'caler_number'`,
				`router.yaml:9: rules[1].when: rule condition: "caller_number" has type string, want bool`,
			},
		},
		{
			name: "rule actions",
			doc: `destinations:
  - name: support
    route: sip:support@example.com
rules:
  - name: both
    when: reason == 'x'
    handoff: support
    continue: true
  - name: bad-var
    when: reason == 'y'
    set:
      variables:
        intent: "a\nb"
`,
			want: []string{
				`router.yaml:8: rules[0].continue: a rule that hands off ends the rules`,
				`router.yaml:13: rules[1].set.variables.intent: invalid variable`,
			},
		},
		{
			name: "fallback names, self and cycles",
			doc: `destinations:
  - name: a
    route: sip:a@example.com
    fallback: [b, nowhere, a]
  - name: b
    route: sip:b@example.com
    fallback: [c, c]
  - name: c
    route: sip:c@example.com
    fallback: [a]
`,
			want: []string{
				`router.yaml:4: destinations[0].fallback[1]: unknown destination "nowhere"`,
				`router.yaml:4: destinations[0].fallback[2]: "a" falls back to itself`,
				`router.yaml:7: destinations[1].fallback[1]: "c" is listed twice`,
				`router.yaml:4: destinations[0].fallback: fallback cycle: a -> b -> c -> a`,
			},
		},
		{
			name: "encryption, whisper, missing-variable policy",
			doc: `destinations:
  - name: a
    route: sip:a@example.com
    encryption: tls_srtp
    whisper: /srv/whisper.wav
  - name: b
    method: INVITE
    route: sips:b@example.com
    encryption: udp_rtp
    whisper: relative.wav
    on_missing_variable: explode
  - name: c
    method: INVITE
    route: tel:+15551234567
    encryption: rot13
`,
			want: []string{
				`router.yaml:4: destinations[0].encryption: applies to INVITE only`,
				`router.yaml:5: destinations[0].whisper: applies to INVITE only`,
				`router.yaml:9: destinations[1].encryption: udp_rtp contradicts the sips: route`,
				`router.yaml:10: destinations[1].whisper: "relative.wav": want an absolute path or an http(s) URL`,
				`router.yaml:11: destinations[1].on_missing_variable: "explode": want empty or refuse`,
				`router.yaml:15: destinations[2].encryption: "rot13": want tls_srtp (default) or udp_rtp`,
			},
		},
		{
			name: "trunk constraints",
			doc: `trunks:
  - name: twilio
    method: REFER
    headers_supported: false
  - name: fixed
    route: sip:+15550000000@carrier.example.com
  - name: twilio
destinations:
  - name: a
    trunk: twilio
    method: INVITE
    route: tel:+15551234567
  - name: b
    trunk: fixed
    route: sip:other@carrier.example.com
  - name: c
    trunk: nowhere
    route: sip:c@example.com
`,
			want: []string{
				`router.yaml:7: trunks[2].name: duplicate trunk "twilio" (also trunks[0])`,
				`router.yaml:11: destinations[0].method: INVITE: trunk "twilio" only accepts REFER`,
				`router.yaml:15: destinations[1].route: "sip:other@carrier.example.com": trunk "fixed" fixes the route`,
				`router.yaml:17: destinations[2].trunk: unknown trunk "nowhere"`,
			},
		},
		{
			name: "allowlist, attempts, end policy, api, reload",
			doc: `destinations:
  - name: a
    route: sip:a@example.com
allowlist:
  routes: ["sip:*@pbx.example.com", "re:tel:+(", "sip:[a"]
max_attempts: 0
on_all_failed: pray
api:
  listen: "8080"
  tokens_env: ""
reload:
  poll_interval: -1s
`,
			want: []string{
				`router.yaml:5: allowlist.routes[1]: "re:tel:+("`,
				`router.yaml:5: allowlist.routes[2]: "sip:[a": syntax error in pattern`,
				`router.yaml:6: max_attempts: 0: want 1 to 10`,
				`router.yaml:7: on_all_failed: "pray": want hangup or return_to_agent`,
				`router.yaml:9: api.listen: "8080": want host:port`,
				`router.yaml:10: api.tokens_env: the environment variable holding the API tokens is required`,
				`router.yaml:12: reload.poll_interval: -1s`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.doc)
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
			var inv *pkgconfig.InvalidError
			require.ErrorAs(t, err, &inv)
			require.Len(t, inv.Problems, len(tc.want), "exactly the expected problems:\n%s", strings.Join(inv.Problems, "\n"))
		})
	}
}

func TestEveryRouteFormAndTrunkInheritance(t *testing.T) {
	c, err := parse(t, `trunks:
  - name: twilio
    method: REFER
    headers_supported: false
  - name: carrier
    method: INVITE
    route: sip:+15550000000@carrier.example.com
destinations:
  - name: sip
    route: sip:support@example.com
    default: true
  - name: port
    route: sip:support@10.0.0.5:5070
  - name: tls
    route: sips:support@pbx.example.com
  - name: e164
    route: sip:+15551234567@trunk.example.com
    fallback: [tel, ext]
  - name: tel
    method: INVITE
    route: tel:+15551234567
    encryption: udp_rtp
    whisper: /srv/whisper/billing.wav
  - name: ext
    method: INVITE
    route: "4001"
    on_missing_variable: refuse
  - name: twilio-queue
    trunk: twilio
    route: sip:queue@example.twilio.com
    headers:
      X-Intent: "{intent}"
  - name: carrier-fixed
    trunk: carrier
rules:
  - name: vip
    when: caller_number in ['+15551230001']
    handoff: e164
  - name: branch
    when: callee_number.startsWith('+1800')
    set:
      variables: {line: tollfree}
      state: {flow: tollfree}
    continue: true
allowlist:
  routes: ["sip:*@pbx.example.com"]
max_attempts: 4
on_all_failed: return_to_agent
api:
  listen: 127.0.0.1:0
`)
	require.NoError(t, err)
	require.Equal(t, []string{`destinations[6].headers: trunk "twilio" drops custom headers; 1 header(s) will not reach the destination`}, c.Warnings())
	require.Equal(t, "BATON_API_TOKENS", c.API.TokensEnv)
	require.Equal(t, DefaultPollInterval, c.Reload.PollInterval)

	tbl, err := c.Table()
	require.NoError(t, err)
	require.Equal(t, "sip", tbl.Default)
	require.Equal(t, uint32(4), tbl.MaxAttempts)
	require.Equal(t, handoff.EndReturnToAgent, tbl.OnAllFailed)
	require.Len(t, tbl.AllowedRoutes, 1)
	require.True(t, tbl.AllowedRoutes[0].Match("sip:bob@pbx.example.com"))

	for name, want := range map[string]struct {
		method batonv1.Method
		route  string
		enc    handoff.Encryption
	}{
		"sip":           {batonv1.Method_METHOD_REFER, "sip:support@example.com", ""},
		"port":          {batonv1.Method_METHOD_REFER, "sip:support@10.0.0.5:5070", ""},
		"tls":           {batonv1.Method_METHOD_REFER, "sips:support@pbx.example.com", ""},
		"e164":          {batonv1.Method_METHOD_REFER, "sip:+15551234567@trunk.example.com", ""},
		"tel":           {batonv1.Method_METHOD_INVITE, "tel:+15551234567", handoff.EncryptionUDPRTP},
		"ext":           {batonv1.Method_METHOD_INVITE, "4001", handoff.EncryptionTLSSRTP},
		"twilio-queue":  {batonv1.Method_METHOD_REFER, "sip:queue@example.twilio.com", ""},
		"carrier-fixed": {batonv1.Method_METHOD_INVITE, "sip:+15550000000@carrier.example.com", handoff.EncryptionTLSSRTP},
	} {
		d := tbl.Destinations[name]
		require.Equal(t, want.method, d.Method, name)
		require.Equal(t, want.route, d.Route, name)
		require.Equal(t, want.enc, d.Encryption, name)
		require.Equal(t, DefaultAnswerTimeout, d.AnswerTimeout, name)
	}
	require.Equal(t, "/srv/whisper/billing.wav", tbl.Destinations["tel"].Whisper)
	require.Equal(t, []string{"tel", "ext"}, tbl.Destinations["e164"].Fallback)
	require.Equal(t, handoff.MissingRefuse, tbl.Destinations["ext"].OnMissing)
	require.Equal(t, handoff.MissingEmpty, tbl.Destinations["sip"].OnMissing)

	require.Len(t, tbl.Rules, 2)
	require.NotNil(t, tbl.Rules[0].When)
	require.Equal(t, "e164", tbl.Rules[0].Destination)
	require.Equal(t, map[string]string{"flow": "tollfree"}, tbl.Rules[1].SetState)
	require.True(t, tbl.Rules[1].Continue)
}

func TestDefaultsOfTheNewSections(t *testing.T) {
	c := Default("h")
	require.Equal(t, uint32(3), c.MaxAttempts)
	require.Equal(t, OnAllFailedHangup, c.OnAllFailed)
	require.Empty(t, c.API.Listen, "the API is off unless configured")
	require.Equal(t, 2*time.Second, c.Reload.PollInterval)
}
