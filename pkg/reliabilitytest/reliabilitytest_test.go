package reliabilitytest

import (
	"strings"
	"testing"
)

type captured struct{ lines []string }

func (c *captured) Helper()         {}
func (c *captured) Log(args ...any) { c.lines = append(c.lines, args[0].(string)) }

func TestReportKeepsOneLinePerRow(t *testing.T) {
	var c captured
	Report(&c, Row{Item: 5, Test: "TestX", Load: "1000 calls\n20/s", Faults: "20% loss | both ways", Inputs: "sipp", Lost: "nothing"})
	if len(c.lines) != 1 {
		t.Fatalf("got %d lines", len(c.lines))
	}
	got := c.lines[0]
	if strings.ContainsAny(got, "\r\n") {
		t.Fatalf("row spans lines: %q", got)
	}
	fields := strings.Split(strings.TrimPrefix(got, Prefix), "|")
	want := []string{"5", "TestX", "1000 calls 20/s", "20% loss / both ways", "sipp", "nothing"}
	if strings.Join(fields, ",") != strings.Join(want, ",") {
		t.Fatalf("fields %q, want %q", fields, want)
	}
}
