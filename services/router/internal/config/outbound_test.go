package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/services/router/internal/outbound"
)

const outboundDests = "destinations:\n  - name: support\n    route: sip:support@pbx.example.com\nallowlist:\n  deny_numbers: [\"+1900\"]\n"

func TestOutboundConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"no allow, no caller id", "outbound:\n  trunks:\n    - name: a\n",
			[]string{"outbound.trunks[0].allow: at least one pattern", "outbound.trunks[0].caller_ids: at least one caller id"}},
		{"bad pattern and prefix", "outbound:\n  trunks:\n    - name: a\n      allow: [\"re:(\"]\n      deny_numbers: [x1]\n      caller_ids: [\"+15550001111\"]\n",
			[]string{"outbound.trunks[0].allow[0]", "outbound.trunks[0].deny_numbers[0]"}},
		{"denied caller id", "outbound:\n  trunks:\n    - name: a\n      allow: [\"+1555*\"]\n      caller_ids: [\"+19005550000\"]\n",
			[]string{`outbound.trunks[0].caller_ids[0]: "+19005550000" is a denied number`}},
		{"bad header and policy", "outbound:\n  trunks:\n    - name: a\n      allow: [\"+1555*\"]\n      caller_ids: [\"+15550001111\"]\n      headers: {Campaign: x}\n      on_missing_variable: maybe\n",
			[]string{"outbound.trunks[0].headers.Campaign", "outbound.trunks[0].on_missing_variable"}},
		{"bounds", "outbound:\n  trunks:\n    - name: a\n      allow: [\"+1555*\"]\n      caller_ids: [\"+15550001111\"]\n      answer_timeout: 500ms\n      max_calls_per_second: -1\n      burst: 10001\n",
			[]string{"outbound.trunks[0].answer_timeout", "outbound.trunks[0].max_calls_per_second", "outbound.trunks[0].burst"}},
		{"duplicate", "outbound:\n  trunks:\n    - {name: a, allow: [\"+1*\"], caller_ids: [\"+15550001111\"]}\n    - {name: a, allow: [\"+1*\"], caller_ids: [\"+15550001111\"]}\n",
			[]string{`outbound.trunks[1].name: "a" is listed twice`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, outboundDests+tc.doc)
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

// TestOutboundPolicy: the global deny list applies to outbound trunks
// too, and the defaults (answer timeout, burst) are filled in.
func TestOutboundPolicy(t *testing.T) {
	c, err := parse(t, outboundDests+`outbound:
  trunks:
    - name: carrier-a
      allow: ["+1*"]
      deny_numbers: ["+1 555 9"]
      caller_ids: ["+15550001111"]
      headers: {X-Campaign: "{campaign}"}
      max_calls_per_second: 1.5
`)
	require.NoError(t, err)
	p, err := c.OutboundPolicy()
	require.NoError(t, err)
	now := time.Now()
	for to, code := range map[string]string{"+19001234567": outbound.CodeNumberDenied, "+15559001234": outbound.CodeNumberDenied} {
		_, err := p.Admit(outbound.Request{Trunk: "carrier-a", To: to}, now)
		r, ok := outbound.AsRefusal(err)
		require.True(t, ok, to)
		require.Equal(t, code, r.Code, to)
	}
	got, err := p.Admit(outbound.Request{Trunk: "carrier-a", To: "+15551234567", Variables: map[string]string{"campaign": "x"}}, now)
	require.NoError(t, err)
	require.Equal(t, DefaultAnswerTimeout, got.AnswerTimeout)
	require.Equal(t, "x", got.Headers[0].GetValue())
	// Burst is 2 (1.5 rounded up): the third call at once is refused.
	_, err = p.Admit(outbound.Request{Trunk: "carrier-a", To: "+15551234567"}, now)
	require.NoError(t, err)
	_, err = p.Admit(outbound.Request{Trunk: "carrier-a", To: "+15551234567"}, now)
	r, _ := outbound.AsRefusal(err)
	require.Equal(t, outbound.CodeRateLimited, r.Code)
}
