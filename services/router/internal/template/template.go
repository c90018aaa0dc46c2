// Package template renders the header values of a handoff destination from
// the variables of a call.
//
// # Syntax
//
// A template is literal text with variable references in two forms:
//
//   - $name: a '$' followed by a letter or '_', then letters, digits and
//     '_'; dotted paths are allowed ($results.data.name). A '-' ends the
//     name, so "$call_id-2" is the call id followed by "-2". A '$' that does
//     not start a name ("$5", "a $ b") is literal.
//   - {name}: any name of letters, digits, '_', '-' and '.', so names with
//     dashes work here: {Customer-Id}, {results.data.name}. Spaces just
//     inside the braces are ignored: { call_id }.
//
// "$$" renders "$", "{{" renders "{" and "}}" renders "}"; a lone "}" is
// literal. An unclosed or empty "{" is a parse error, so a broken template
// fails at configuration load, never during a call.
//
// # Variable names
//
// Names match case-insensitively and with '-' and '_' treated alike: a name
// is normalised by lowercasing it and mapping '-' to '_'. The X- header
// X-Customer-Id arrives as the call variable "Customer-Id", and {customer_id},
// $customer_id, {Customer-Id} and {CUSTOMER_ID} all find it. An exact match
// is tried first; when several keys of one map normalise to the same name
// the smallest key (byte order) wins, so the choice is deterministic.
//
// A dotted name is first looked up whole as a key (a flat variable may
// contain a dot); otherwise each segment walks one level into nested maps.
//
// # Precedence
//
// A Scope is an ordered list of layers; the first layer that has a name wins.
// The router builds it as:
//
//  1. system variables: call_id, caller_number, callee_number,
//     from_phone_number, to_phone_number; they cannot be overridden;
//  2. the variables of the handoff request (given by the agent);
//  3. the variables rules set;
//  4. the namespaces {state.name} (the call's state) and {results.…} (the
//     pre-call webhook's JSON object, as returned: {results.data.name});
//  5. pre-call data under plain names: the keys of the webhook's "data"
//     object (results.data), so {name} finds results.data.name and
//     {account.tier} finds results.data.account.tier. Only "data" is
//     searched: other top-level keys of the response are reached through
//     {results.…} alone;
//  6. the call's variables (stripped X- headers).
//
// So for a plain name the agent's variables win over pre-call data, which
// wins over X- headers. A segment of digits indexes a JSON list
// ({results.data.phones.0}). Numbers render in JSON's shortest form,
// booleans as true/false; an object, a list or null is not a value and
// counts as missing.
//
// A missing variable renders as "" and its name is reported, so the caller
// can log it.
package template

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("template syntax")

// Template is a parsed template.
type Template struct {
	src   string
	parts []part
}

// part is literal text, or a variable reference when ref is set.
type part struct {
	text string
	ref  bool
}

// Parse parses src.
func Parse(src string) (*Template, error) {
	t := &Template{src: src}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.parts = append(t.parts, part{text: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '$' && i+1 < len(src) && src[i+1] == '$':
			lit.WriteByte('$')
			i += 2
		case c == '$' && i+1 < len(src) && isNameStart(src[i+1]):
			j := scanDollarName(src, i+1)
			flush()
			t.parts = append(t.parts, part{text: src[i+1 : j], ref: true})
			i = j
		case c == '{' && i+1 < len(src) && src[i+1] == '{':
			lit.WriteByte('{')
			i += 2
		case c == '{':
			end := strings.IndexAny(src[i+1:], "{}")
			if end < 0 || src[i+1+end] == '{' {
				return nil, fmt.Errorf("%w: unclosed '{' at byte %d of %q (write {{ for a literal brace)", ErrSyntax, i, src)
			}
			name := strings.TrimSpace(src[i+1 : i+1+end])
			if err := checkBraceName(name); err != nil {
				return nil, fmt.Errorf("%w: %w at byte %d of %q", ErrSyntax, err, i, src)
			}
			flush()
			t.parts = append(t.parts, part{text: name, ref: true})
			i += end + 2
		case c == '}' && i+1 < len(src) && src[i+1] == '}':
			lit.WriteByte('}')
			i += 2
		default:
			lit.WriteByte(c)
			i++
		}
	}
	flush()
	return t, nil
}

func isNameStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func isNameChar(c byte) bool { return isNameStart(c) || c >= '0' && c <= '9' }

// scanDollarName returns the end of a $name that starts at i: name
// characters, and dots that are followed by a name character.
func scanDollarName(s string, i int) int {
	for i < len(s) {
		switch {
		case isNameChar(s[i]):
			i++
		case s[i] == '.' && i+1 < len(s) && isNameChar(s[i+1]):
			i++
		default:
			return i
		}
	}
	return i
}

func checkBraceName(name string) error {
	if name == "" {
		return errors.New("empty variable name in {}")
	}
	for _, seg := range strings.Split(name, ".") {
		if seg == "" {
			return fmt.Errorf("variable name %q has an empty path segment", name)
		}
		for i := 0; i < len(seg); i++ {
			if !isNameChar(seg[i]) && seg[i] != '-' {
				return fmt.Errorf("variable name %q: character %q not allowed (letters, digits, '_', '-', '.')", name, seg[i])
			}
		}
	}
	return nil
}

// String returns the source of t.
func (t *Template) String() string { return t.src }

// Vars returns the variable names t refers to, in order of appearance.
func (t *Template) Vars() []string {
	var out []string
	for _, p := range t.parts {
		if p.ref {
			out = append(out, p.text)
		}
	}
	return out
}

// Render renders t with the variables of s. It returns the value and the
// names of the variables it did not find (each once, in order), which
// rendered as "".
func (t *Template) Render(s Scope) (string, []string) {
	var b strings.Builder
	var missing []string
	for _, p := range t.parts {
		if !p.ref {
			b.WriteString(p.text)
			continue
		}
		v, ok := s.Lookup(p.text)
		if !ok {
			if !contains(missing, p.text) {
				missing = append(missing, p.text)
			}
			continue
		}
		b.WriteString(v)
	}
	return b.String(), missing
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Scope is the variables a template sees: layers in order of precedence,
// the first layer that has a name wins. Values are strings, numbers, bools,
// or nested maps (map[string]any or map[string]string) for dotted paths.
type Scope []map[string]any

// NewScope returns a scope of layers, highest precedence first.
func NewScope(layers ...map[string]any) Scope { return Scope(layers) }

// Call is the variables of a call by source; Scope layers them in the
// router's order of precedence (see the package documentation).
type Call struct {
	// System holds call_id, caller_number, callee_number,
	// from_phone_number and to_phone_number.
	System map[string]string
	// Agent is HandoffRequested.variables.
	Agent map[string]string
	// Rules are the variables rules set.
	Rules map[string]string
	// State is the call's state, reached as {state.name}.
	State map[string]string
	// Results is the pre-call webhook's JSON object, reached as
	// {results.…}; its "data" object also serves plain names. Nil: none.
	Results map[string]any
	// Headers are the stripped X- headers (CallStarted.variables).
	Headers map[string]string
}

// Scope returns the call's variables, highest precedence first.
func (c Call) Scope() Scope {
	results := c.Results
	if results == nil {
		results = map[string]any{}
	}
	data, _ := results["data"].(map[string]any)
	return NewScope(
		Strings(c.System),
		Strings(c.Agent),
		Strings(c.Rules),
		map[string]any{"state": Strings(c.State), "results": results},
		data,
		Strings(c.Headers),
	)
}

// Strings turns a string map into a scope layer.
func Strings(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Normalize is how names compare: lowercased, '-' mapped to '_'.
func Normalize(name string) string {
	return strings.ReplaceAll(strings.ToLower(name), "-", "_")
}

// Lookup finds a name (possibly a dotted path) and renders its value.
func (s Scope) Lookup(name string) (string, bool) {
	for _, layer := range s {
		if v, ok := lookupLayer(layer, name); ok {
			return v, true
		}
	}
	return "", false
}

func lookupLayer(layer map[string]any, name string) (string, bool) {
	if v, ok := key(layer, name); ok {
		if str, ok := scalar(v); ok {
			return str, true
		}
	}
	if !strings.Contains(name, ".") {
		return "", false
	}
	var cur any = layer
	for _, seg := range strings.Split(name, ".") {
		var ok bool
		if cur, ok = step(cur, seg); !ok {
			return "", false
		}
	}
	return scalar(cur)
}

// key finds name in m: exactly, else by normalised name (smallest key wins).
func key(m map[string]any, name string) (any, bool) {
	if v, ok := m[name]; ok {
		return v, true
	}
	want := Normalize(name)
	var keys []string
	for k := range m {
		if Normalize(k) == want {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, false
	}
	sort.Strings(keys)
	return m[keys[0]], true
}

func asMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case map[string]string:
		return Strings(m), true
	}
	return nil, false
}

// step walks one path segment into a map, or into a list by index.
func step(cur any, seg string) (any, bool) {
	if m, ok := asMap(cur); ok {
		return key(m, seg)
	}
	list, ok := cur.([]any)
	if !ok {
		return nil, false
	}
	i, err := strconv.Atoi(seg)
	if err != nil || i < 0 || i >= len(list) || seg != strconv.Itoa(i) {
		return nil, false
	}
	return list[i], true
}

// scalar renders a leaf value; maps and nil are not renderable.
func scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case int:
		return strconv.Itoa(x), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case uint32:
		return strconv.FormatUint(uint64(x), 10), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case fmt.Stringer:
		return x.String(), true
	}
	return "", false
}
