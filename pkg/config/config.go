// Package config loads a service's YAML configuration strictly: unknown
// fields are errors, and every validation error names the file, the line
// and the field, so an operator can fix a bad config without guessing.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// FieldError is a validation error about one field, named by its path in
// the document: "destinations[2].method".
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Errorf builds a FieldError.
func Errorf(path, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Validator is a configuration that can check itself. Validate returns nil
// or errors (joined with errors.Join) that are *FieldError where a field is
// to blame.
type Validator interface {
	Validate() error
}

// Load reads path into v, which holds the defaults on entry, then validates
// it. Errors carry "file:line: field: problem".
func Load(path string, v Validator) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, v)
}

// Parse is Load on bytes already read; name is used in errors.
func Parse(name string, data []byte, v Validator) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if len(doc.Content) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(v); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	verr := v.Validate()
	if verr == nil {
		return nil
	}
	var msgs []string
	for _, e := range flatten(verr) {
		var fe *FieldError
		if errors.As(e, &fe) {
			if line := lineOf(&doc, fe.Path); line > 0 {
				msgs = append(msgs, fmt.Sprintf("%s:%d: %s", name, line, fe.Error()))
				continue
			}
		}
		msgs = append(msgs, fmt.Sprintf("%s: %s", name, e.Error()))
	}
	return &InvalidError{Problems: msgs, err: verr}
}

// InvalidError lists every problem found in a configuration.
type InvalidError struct {
	Problems []string
	err      error
}

func (e *InvalidError) Error() string {
	return "invalid configuration:\n  " + strings.Join(e.Problems, "\n  ")
}

func (e *InvalidError) Unwrap() error { return e.err }

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// lineOf finds the line of a field path like "a.b[2].c" in a YAML
// document; it returns the line of the deepest node it could reach, or 0.
func lineOf(doc *yaml.Node, path string) int {
	if len(doc.Content) == 0 {
		return 0
	}
	n := doc.Content[0]
	line := 0
	for _, part := range splitPath(path) {
		next := child(n, part)
		if next == nil {
			return line
		}
		line = next.Line
		n = next.value
	}
	return line
}

type located struct {
	Line  int
	value *yaml.Node
}

func child(n *yaml.Node, part string) *located {
	if idx, err := strconv.Atoi(part); err == nil {
		if n.Kind == yaml.SequenceNode && idx >= 0 && idx < len(n.Content) {
			return &located{Line: n.Content[idx].Line, value: n.Content[idx]}
		}
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == part {
			return &located{Line: n.Content[i].Line, value: n.Content[i+1]}
		}
	}
	return nil
}

func splitPath(path string) []string {
	var parts []string
	for _, seg := range strings.Split(path, ".") {
		name, rest, _ := strings.Cut(seg, "[")
		if name != "" {
			parts = append(parts, name)
		}
		for rest != "" {
			var idx string
			idx, rest, _ = strings.Cut(rest, "]")
			parts = append(parts, idx)
			rest = strings.TrimPrefix(rest, "[")
		}
	}
	return parts
}
