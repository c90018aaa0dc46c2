package template

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func testScope() Scope {
	system := map[string]any{
		"call_id":           "c-1",
		"caller_number":     "+15551230001",
		"callee_number":     "+15559870002",
		"from_phone_number": "+15551230001",
		"to_phone_number":   "+15559870002",
	}
	request := map[string]any{
		"Intent":  "billing",
		"call_id": "spoofed", // cannot override the system variable
		"results": map[string]any{
			"data": map[string]any{"name": "Ada", "score": 7, "vip": true},
			"flat": map[string]string{"Tier-Name": "gold"},
		},
	}
	call := Strings(map[string]string{
		"Customer-Id": "C-42",
		"Intent":      "sales", // the request's value wins
		"Lang":        "en",
		"dotted.name": "flat-with-dot",
	})
	return NewScope(system, request, call)
}

func TestRender(t *testing.T) {
	for _, tc := range []struct {
		name    string
		src     string
		want    string
		missing []string
	}{
		{name: "literal", src: "plain text", want: "plain text"},
		{name: "empty", src: "", want: ""},
		{name: "dollar", src: "$call_id", want: "c-1"},
		{name: "brace", src: "{call_id}", want: "c-1"},
		{name: "brace spaces", src: "{ call_id }", want: "c-1"},
		{name: "mixed", src: "id=$call_id;from={from_phone_number}", want: "id=c-1;from=+15551230001"},
		{name: "dash ends dollar name", src: "$call_id-2", want: "c-1-2"},
		{name: "trailing dot not part of name", src: "$Lang.", want: "en."},
		{name: "dollar underscore name", src: "$customer_id", want: "C-42"},
		{name: "brace dashed name", src: "{Customer-Id}", want: "C-42"},
		{name: "case and dash insensitive", src: "{CUSTOMER_ID}/{customer-id}", want: "C-42/C-42"},
		{name: "request wins over call", src: "{intent}", want: "billing"},
		{name: "system cannot be overridden", src: "$call_id", want: "c-1"},
		{name: "dotted path brace", src: "{results.data.name}", want: "Ada"},
		{name: "dotted path dollar", src: "$results.data.name!", want: "Ada!"},
		{name: "number and bool leaves", src: "{results.data.score}/{results.data.vip}", want: "7/true"},
		{name: "string map normalised segment", src: "{results.flat.tier_name}", want: "gold"},
		{name: "flat key with a dot", src: "{dotted.name}", want: "flat-with-dot"},
		{name: "map is not a value", src: "[{results.data}]", want: "[]", missing: []string{"results.data"}},
		{name: "escapes", src: "$$5 {{x}} $$call_id", want: "$5 {x} $call_id"},
		{name: "lone closing brace", src: "a}b", want: "a}b"},
		{name: "dollar without name", src: "cost $5 and $ sign", want: "cost $5 and $ sign"},
		{name: "dollar at end", src: "x$", want: "x$"},
		{name: "missing", src: "<{nope}|$nope|{other}>", want: "<||>", missing: []string{"nope", "other"}},
		{name: "missing path", src: "{results.data.nope}", want: "", missing: []string{"results.data.nope"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tpl, err := Parse(tc.src)
			require.NoError(t, err)
			got, missing := tpl.Render(testScope())
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.missing, missing)
			require.Equal(t, tc.src, tpl.String())
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want string
	}{
		{src: "{call_id", want: "unclosed '{' at byte 0"},
		{src: "ab{", want: "unclosed '{' at byte 2"},
		{src: "{a{b}", want: "unclosed '{' at byte 0"},
		{src: "x{}", want: "empty variable name in {} at byte 1"},
		{src: "{ }", want: "empty variable name"},
		{src: "{a..b}", want: `variable name "a..b" has an empty path segment`},
		{src: "{.a}", want: "empty path segment"},
		{src: "{a b}", want: `character ' ' not allowed`},
		{src: "{a$b}", want: `character '$' not allowed`},
	} {
		t.Run(tc.src, func(t *testing.T) {
			_, err := Parse(tc.src)
			require.ErrorIs(t, err, ErrSyntax)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestVars(t *testing.T) {
	tpl, err := Parse("$a {b.c} $$d {{e}}")
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b.c"}, tpl.Vars())
}

func TestNormalizedCollisionPicksSmallestKey(t *testing.T) {
	s := NewScope(Strings(map[string]string{"customer_id": "lower", "Customer-Id": "dashed"}))
	for src, want := range map[string]string{
		"{customer_id}": "lower",  // exact match first
		"{Customer-Id}": "dashed", // exact match first
		"{CUSTOMER-ID}": "dashed", // "Customer-Id" < "customer_id" in byte order
	} {
		tpl, err := Parse(src)
		require.NoError(t, err)
		got, missing := tpl.Render(s)
		require.Empty(t, missing)
		require.Equal(t, want, got, src)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "$a", "{a}", "{{", "}}", "$$", "{a.b-c}", "x{", "{}", "$a.b.", "{ a }"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		tpl, err := Parse(src)
		if err != nil {
			return
		}
		// A template without references renders its literal text, and
		// rendering never reports a name it does not refer to.
		got, missing := tpl.Render(NewScope())
		require.Len(t, missing, len(uniq(tpl.Vars())))
		if len(tpl.Vars()) == 0 {
			require.LessOrEqual(t, len(got), len(src))
		}
	})
}

func uniq(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// TestCallPrecedence is the router's precedence table: system variables,
// then the agent's, then the rules', then the state and results
// namespaces, then pre-call data (results.data) under plain names, then
// the stripped X- headers.
func TestCallPrecedence(t *testing.T) {
	full := Call{
		System: map[string]string{"call_id": "c-1", "caller_number": "+15551230001"},
		Agent:  map[string]string{"call_id": "spoofed", "Tier": "agent-tier"},
		Rules:  map[string]string{"line": "tollfree", "Lang": "rule-lang"},
		State:  map[string]string{"tier": "state-tier"},
		Results: map[string]any{
			"data": map[string]any{
				"tier": "precall-tier", "Lang": "precall-lang", "name": "Ada", "customer_id": "P-7",
				"account": map[string]any{"tier": "gold", "id": int64(9007199254740993)},
				"phones":  []any{"+15550001", "+15550002"},
				"state":   map[string]any{"tier": "shadowed"},
			},
			"meta": map[string]any{"source": "crm"},
		},
		Headers: map[string]string{"Customer-Id": "C-42", "Intent": "billing", "Tier": "header-tier", "name": "header-name"},
	}
	noAgent := full
	noAgent.Agent = nil
	noPreCall := noAgent
	noPreCall.Results = nil
	for _, tc := range []struct {
		name    string
		call    Call
		src     string
		want    string
		missing []string
	}{
		{name: "system beats agent", call: full, src: "$call_id", want: "c-1"},
		{name: "agent beats pre-call and headers", call: full, src: "{tier}", want: "agent-tier"},
		{name: "pre-call beats headers", call: noAgent, src: "{tier}", want: "precall-tier"},
		{name: "headers when no pre-call", call: noPreCall, src: "{tier}/{name}", want: "header-tier/header-name"},
		{name: "pre-call beats headers, normalised", call: full, src: "{Customer-Id}", want: "P-7"},
		{name: "headers fill what pre-call lacks", call: full, src: "{intent}", want: "billing"},
		{name: "rules beat pre-call", call: full, src: "$lang", want: "rule-lang"},
		{name: "results namespace", call: full, src: "{results.data.account.tier}", want: "gold"},
		{name: "plain dotted into data", call: full, src: "{account.tier}", want: "gold"},
		{name: "large integer kept", call: full, src: "{results.data.account.id}", want: "9007199254740993"},
		{name: "list index", call: full, src: "{results.data.phones.1}", want: "+15550002"},
		{name: "list out of range", call: full, src: "{results.data.phones.2}", missing: []string{"results.data.phones.2"}},
		{name: "only data serves plain names", call: full, src: "{meta.source}|{results.meta.source}", want: "|crm", missing: []string{"meta.source"}},
		{name: "state namespace not shadowed by pre-call", call: full, src: "{state.tier}", want: "state-tier"},
		{name: "no pre-call: results missing", call: noPreCall, src: "{results.data.account.tier}", missing: []string{"results.data.account.tier"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tpl, err := Parse(tc.src)
			require.NoError(t, err)
			got, missing := tpl.Render(tc.call.Scope())
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.missing, missing)
		})
	}
}
