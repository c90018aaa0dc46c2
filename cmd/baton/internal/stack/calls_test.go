package stack

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestReadReferLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "refer.log")
	log := "REFER call_id=1-10321@127.0.0.1 x_customer_id=CUST-10042 x_intent=billing_dispute x_language=de-DE via=127.0.0.1:5070 refer_to=<sip:+4930123456@agents.example.com?X-Customer-Id=CUST-10042&X-Intent=a%20b>\n" +
		"HANGUP by=sbc\n" +
		"REINVITE call_id=3-1@127.0.0.1 caller=+4930555000105 x_intent=fraud_report via=127.0.0.1:5070 bridge_port=30000 pt=0\n" +
		"BRIDGE_HANGUP call_id=3-1@127.0.0.1 by=caller\n" +
		"HANDBACK call_id=4-1@127.0.0.1 caller=+4930555000106 via=127.0.0.1:5070 x_handback_reason=cancel_subscription\n" +
		"REFER_TIMEOUT call_id=2-1@127.0.0.1\n"
	require.NoError(t, os.WriteFile(path, []byte(log), 0o600))
	refers, endings, failures, err := readReferLog(path)
	require.NoError(t, err)
	require.Len(t, refers, 1)
	require.Equal(t, "1-10321@127.0.0.1", refers[0].CallID)
	require.Equal(t, "CUST-10042", refers[0].Sent["x_customer_id"])
	require.Equal(t, "de-DE", refers[0].Sent["x_language"])
	require.Equal(t, "<sip:+4930123456@agents.example.com?X-Customer-Id=CUST-10042&X-Intent=a%20b>", refers[0].ReferTo)
	require.Equal(t, []string{"REFER_TIMEOUT call_id=2-1@127.0.0.1"}, failures, "the demo's endings are not failures")
	require.Equal(t, []Ending{
		{Kind: "REINVITE", CallID: "3-1@127.0.0.1", Fields: map[string]string{"caller": "+4930555000105", "x_intent": "fraud_report",
			"via": "127.0.0.1:5070", "bridge_port": "30000", "pt": "0"}},
		{Kind: "HANDBACK", CallID: "4-1@127.0.0.1", Fields: map[string]string{"caller": "+4930555000106", "via": "127.0.0.1:5070",
			"x_handback_reason": "cancel_subscription"}},
	}, endings)

	refers, _, failures, err = readReferLog(filepath.Join(t.TempDir(), "missing.log"))
	require.NoError(t, err)
	require.Empty(t, refers)
	require.Empty(t, failures)
}

func TestReadShortMessageLog(t *testing.T) {
	at := 1796425700.5
	line := func(dir, callID, cseq, first string) string {
		at += 0.25
		return "2026-12-04\t23:08:20.945805\t" + strconv.FormatFloat(at, 'f', 6, 64) + "\t" + dir + "\t" + callID + "\tCSeq:" + cseq + "\t" + first + "\n"
	}
	log := line("S", "1-1@h", "1 INVITE", "INVITE sip:service@127.0.0.1:5060 SIP/2.0") +
		line("S", "1-1@h", "1 INVITE", "INVITE sip:service@127.0.0.1:5060 SIP/2.0") + // retransmission
		line("R", "1-1@h", "1 INVITE", "SIP/2.0 100 Trying") +
		line("S", "2-1@h", "1 INVITE", "INVITE sip:service@127.0.0.1:5060 SIP/2.0") +
		line("R", "1-1@h", "1 INVITE", "SIP/2.0 200 OK") +
		line("R", "1-1@h", "1 INVITE", "SIP/2.0 200 OK") + // retransmitted 200
		line("S", "1-1@h", "1 ACK", "ACK sip:ingress@127.0.0.1:5060 SIP/2.0") +
		line("R", "2-1@h", "1 INVITE", "SIP/2.0 503 Service Unavailable") +
		line("S", "3-1@h", "1 INVITE", "INVITE sip:service@127.0.0.1:5060 SIP/2.0") +
		line("S", "1-1@h", "3 BYE", "BYE sip:ingress@127.0.0.1:5060 SIP/2.0") +
		line("R", "1-1@h", "3 BYE", "SIP/2.0 481 Call/Transaction Does Not Exist") +
		line("R", "9-9@h", "1 INVITE", "SIP/2.0 200 OK") // never sent: ignored
	path := filepath.Join(t.TempDir(), "shortmessages.log")
	require.NoError(t, os.WriteFile(path, []byte(log), 0o600))
	placed, answered, refused, over, err := readShortMessageLog(path)
	require.NoError(t, err)
	require.Equal(t, []string{"1-1@h", "2-1@h", "3-1@h"}, placed)
	require.Equal(t, []string{"1-1@h"}, answered)
	require.Equal(t, map[int]int{503: 1}, refused)
	require.Equal(t, 2*time.Second, over)
}

func TestReadSIPpStats(t *testing.T) {
	// SIPp's -trace_stat file: a header row, then a row every -fd
	// seconds and one at the end; the counters are the last row's.
	csv := "StartTime;SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C);Retransmissions(C);\n" +
		"2026-12-05 08:14:25;2;2;0;0;0;\n" +
		"2026-12-05 08:15:20;3;4987;1;13;7;\n"
	path := filepath.Join(t.TempDir(), "stats.csv")
	require.NoError(t, os.WriteFile(path, []byte(csv), 0o600))
	stats, err := readSIPpStats(path)
	require.NoError(t, err)
	require.Equal(t, 4987, stats["SuccessfulCall(C)"])
	require.Equal(t, 13, stats["FailedCall(C)"])
	require.Equal(t, 7, stats["Retransmissions(C)"])

	require.NoError(t, os.WriteFile(path, []byte("StartTime;SuccessfulCall(C);\n1;2;\n"), 0o600))
	_, err = readSIPpStats(path)
	require.ErrorContains(t, err, "no column FailedCall(C)")
}
