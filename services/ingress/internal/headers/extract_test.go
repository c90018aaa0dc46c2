package headers

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/sipx"
)

func parse(tb testing.TB, raw []byte) *sip.Request {
	tb.Helper()
	msg, err := sip.NewParser().ParseSIP(raw)
	require.NoError(tb, err)
	req, ok := msg.(*sip.Request)
	require.True(tb, ok)
	return req
}

func crlf(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }

func TestExtractCompactInvite(t *testing.T) {
	raw, err := os.ReadFile("testdata/compact-invite.sip")
	require.NoError(t, err)
	r := Extract(parse(t, raw).Headers())

	var names []string
	for _, h := range r.Headers {
		names = append(names, h.GetName())
	}
	require.Equal(t, []string{
		"Via", "Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq", "Contact",
		"Supported", "Event", "Record-Route", "Record-Route", "X-Customer-Id", "x-intent", "Content-Type", "Content-Length",
	}, names)
	require.Equal(t, map[string]string{"Customer-Id": "C-1001", "intent": "billing"}, r.Variables)
	require.Zero(t, r.Oversized)
}

func TestExtract(t *testing.T) {
	long := strings.Repeat("v", sipx.MaxHeaderLine-len("X-Fits: "))
	cases := []struct {
		name      string
		headers   string
		vars      map[string]string
		oversized uint32
		skipped   []string
	}{
		{
			name:    "prefix stripped, case kept, first value wins",
			headers: "X-Customer-Id: C-1\nx-customer-id: C-2\nX-Under_Score: u\nx-intent: billing\n",
			vars:    map[string]string{"Customer-Id": "C-1", "Under_Score": "u", "intent": "billing"},
		},
		{
			name:    "bad names skipped",
			headers: "X-Bad.Name: 1\nX-: 2\nX-Good: 3\n",
			vars:    map[string]string{"Good": "3"},
			skipped: []string{"X-Bad.Name"},
		},
		{
			name:    "bare LF inside a value is not a line end for sipgo",
			headers: "X-Inject: a<LF>Refer-To: sip:evil\nX-Ok: 1\n",
			vars:    map[string]string{"Ok": "1"},
			skipped: []string{"X-Inject"},
		},
		{
			name:    "NUL in value skipped",
			headers: "X-Nul: a\x00b\n",
			vars:    map[string]string{},
			skipped: []string{"X-Nul"},
		},
		{
			name:      "line over 1024 bytes flagged, still a variable",
			headers:   "X-Fits: " + long + "\nX-Long: " + long + "v\n",
			vars:      map[string]string{"Fits": long, "Long": long + "v"},
			oversized: 1,
		},
		{
			name:    "non-custom headers are not variables",
			headers: "Xylophone: 1\nP-Asserted-Identity: <sip:+15550100@carrier>\n",
			vars:    map[string]string{},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := "INVITE sip:b@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-1\nCall-ID: c\nCSeq: 1 INVITE\n" +
				tc.headers + "Content-Length: 0\n\n"
			r := Extract(parse(t, []byte(strings.ReplaceAll(string(crlf(raw)), "<LF>", "\n"))).Headers())
			require.Equal(t, tc.vars, r.Variables)
			require.Equal(t, tc.oversized, r.Oversized)
			var skipped []string
			for _, s := range r.Skipped {
				skipped = append(skipped, s.Name)
				require.True(t, errors.Is(s.Err, ErrVariableName) || errors.Is(s.Err, sipx.ErrHeaderValue), s.Err)
			}
			require.Equal(t, tc.skipped, skipped)
			for _, h := range r.Headers {
				require.Equal(t, sipx.LineLen(h.GetName(), h.GetValue()) > sipx.MaxHeaderLine, h.GetOversized(), h.GetName())
			}
		})
	}
}

func TestValue(t *testing.T) {
	req := parse(t, crlf("NOTIFY sip:b@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-1\no: refer;id=3\nSubscription-State: active\nContent-Length: 0\n\n"))
	require.Equal(t, "refer;id=3", Value(req.Headers(), "Event"))
	require.Equal(t, "active", Value(req.Headers(), "subscription-state"))
	require.Empty(t, Value(req.Headers(), "Reason"))
}

// FuzzExtract parses arbitrary bytes as SIP and extracts them: it must not
// panic, and no variable may carry CR, LF or NUL or have a bad name.
func FuzzExtract(f *testing.F) {
	if raw, err := os.ReadFile("testdata/compact-invite.sip"); err == nil {
		f.Add(raw)
	}
	f.Add(crlf("INVITE sip:b@h SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK-1\nCSeq: 1 INVITE\nX-A: a\nX-A: b\nx-b: c\n\n"))
	f.Add([]byte("INVITE sip:b@h SIP/2.0\r\nX-Fold: a\r\n b\r\n\tc\r\nX-Cr: a\rb\r\nX-Lf: a\nb\r\n\r\n"))
	f.Add([]byte("INVITE sip:b@h SIP/2.0\r\nX-Nul: a\x00b\r\nX-: e\r\nX-\xff: f\r\n\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		msg, err := sip.NewParser().ParseSIP(raw)
		if err != nil || msg == nil {
			return
		}
		req, ok := msg.(*sip.Request)
		if !ok {
			return
		}
		r := Extract(req.Headers())
		if len(r.Headers) != len(req.Headers()) {
			t.Fatalf("%d headers in, %d out", len(req.Headers()), len(r.Headers))
		}
		for k, v := range r.Variables {
			if strings.ContainsAny(k, "\r\n\x00") || strings.ContainsAny(v, "\r\n\x00") {
				t.Fatalf("control character in variable %q=%q", k, v)
			}
			if !customName.MatchString("X-" + k) {
				t.Fatalf("variable name %q does not come from a valid X- header", k)
			}
		}
	})
}
