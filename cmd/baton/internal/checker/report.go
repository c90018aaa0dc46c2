package checker

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/baton-voice/baton/cmd/baton/internal/termsafe"
)

// maxListed bounds the findings listed per kind; the counts are exact.
const maxListed = 20

// Write prints the report: the records per topic, the call figures, the
// count of findings per kind, then the findings themselves (the first
// maxListed of each kind) and a last line OK or FAILED. Topics, types and
// findings (call ids, keys) are printed through termsafe.
func (r Report) Write(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "records read: %d (read_committed, up to the last stable offsets)\n", r.Records)
	for _, t := range r.Topics {
		var types []string
		for _, typ := range slices.Sorted(maps.Keys(t.ByType)) {
			name := typ
			if name == "" {
				name = "undecodable"
			}
			types = append(types, fmt.Sprintf("%s %d", name, t.ByType[typ])) // escaped below
		}
		fmt.Fprint(&b, termsafe.Sprintf("  %-24s %2d partitions %7d records", t.Topic, t.Partitions, t.Records))
		if t.AbortedWithheld > 0 {
			fmt.Fprintf(&b, " (+%d aborted, withheld)", t.AbortedWithheld)
		}
		if len(types) > 0 {
			fmt.Fprint(&b, termsafe.Sprintf(": %s", strings.Join(types, ", ")))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "calls: %d started, %d ended; commands: %d decided, %d executed (ACCEPTED)\n",
		r.Started, r.Ended, r.Commands, r.Executed)
	if r.AcknowledgedCalls > 0 || r.AcknowledgedEvents > 0 {
		fmt.Fprintf(&b, "acknowledged: %d calls, %d events\n", r.AcknowledgedCalls, r.AcknowledgedEvents)
	}
	for _, k := range kinds {
		fmt.Fprintf(&b, "%-13s %d\n", string(k)+":", r.Count(k))
	}
	for _, k := range kinds {
		listed := 0
		for _, f := range r.Findings {
			if f.Kind != k {
				continue
			}
			if listed == maxListed {
				fmt.Fprintf(&b, "  ... %d more %s findings\n", r.Count(k)-maxListed, k)
				break
			}
			fmt.Fprint(&b, termsafe.Sprintf("  %s\n", f.String()))
			listed++
		}
	}
	if r.OK() {
		b.WriteString("OK\n")
	} else {
		fmt.Fprintf(&b, "FAILED: %d findings\n", len(r.Findings))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ReadCallIDs reads Call-IDs one per line; blank lines and lines starting
// with # are skipped, surrounding space is trimmed.
func ReadCallIDs(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read call ids: %w", err)
	}
	return out, nil
}
