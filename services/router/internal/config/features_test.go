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
			name: "whisper hosts",
			doc: `destinations:
  - name: a
    route: sip:a@example.com
    whisper_hosts: [tts.example.com]
  - name: b
    method: INVITE
    route: tel:+15551234567
    whisper_hosts: ["https://tts.example.com", "*", "tts.example.com:443", "*.example.com", "TTS.example.com"]
`,
			want: []string{
				`router.yaml:4: destinations[0].whisper_hosts[0]: applies to INVITE only`,
				`router.yaml:8: destinations[1].whisper_hosts[0]: "https://tts.example.com": want a host name`,
				`router.yaml:8: destinations[1].whisper_hosts[1]: "*": want a host name`,
				`router.yaml:8: destinations[1].whisper_hosts[2]: "tts.example.com:443": want a host name`,
				`router.yaml:8: destinations[1].whisper_hosts[4]: "TTS.example.com": want a host name`,
			},
		},
		{
			name: "rule agent",
			doc: `destinations:
  - name: a
    route: sip:a@example.com
rules:
  - name: vip
    agent: "vip bot"
`,
			want: []string{
				`router.yaml:6: rules[0].agent: "vip bot", want an agent name of ingress's agents`,
			},
		},
		{
			name: "context_in",
			doc: `destinations:
  - name: a
    route: sip:a@example.com
    context_in: headers
  - name: b
    method: INVITE
    route: tel:+15551234567
    context_in: both
  - name: c
    route: sip:c@example.com
    context_in: body
`,
			want: []string{
				`router.yaml:8: destinations[1].context_in: applies to REFER only`,
				`router.yaml:11: destinations[2].context_in: "body": want refer_to (default), headers or both`,
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
		{
			name: "precall and rule after",
			doc: `destinations:
  - name: a
    route: sip:a@example.com
precall:
  url: ftp://crm.example.com/lookup
  timeout: 0s
  max_age: -1s
  max_in_flight: 0
rules:
  - name: later
    when: results.data.tier == 'gold'
    after: later
    handoff: a
`,
			want: []string{
				`router.yaml:5: precall.url: "ftp://crm.example.com/lookup": want an absolute http(s) URL`,
				`router.yaml:6: precall.timeout: 0s: want a positive duration up to 30s`,
				`router.yaml:7: precall.max_age: -1s: want a positive duration`,
				`router.yaml:8: precall.max_in_flight: 0: want 1 to 1024`,
				`router.yaml:12: rules[0].after: "later": want precall, or nothing`,
			},
		},
		{
			name: "precall url with credentials, relative url",
			doc: `destinations:
  - name: a
    route: sip:a@example.com
precall:
  url: https://user:secret@crm.example.com/lookup
`,
			want: []string{`router.yaml:5: precall.url: credentials in the URL`},
		},
		{
			name: "unreachable within a pass",
			doc: `destinations:
  - name: a
    route: sip:a@example.com
rules:
  - name: everyone
    handoff: a
  - name: gold
    when: results.data.tier == 'gold'
    after: precall
    handoff: a
  - name: never
    when: caller_number == '1'
    handoff: a
`,
			want: []string{`router.yaml:11: rules[2]: unreachable: rule "everyone" before it matches every call`},
		},
		{
			name: "session_timeout lives under kafka",
			doc: `kafka:
  session_timeout: 500ms
destinations:
  - name: a
    route: sip:a@example.com
`,
			want: []string{`kafka.session_timeout: 500ms, want at least 1s`},
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
	require.Equal(t, PreCall{Timeout: 2 * time.Second, MaxAge: time.Minute, MaxInFlight: 16}, c.PreCall, "pre-call fetching is off unless configured")
	require.Equal(t, 45*time.Second, c.Kafka.SessionTimeout)
}

func TestTopLevelSessionTimeoutIsGone(t *testing.T) {
	_, err := parse(t, `session_timeout: 6s
destinations:
  - name: a
    route: sip:a@example.com
`)
	require.ErrorContains(t, err, "line 1: field session_timeout not found")
}

func TestPreCallConfig(t *testing.T) {
	c, err := parse(t, `destinations:
  - name: a
    route: sip:a@example.com
  - name: vip
    route: sip:vip@example.com
precall:
  url: https://crm.example.com/baton/precall?tenant=1
  timeout: 1500ms
  headers_env: CRM_HEADERS
  max_age: 5m
  max_in_flight: 4
rules:
  - name: gold
    when: has(results.data) && results.data.account.tier == 'gold'
    after: precall
    handoff: vip
  - name: start
    when: caller_number == '+1'
    handoff: a
`)
	require.NoError(t, err)
	require.Equal(t, PreCall{URL: "https://crm.example.com/baton/precall?tenant=1", Timeout: 1500 * time.Millisecond,
		HeadersEnv: "CRM_HEADERS", MaxAge: 5 * time.Minute, MaxInFlight: 4}, c.PreCall)
	require.Empty(t, c.Warnings())
	tbl, err := c.Table()
	require.NoError(t, err)
	require.True(t, tbl.Rules[0].AfterPreCall)
	require.False(t, tbl.Rules[1].AfterPreCall)

	// Without a URL, an after: precall rule runs only on data in the log.
	c, err = parse(t, `destinations:
  - name: a
    route: sip:a@example.com
rules:
  - name: gold
    after: precall
    handoff: a
`)
	require.NoError(t, err)
	require.Equal(t, []string{`rules[0].after: precall.url is empty: rule "gold" runs only for pre-call data already in the log (a replay)`}, c.Warnings())
}

func TestDenyNumbersAndHandoffCap(t *testing.T) {
	c, err := parse(t, `destinations:
  - name: support
    route: sip:support@example.com
allowlist:
  routes: ["tel:*"]
  deny_numbers: ["+1900", "+44 9", "+1-976"]
max_handoffs_per_call: 2
`)
	require.NoError(t, err)
	tbl, err := c.Table()
	require.NoError(t, err)
	require.Equal(t, []string{"+1900", "+449", "+1976"}, tbl.DeniedNumbers, "separators are ignored")
	require.Equal(t, uint32(2), tbl.MaxHandoffs)
	require.Equal(t, uint32(DefaultMaxHandoffsPerCall), Default("h").MaxHandoffsPerCall)

	_, err = parse(t, `destinations:
  - name: premium
    method: invite
    route: tel:+1-900-555-0100
  - name: ok
    route: sip:%2B19005550100@carrier.example
trunks:
  - name: t
    route: tel:+449098790000
allowlist:
  deny_numbers: ["+1900", "+449", "premium"]
max_handoffs_per_call: 0
`)
	require.ErrorContains(t, err, `router.yaml:4: destinations[0].route: "tel:+1-900-555-0100" dials a denied number (allowlist.deny_numbers "+1900")`)
	require.ErrorContains(t, err, `router.yaml:6: destinations[1].route: "sip:%2B19005550100@carrier.example" dials a denied number`)
	require.ErrorContains(t, err, `router.yaml:9: trunks[0].route: "tel:+449098790000" dials a denied number (allowlist.deny_numbers "+449")`)
	require.ErrorContains(t, err, `router.yaml:11: allowlist.deny_numbers[2]: number prefix "premium"`)
	require.ErrorContains(t, err, `router.yaml:12: max_handoffs_per_call: 0: want 1 to 100`)
}

func TestStateCapsPerCall(t *testing.T) {
	c, err := parse(t, `destinations:
  - name: support
    route: sip:support@example.com
`)
	require.NoError(t, err)
	require.Equal(t, 256, c.MaxStateKeysPerCall)
	require.Equal(t, 64<<10, c.MaxStateBytesPerCall)
	tbl, err := c.Table()
	require.NoError(t, err)
	require.Equal(t, 256, tbl.MaxStateKeys)
	require.Equal(t, 65536, tbl.MaxStateBytes)

	c, err = parse(t, `destinations:
  - name: support
    route: sip:support@example.com
max_state_keys_per_call: 32
max_state_bytes_per_call: 8192
`)
	require.NoError(t, err)
	tbl, err = c.Table()
	require.NoError(t, err)
	require.Equal(t, 32, tbl.MaxStateKeys)
	require.Equal(t, 8192, tbl.MaxStateBytes)

	_, err = parse(t, `destinations:
  - name: support
    route: sip:support@example.com
max_state_keys_per_call: 0
max_state_bytes_per_call: 100
`)
	require.ErrorContains(t, err, `router.yaml:4: max_state_keys_per_call: 0: want 1 to 4096`)
	require.ErrorContains(t, err, `router.yaml:5: max_state_bytes_per_call: 100: want 1024 to 4194304`)

	_, err = parse(t, `destinations:
  - name: support
    route: sip:support@example.com
max_state_keys_per_call: 5000
max_state_bytes_per_call: 5000000
`)
	require.ErrorContains(t, err, `router.yaml:4: max_state_keys_per_call: 5000: want 1 to 4096`)
	require.ErrorContains(t, err, `router.yaml:5: max_state_bytes_per_call: 5000000: want 1024 to 4194304`)
}
