// Package reliabilitytest lets the reliability suite (`make
// test-reliability`) report what each test held, injected and lost in one
// line format, so the Makefile can gather the lines into the table that
// docs/reliability.md shows.
package reliabilitytest

import (
	"fmt"
	"strings"
)

// Prefix starts every row line; the Makefile greps for it.
const Prefix = "RELIABILITY|"

// Row is one line of the reliability table.
type Row struct {
	// Item is the row's item in docs/reliability.md (1-8 the reliability
	// issue's deliverables, 9 the security findings).
	Item int
	// Test names the test that measured the row.
	Test string
	// Load is what was held: calls, rates, packets.
	Load string
	// Faults is what was injected: loss, kills, floods.
	Faults string
	// Inputs is what was sent: corpora, scanners, payloads.
	Inputs string
	// Lost is what was lost or went wrong, with numbers ("nothing" when
	// the test's criterion held).
	Lost string
}

// Logger is the part of testing.TB that Report needs.
type Logger interface {
	Helper()
	Log(args ...any)
}

// Line renders r as one pipe-separated line; pipes and newlines inside
// fields are replaced so a row stays one line.
func (r Row) Line() string {
	clean := strings.NewReplacer("|", "/", "\n", " ", "\r", " ")
	fields := []string{fmt.Sprint(r.Item), r.Test, r.Load, r.Faults, r.Inputs, r.Lost}
	for i, f := range fields {
		fields[i] = clean.Replace(strings.TrimSpace(f))
	}
	return Prefix + strings.Join(fields, "|")
}

// Report logs r through t (visible with go test -v, which the Makefile
// target uses).
func Report(t Logger, r Row) {
	t.Helper()
	t.Log(r.Line())
}
