package stack

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPrintHandoffsEscapesControlCharacters: the demo's summary prints
// numbers and X- values read back from ClickHouse escaped (issue 14,
// finding 9); a tab or newline in a value cannot break the table either.
func TestPrintHandoffsEscapesControlCharacters(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, PrintHandoffs(&out, []HandoffRow{{CallID: "c1", CallerNumber: "+15550199",
		CalleeNumber: "\x1b[2J\x1b]0;owned\a", CustomerID: "C\t1", Intent: "a\nb", Status: "succeeded", SIPCode: 200}}))
	require.NotContains(t, out.String(), "\x1b")
	require.NotContains(t, out.String(), "\a")
	require.Contains(t, out.String(), `\x1b[2J\x1b]0;owned\a  C\t1`)
	require.Contains(t, out.String(), `a\nb`)
	require.Equal(t, 2, bytes.Count(out.Bytes(), []byte("\n")), "a header and one row:\n%s", out.String())
}
