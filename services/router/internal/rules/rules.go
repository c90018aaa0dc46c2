// Package rules compiles and evaluates routing-rule conditions written in
// CEL (https://cel.dev). A condition sees one call:
//
//	caller_number  string                 the caller, normalised (E.164 where possible)
//	callee_number  string                 the dialed number
//	sip_headers    map(string, list(string))  every INVITE header; names lower-cased
//	variables      map(string, string)    call variables; names normalised (lowercase, '-' → '_')
//	state          map(string, string)    the call's state (agent API, rule actions)
//	reason         string                 the handoff request's reason; "" when the call starts
//	time           timestamp              the time of the event being decided (never the wall clock)
//	results        map(string, dyn)       the pre-call webhook's JSON object ({} before it is folded)
//
// For example:
//
//	caller_number in ['+15551230001', '+15551230002']
//	callee_number.startsWith('+1800') && time.getHours('America/New_York') < 9
//	'x-tier' in sip_headers && sip_headers['x-tier'][0] == 'gold'
//	variables.customer_id != '' && reason == 'billing_dispute'
//	has(results.data) && results.data.account.tier == 'gold'
//
// A condition must have type bool; anything else is a compile error, so a
// broken rule fails at configuration load. An evaluation error (a missing
// map key, say) counts as no match; the caller logs it. The result depends
// only on the Input, so replaying the same events gives the same decisions.
package rules

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
)

// costLimit bounds the work one evaluation may do, so a rule cannot stall
// the decision loop (a comprehension over a huge header list, say).
const costLimit = 100_000

// ErrCompile is wrapped by every compile error.
var ErrCompile = errors.New("rule condition")

// Input is the call a condition is evaluated against. Build it once per
// decision and pass it to every rule: the CEL activation is made once.
type Input struct {
	CallerNumber string
	CalleeNumber string
	// SipHeaders maps a lower-cased header name to its values in order.
	SipHeaders map[string][]string
	// Variables maps a normalised variable name to its value.
	Variables map[string]string
	State     map[string]string
	Reason    string
	Time      time.Time
	// Results is the pre-call webhook's JSON object: strings, float64 or
	// int64 numbers, bools, nil, []any and map[string]any.
	Results map[string]any

	act map[string]any
}

// activation returns the CEL variables of in, built on first use.
func (in *Input) activation() map[string]any {
	if in.act == nil {
		in.act = map[string]any{
			"caller_number": in.CallerNumber,
			"callee_number": in.CalleeNumber,
			"sip_headers":   nonNil(in.SipHeaders),
			"variables":     nonNil(in.Variables),
			"state":         nonNil(in.State),
			"reason":        in.Reason,
			"time":          in.Time.UTC(),
			"results":       nonNil(in.Results),
		}
	}
	return in.act
}

// Invalidate drops the cached activation after a field changed (a rule's
// set action changed the variables or the state).
func (in *Input) Invalidate() { in.act = nil }

func nonNil[M ~map[string]V, V any](m M) M {
	if m == nil {
		return M{}
	}
	return m
}

// Env is the CEL environment of rule conditions. It is safe for
// concurrent use; make one and compile every rule with it.
type Env struct {
	env *cel.Env
}

// NewEnv declares the variables a condition may use.
func NewEnv() (*Env, error) {
	env, err := cel.NewEnv(
		cel.Variable("caller_number", cel.StringType),
		cel.Variable("callee_number", cel.StringType),
		cel.Variable("sip_headers", cel.MapType(cel.StringType, cel.ListType(cel.StringType))),
		cel.Variable("variables", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("state", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("reason", cel.StringType),
		cel.Variable("time", cel.TimestampType),
		cel.Variable("results", cel.MapType(cel.StringType, cel.DynType)),
	)
	if err != nil {
		return nil, fmt.Errorf("new CEL environment: %w", err)
	}
	return &Env{env: env}, nil
}

// Condition is a compiled rule condition. It is safe for concurrent use.
type Condition struct {
	src  string
	prog cel.Program
}

// Compile parses and type-checks expr, which must be a bool expression.
func (e *Env) Compile(expr string) (*Condition, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, fmt.Errorf("%w: empty expression", ErrCompile)
	}
	ast, iss := e.env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("%w: %s", ErrCompile, oneLine(iss.Err().Error()))
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("%w: %q has type %s, want bool", ErrCompile, expr, ast.OutputType())
	}
	prog, err := e.env.Program(ast, cel.CostLimit(costLimit))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCompile, err)
	}
	return &Condition{src: expr, prog: prog}, nil
}

// String returns the expression.
func (c *Condition) String() string { return c.src }

// Match evaluates the condition for in.
func (c *Condition) Match(in *Input) (bool, error) {
	out, _, err := c.prog.Eval(in.activation())
	if err != nil {
		return false, fmt.Errorf("evaluate %q: %w", c.src, err)
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("evaluate %q: result %v is not a bool", c.src, out.Value())
	}
	return b, nil
}

// oneLine folds CEL's multi-line error (message, source line, caret) into
// one line, so it fits a "file:line: field: problem" report.
func oneLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, " ")
}
