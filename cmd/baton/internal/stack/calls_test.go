package stack

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReadReferLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "refer.log")
	log := "REFER call_id=1-10321@127.0.0.1 x_customer_id=CUST-10042 x_intent=billing_dispute x_language=de-DE via=127.0.0.1:5070 refer_to=<sip:+4930123456@agents.example.com?X-Customer-Id=CUST-10042&X-Intent=a%20b>\n" +
		"HANGUP by=sbc\n" +
		"REFER_TIMEOUT call_id=2-1@127.0.0.1\n"
	require.NoError(t, os.WriteFile(path, []byte(log), 0o600))
	refers, failures, err := readReferLog(path)
	require.NoError(t, err)
	require.Len(t, refers, 1)
	require.Equal(t, "1-10321@127.0.0.1", refers[0].CallID)
	require.Equal(t, "CUST-10042", refers[0].Sent["x_customer_id"])
	require.Equal(t, "de-DE", refers[0].Sent["x_language"])
	require.Equal(t, "<sip:+4930123456@agents.example.com?X-Customer-Id=CUST-10042&X-Intent=a%20b>", refers[0].ReferTo)
	require.Equal(t, []string{"REFER_TIMEOUT call_id=2-1@127.0.0.1"}, failures)

	refers, failures, err = readReferLog(filepath.Join(t.TempDir(), "missing.log"))
	require.NoError(t, err)
	require.Empty(t, refers)
	require.Empty(t, failures)
}
