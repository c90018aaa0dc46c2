package rules

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func input() *Input {
	return &Input{
		CallerNumber: "+15551230001",
		CalleeNumber: "+18005550100",
		SipHeaders:   map[string][]string{"x-tier": {"gold"}, "via": {"a", "b"}},
		Variables:    map[string]string{"customer_id": "C-42"},
		State:        map[string]string{"intent": "billing"},
		Reason:       "billing_dispute",
		// 13:30 UTC is 08:30 in New York (EST, winter).
		Time: time.Date(2025, 1, 15, 13, 30, 0, 0, time.UTC),
		Results: map[string]any{"data": map[string]any{
			"account": map[string]any{"tier": "gold", "balance": 12.5, "open_tickets": int64(3)},
			"tags":    []any{"churn-risk"},
			"vip":     true,
		}},
	}
}

func TestMatch(t *testing.T) {
	env, err := NewEnv()
	require.NoError(t, err)
	for _, tc := range []struct {
		expr string
		want bool
	}{
		{`caller_number == '+15551230001'`, true},
		{`callee_number == '+15551230001'`, false}, // caller and callee are not mixed up
		{`callee_number.startsWith('+1800')`, true},
		{`caller_number in ['+15550000000', '+15551230001']`, true},
		{`'x-tier' in sip_headers && sip_headers['x-tier'][0] == 'gold'`, true},
		{`size(sip_headers['via']) == 2`, true},
		{`variables.customer_id == 'C-42'`, true},
		{`state.intent == 'sales'`, false},
		{`reason == 'billing_dispute'`, true},
		{`time.getHours('America/New_York') < 9`, true},
		{`time.getHours() == 13`, true},
		{`time > timestamp('2025-01-01T00:00:00Z')`, true},
		{`results.data.account.tier == 'gold'`, true},
		{`results.data.account.balance > 10.0 && results.data.account.open_tickets >= 3`, true},
		{`'churn-risk' in results.data.tags && results.data.vip`, true},
		{`has(results.data) && !has(results.error)`, true},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			c, err := env.Compile(tc.expr)
			require.NoError(t, err)
			got, err := c.Match(input())
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestMatchEvaluationErrorIsNoMatch(t *testing.T) {
	env, err := NewEnv()
	require.NoError(t, err)
	c, err := env.Compile(`variables.absent == 'x'`)
	require.NoError(t, err)
	got, err := c.Match(input())
	require.Error(t, err)
	require.Contains(t, err.Error(), "absent")
	require.False(t, got)
}

func TestEmptyMapsAreUsable(t *testing.T) {
	env, err := NewEnv()
	require.NoError(t, err)
	c, err := env.Compile(`!('x-tier' in sip_headers) && size(state) == 0 && !has(results.data)`)
	require.NoError(t, err)
	got, err := c.Match(&Input{})
	require.NoError(t, err)
	require.True(t, got)
}

func TestCompileErrors(t *testing.T) {
	env, err := NewEnv()
	require.NoError(t, err)
	for _, tc := range []struct{ expr, want string }{
		{``, "empty expression"},
		{`caller_number ==`, "Syntax error"},
		{`caler_number == '1'`, "undeclared reference to 'caler_number'"},
		{`caller_number`, "has type string, want bool"},
		{`reason == 1`, "no matching overload"},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			_, err := env.Compile(tc.expr)
			require.ErrorIs(t, err, ErrCompile)
			require.Contains(t, err.Error(), tc.want)
			require.NotContains(t, err.Error(), "\n", "one line, for file:line: field: problem")
		})
	}
}

func TestInvalidate(t *testing.T) {
	env, err := NewEnv()
	require.NoError(t, err)
	c, err := env.Compile(`state.intent == 'sales'`)
	require.NoError(t, err)
	in := input()
	got, err := c.Match(in)
	require.NoError(t, err)
	require.False(t, got)
	in.State = map[string]string{"intent": "sales"}
	in.Invalidate()
	got, err = c.Match(in)
	require.NoError(t, err)
	require.True(t, got)
}
