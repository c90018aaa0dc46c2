package numbers

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
)

func TestNormalize(t *testing.T) {
	cases := []struct {
		raw, region, want string
	}{
		{"+15550100", "", "+15550100"},
		{"+1 (415) 555-0100", "", "+14155550100"},
		{"4155550100", "US", "+14155550100"},
		{"(415) 555-0100", "US", "+14155550100"},
		{"030 1234567", "DE", "+49301234567"},
		{"004930123456", "DE", "+4930123456"},
		{"4155550100", "", "4155550100"}, // no region: national numbers stay raw
		{"1000", "US", "1000"},           // an extension is not a possible number
		{"alice", "US", "alice"},
		{"anonymous", "", "anonymous"},
		{"", "US", ""},
	}
	for _, tc := range cases {
		t.Run(tc.raw+"/"+tc.region, func(t *testing.T) {
			require.Equal(t, tc.want, Normalize(tc.raw, tc.region))
		})
	}
}

func TestUser(t *testing.T) {
	cases := map[string]string{
		"sip:+15550100@carrier.example.com":       "+15550100",
		"sip:alice@10.0.0.1:5060;user=phone":      "alice",
		"sip:+1555%2D0100;npdi@example.com":       "+1555-0100",
		"tel:+15550100;phone-context=example.com": "+15550100",
		"sips:bob:secret@example.com":             "bob",
		"sip:10.0.0.1":                            "",
		"http://example.com/":                     "",
	}
	for uri, want := range cases {
		require.Equal(t, want, User(uri), uri)
	}
}

func request(t *testing.T, extra string) *sip.Request {
	t.Helper()
	raw := "INVITE sip:4155550199@192.0.2.1 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK1\r\n" +
		"From: \"Caller\" <sip:anonymous@anonymous.invalid>;tag=1\r\n" +
		"To: <sip:+14155550123@baton.example.com>\r\n" +
		"Call-ID: n1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n" + extra + "Content-Length: 0\r\n\r\n"
	msg, err := sip.NewParser().ParseSIP([]byte(raw))
	require.NoError(t, err)
	return msg.(*sip.Request)
}

func TestPick(t *testing.T) {
	pai := "P-Asserted-Identity: \"Caller\" <sip:4155550100@carrier.example.com>, <tel:+14155550100>\r\n"
	rpid := "Remote-Party-ID: \"C\" <sip:+442071838750@gw.example.com>;party=calling;privacy=off\r\n"
	div := "Diversion: <sip:+14155550177@x.example.com>;reason=unconditional\r\nDiversion: <sip:4155550166@y.example.com>;reason=user-busy\r\n"
	cases := []struct {
		name, extra string
		sources     []Source
		want        Number
	}{
		{"from as today", "", []Source{From}, Number{E164: "anonymous", Raw: "anonymous", Source: From}},
		{"to", "", []Source{To}, Number{E164: "+14155550123", Raw: "+14155550123", Source: To}},
		{"pai first", pai, []Source{PAI, From}, Number{E164: "+14155550100", Raw: "4155550100", Source: PAI}},
		{"pai missing falls back", "", []Source{PAI, RPID, From}, Number{E164: "anonymous", Raw: "anonymous", Source: From}},
		{"rpid", rpid, []Source{RPID}, Number{E164: "+442071838750", Raw: "+442071838750", Source: RPID}},
		{"diversion is the oldest entry", div, []Source{Diversion, To}, Number{E164: "+14155550166", Raw: "4155550166", Source: Diversion}},
		{"request uri", "", []Source{RequestURI}, Number{E164: "+14155550199", Raw: "4155550199", Source: RequestURI}},
		{"nothing", "", []Source{PAI}, Number{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, Pick(request(t, tc.extra), tc.sources, "US"))
		})
	}
}

// TestPickRefusesControlCharacters: a user part that holds control
// characters once decoded, whether percent-encoded or sent raw behind a
// quoted-pair backslash, is never a number; Pick falls through to the
// next source and reports the refusal (issue 14, finding 9).
func TestPickRefusesControlCharacters(t *testing.T) {
	owned := "%1b%5b2J%1b%5d0%3bowned%07" // "\x1b[2J\x1b]0;owned\a" once decoded
	cases := []struct {
		name, to, from string
	}{
		{"percent-encoded in To", "<sip:" + owned + "@baton.example.com>", ""},
		{"quoted-pair in name-addr", "<sip:\\\x1b%5b2J@baton.example.com>", ""},
		{"quoted-pair in addr-spec", "sip:\\\x1b%5b2J\\\a@baton.example.com", ""},
		{"tel URI", "<tel:%1b%5b2J>", ""},
		{"C1 control (CSI)", "<sip:%c2%9b2J@baton.example.com>", ""},
		{"not UTF-8", "<sip:%9b2J@baton.example.com>", ""},
		{"NUL", "<sip:+1555%000100@baton.example.com>", ""},
		{"bidirectional override (Cf)", "<sip:+1555%e2%80%ae0100@baton.example.com>", ""},
		{"zero-width space (Cf)", "<sip:+1555%e2%80%8b0100@baton.example.com>", ""},
		{"percent-encoded in From", "<sip:+14155550123@baton.example.com>", "<sip:" + owned + "@carrier.example.com>;tag=1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := request(t, "")
			req.ReplaceHeader(sip.NewHeader("To", tc.to))
			if tc.from != "" {
				req.ReplaceHeader(sip.NewHeader("From", tc.from))
			}
			msg, err := sip.NewParser().ParseSIP([]byte(req.String()))
			require.NoError(t, err)
			req = msg.(*sip.Request)

			src := To
			if tc.from != "" {
				src = From
			}
			got := Pick(req, []Source{src, RequestURI}, "US")
			require.Equal(t, Number{E164: "+14155550199", Raw: "4155550199", Source: RequestURI, Refused: []Source{src}}, got,
				"the refused source is skipped, the next one used")
			got = Pick(req, []Source{src}, "US")
			require.Equal(t, Number{Refused: []Source{src}}, got, "no source left: no number, as for one without a user part")
		})
	}
	for _, ok := range []string{"+14155550100", "(415) 555-0100", "alice", "Jürgen", "anonymous"} {
		require.True(t, Clean(ok), ok)
	}
	for _, bad := range []string{"\x1b[2J", "a\tb", "a\nb", "\x7f", "\u009b", "\xff", "\x00"} {
		require.False(t, Clean(bad), "%q", bad)
	}
}

func TestValidRegion(t *testing.T) {
	require.NoError(t, ValidRegion(""))
	require.NoError(t, ValidRegion("de"))
	require.Error(t, ValidRegion("XX"))
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"+15550100", "4155550100", "030 1234567", "1000", "+", "++1", "+999999999999999999999", "tel:+1"} {
		f.Add(s, "US")
		f.Add(s, "DE")
	}
	f.Fuzz(func(t *testing.T, raw, region string) {
		got := Normalize(raw, region)
		if got != raw && !strings.HasPrefix(got, "+") {
			t.Fatalf("Normalize(%q, %q) = %q: neither raw nor E.164", raw, region, got)
		}
		if got != raw && strings.Trim(got[1:], "0123456789") != "" {
			t.Fatalf("Normalize(%q, %q) = %q: not digits", raw, region, got)
		}
	})
}
