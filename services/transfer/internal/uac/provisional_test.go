package uac

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func response(code, reason, callID, cseq string) string {
	return "SIP/2.0 " + code + " " + reason + "\r\n" +
		"Via: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bK1\r\n" +
		"To: <sip:agent@example.com>;tag=t1\r\n" +
		"Call-ID: " + callID + "\r\n" +
		"CSeq: " + cseq + "\r\n" +
		"Content-Length: 0\r\n\r\n"
}

// One stream read holding a 180 and its 200: the 180 is recorded for its
// watched Call-ID, the first one only, and nothing for others.
func TestProvisionalsRecordTheWireOrder(t *testing.T) {
	p := newProvisionals()
	seen, stop := p.watch("leg-1")
	_, ok := seen()
	require.False(t, ok, "nothing before a read")

	p.observe([]byte(response("180", "Ringing", "leg-1", "1 INVITE") + response("200", "OK", "leg-1", "1 INVITE")))
	got, ok := seen()
	require.True(t, ok)
	require.Equal(t, Provisional{Code: 180, Reason: "Ringing"}, got)

	p.observe([]byte(response("183", "Session Progress", "leg-1", "1 INVITE")))
	got, _ = seen()
	require.Equal(t, 180, got.Code, "the first 18x is kept")

	stop()
	_, ok = seen()
	require.False(t, ok, "stop forgets the leg")
	p.observe([]byte(response("180", "Ringing", "leg-1", "1 INVITE")))
	require.Empty(t, p.watched, "an unwatched Call-ID is not kept")
}

func TestProvisionalsIgnoreWhatIsNotAnInvites18x(t *testing.T) {
	compact := "SIP/2.0 180 Ringing\r\ni: leg-c\r\ncseq: 7 invite\r\n\r\n"
	for name, tc := range map[string]struct {
		data   string
		callID string
		want   bool
	}{
		"compact Call-ID, any case":        {compact, "leg-c", true},
		"a 183 with a reason of two words": {response("183", "Session Progress", "leg-2", "1 INVITE"), "leg-2", true},
		"a 100 Trying":                     {response("100", "Trying", "leg-3", "1 INVITE"), "leg-3", false},
		"a 180 to another method":          {response("180", "Ringing", "leg-4", "2 PRACK"), "leg-4", false},
		"a 180 cut off by the read":        {response("180", "Ringing", "leg-5", "1 INVITE")[:60], "leg-5", false},
		"not at the start of a line":       {"SIP/2.0 200 OK\r\nCall-ID: leg-6\r\nCSeq: 1 INVITE\r\n\r\nxSIP/2.0 180 Ringing\r\nCall-ID: leg-6\r\nCSeq: 1 INVITE\r\n\r\n", "leg-6", false},
		"garbage status":                   {"SIP/2.0 18x Ringing\r\nCall-ID: leg-7\r\nCSeq: 1 INVITE\r\n\r\n", "leg-7", false},
	} {
		t.Run(name, func(t *testing.T) {
			p := newProvisionals()
			seen, stop := p.watch(tc.callID)
			defer stop()
			p.observe([]byte(tc.data))
			_, ok := seen()
			require.Equal(t, tc.want, ok)
		})
	}
}

func FuzzProvisionalsObserve(f *testing.F) {
	f.Add([]byte(response("180", "Ringing", "leg-1", "1 INVITE")))
	f.Add([]byte("SIP/2.0 18"))
	f.Add([]byte("\r\nSIP/2.0 189 x\r\ni:a\r\ncseq:1 INVITE\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := newProvisionals()
		_, stop := p.watch("leg-1")
		defer stop()
		p.observe(data) // must not panic
	})
}
