package sipcheck

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
)

// corpus is the verdict for every RFC 4475 message in testdata: the status
// Check gives (0 = handed on), or drop. Where the RFC leaves a choice the
// comment says which one Baton takes.
var corpus = map[string]struct {
	status int
	drop   bool
}{
	"valid/dblreq":     {},
	"valid/esc01":      {},
	"valid/esc02":      {},
	"valid/escnull":    {},
	"valid/intmeth":    {},
	"valid/longreq":    {},
	"valid/lwsdisp":    {},
	"valid/mpart01":    {},
	"valid/noreason":   {},
	"valid/semiuri":    {},
	"valid/transports": {},
	"valid/unreason":   {},
	"valid/wsinv":      {},

	"invalid/badaspec":   {status: 400},
	"invalid/badbranch":  {status: 400},
	"invalid/baddate":    {status: 400},
	"invalid/baddn":      {status: 400},
	"invalid/badinv01":   {status: 400},
	"invalid/badvers":    {status: 505},
	"invalid/bcast":      {}, // a well-formed response; the edge drops every stray response
	"invalid/bext01":     {status: 420},
	"invalid/bigcode":    {drop: true},
	"invalid/clerr":      {status: 400},
	"invalid/cparam01":   {}, // RFC 4475 3.2.12: valid (REGISTER then gets 405)
	"invalid/cparam02":   {}, // 3.2.13: valid
	"invalid/escruri":    {status: 400},
	"invalid/insuf":      {status: 400},
	"invalid/inv2543":    {status: 400}, // 3.3.1 RFC 2543 syntax: no Max-Forwards; Baton does not serve RFC 2543 peers
	"invalid/invut":      {status: 415},
	"invalid/ltgtruri":   {status: 400},
	"invalid/lwsruri":    {status: 400},
	"invalid/lwsstart":   {status: 400},
	"invalid/mcl01":      {status: 400},
	"invalid/mismatch01": {status: 400},
	"invalid/mismatch02": {status: 400},
	"invalid/multi01":    {status: 400},
	"invalid/ncl":        {status: 400},
	"invalid/novelsc":    {status: 416},
	"invalid/quotbal":    {status: 400},
	"invalid/regaut01":   {}, // 3.2.7: well-formed; the method decides (405)
	"invalid/regbadct":   {status: 400},
	"invalid/regescrt":   {}, // 3.2.14: well-formed; the method decides (405)
	"invalid/scalar02":   {status: 400},
	"invalid/scalarlg":   {drop: true},
	"invalid/sdp01":      {status: 406},
	"invalid/test":       {drop: true}, // no Via to answer along
	"invalid/trws":       {status: 400},
	"invalid/unkscm":     {status: 416},
	"invalid/unksm2":     {}, // 3.2.4: unknown schemes outside the Request-URI are legal
	"invalid/zeromf":     {}, // 3.2.11: an endpoint processes Max-Forwards 0
}

func readCorpus(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("../../testdata/rfc4475/*/*.dat")
	require.NoError(t, err)
	out := map[string][]byte{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		name := filepath.Base(filepath.Dir(f)) + "/" + strings.TrimSuffix(filepath.Base(f), ".dat")
		out[name] = data
	}
	return out
}

func TestRFC4475(t *testing.T) {
	files := readCorpus(t)
	require.Len(t, files, len(corpus), "every corpus file needs a verdict")
	for name, data := range files {
		want, ok := corpus[name]
		require.True(t, ok, "no verdict for %s", name)
		t.Run(name, func(t *testing.T) {
			r := Check(data, DefaultPolicy())
			require.Equal(t, want.drop, r.Drop, "drop (detail %q)", r.Detail)
			if want.drop {
				require.Nil(t, Reply(data, r, "t", netip.AddrPort{}))
				return
			}
			require.Equal(t, want.status, r.Status, r.Detail)
			if r.OK() {
				require.Positive(t, r.Size)
				require.LessOrEqual(t, r.Size, len(data))
				// What Check hands on, sipgo parses.
				_, err := sip.NewParser().ParseSIP(data[:r.Size])
				require.NoError(t, err)
				return
			}
			// The reply echoes the request's Via, From, To, Call-ID and
			// CSeq as received (RFC 3261 8.2.6.2), malformed or not.
			res := string(Reply(data, r, "baton-tag", netip.MustParseAddrPort("192.0.2.9:5099")))
			require.True(t, strings.HasPrefix(res, fmt.Sprintf("SIP/2.0 %d %s\r\nVia: ", want.status, r.Reason)), res)
			require.Contains(t, res, ";received=192.0.2.9")
			require.True(t, strings.HasSuffix(res, "\r\nContent-Length: 0\r\n\r\n"), res)
			require.Equal(t, -1, badByte(strings.ReplaceAll(res, "\r\n", "")), "reply holds control characters")
		})
	}
}

// corpus5118 is Check's verdict for the IPv6 torture messages Baton wrote
// after RFC 5118 (testdata/rfc5118/README.md says what each tests): the
// status, 0 when handed on. The two SDP address-type mismatches pass
// Check; the offer/answer refuses them with 488.
var corpus5118 = map[string]int{
	"valid/ipv6-good": 0, "valid/port-ambiguous": 0, "valid/port-unambiguous": 0,
	"valid/via-received-bracketed": 0, "valid/via-received-bare": 0, "valid/ipv6-in-sdp": 0,
	"valid/mult-ip-in-header": 0, "valid/mult-ip-in-sdp": 0, "valid/ipv4-mapped": 0,
	"valid/abnf-two-colons": 0, "valid/abnf-three-colons": 0,

	"invalid/ipv6-bare-request-uri": 400, "invalid/ipv6-bare-contact": 400, "invalid/ipv6-bare-via": 400,
	"invalid/ipv6-bare-from": 400, "invalid/ipv6-two-double-colons": 400, "invalid/ipv6-unclosed": 400,
	"invalid/ipv6-port-no-colon": 400, "invalid/ipv6-zone": 400, "invalid/three-colons-no-ipv4": 400,
	"invalid/sdp-ip4-with-ipv6": 0, "invalid/sdp-ip6-with-ipv4": 0,
}

func TestRFC5118(t *testing.T) {
	files, err := filepath.Glob("../../testdata/rfc5118/*/*.dat")
	require.NoError(t, err)
	require.Len(t, files, len(corpus5118), "every corpus file needs a verdict")
	for _, f := range files {
		name := filepath.Base(filepath.Dir(f)) + "/" + strings.TrimSuffix(filepath.Base(f), ".dat")
		want, ok := corpus5118[name]
		require.True(t, ok, "no verdict for %s", name)
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		t.Run(name, func(t *testing.T) {
			r := Check(data, DefaultPolicy())
			require.False(t, r.Drop, r.Detail)
			require.Equal(t, want, r.Status, r.Detail)
			if r.OK() {
				_, err := sip.NewParser().ParseSIP(Canonical(data, r, true))
				require.NoError(t, err, "what Check hands on, sipgo parses")
			}
		})
	}
}

func TestIPv6References(t *testing.T) {
	for ref, ok := range map[string]bool{
		"2001:db8::10": true, "::1": true, "::ffff:192.0.2.1": true, "2001:db8::192.0.2.1": true,
		"2001:db8:::192.0.2.1": true, // RFC 5118 4.10: tolerated
		"2001:db8:::1":         false, "2001:db8::10::1": false, ":::192.0.2.1": false,
		"2001:db8::1:::192.0.2.1": false, "192.0.2.1": false, "fe80::1%25eth0": false, "": false,
		"2001:db8:::192.0.2": false, "2001:db8::g": false,
	} {
		require.Equal(t, ok, validIPv6Reference(ref), ref)
	}
	for hp, why := range map[string]string{
		"[2001:db8::10]": "", "[2001:db8::10]:5070": "", "example.com:5060": "", "192.0.2.1": "",
		"2001:db8::10": "has an IPv6 address without [] (RFC 3261 25.1)", "[2001:db8::10": "has an IPv6 reference without ]",
		"[2001:db8::10]:": "has an empty port", "[2001:db8::10]x": "has text after an IPv6 reference",
		"host:99999": "has a malformed port", "host:": "has an empty port", "[::1]:5o60": "has a malformed port",
		"a]b": "has a stray [ or ]",
	} {
		require.Equal(t, why, checkHostPort(hp), hp)
	}
}

func TestExtraHeaders(t *testing.T) {
	files := readCorpus(t)
	cases := []struct {
		file, header, value string
	}{
		{"invalid/bext01", "Unsupported", "nothingSupportsThis, nothingSupportsThisEither"},
		{"invalid/invut", "Accept", "application/sdp"},
		{"invalid/sdp01", "Accept", "application/sdp"},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			r := Check(files[tc.file], DefaultPolicy())
			require.Equal(t, []Header{{tc.header, tc.value}}, r.Extra)
			res := string(Reply(files[tc.file], r, "x", netip.AddrPort{}))
			require.Contains(t, res, tc.header+": "+tc.value+"\r\n")
		})
	}
}

const base = "INVITE sip:+15550200@192.0.2.1 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK-1;rport\r\n" +
	"Max-Forwards: 70\r\n" +
	"From: <sip:+15550100@192.0.2.2>;tag=a\r\n" +
	"To: <sip:+15550200@192.0.2.1>\r\n" +
	"Call-ID: c1\r\n" +
	"CSeq: 1 INVITE\r\n" +
	"Contact: <sip:a@192.0.2.2>\r\n"

func TestCheck(t *testing.T) {
	cases := []struct {
		name, msg string
		status    int
		drop      bool
	}{
		{"good", base + "Content-Length: 0\r\n\r\n", 0, false},
		{"bare lf in a value", base + "X-Evil: a\nInjected: b\r\nContent-Length: 0\r\n\r\n", 400, false},
		{"bare cr in a value", base + "X-Evil: a\rb\r\nContent-Length: 0\r\n\r\n", 400, false},
		{"nul in a value", base + "X-Evil: a\x00b\r\nContent-Length: 0\r\n\r\n", 400, false},
		// RFC 3261 25.1: a quoted-pair exists only inside a quoted string.
		{"escaped esc in a uri", strings.Replace(base, "To: <sip:+15550200@", "To: <sip:\\\x1b%5b2J@", 1) + "\r\n", 400, false},
		{"escaped esc in a value", base + "X-Evil: \\\x1b[2J\r\nContent-Length: 0\r\n\r\n", 400, false},
		{"escaped esc after a closed quote", base + "X-Evil: \"a\" \\\x1b[2J\r\nContent-Length: 0\r\n\r\n", 400, false},
		{"escaped backslash then esc", base + "X-Evil: \"a\\\\\x1b\"\r\nContent-Length: 0\r\n\r\n", 400, false},
		{"escaped esc in a quoted string", strings.Replace(base, "To: <sip:", "To: \"a\\\x1b\\\" b\" <sip:", 1) + "\r\n", 0, false},
		{"max-forwards not a number", strings.Replace(base, "Max-Forwards: 70", "Max-Forwards: ten", 1) + "\r\n", 400, false},
		{"missing max-forwards", strings.Replace(base, "Max-Forwards: 70\r\n", "", 1) + "\r\n", 400, false},
		{"tel request-uri", strings.Replace(base, "sip:+15550200@192.0.2.1 ", "tel:+15550200 ", 1) + "\r\n", 0, false},
		{"require supported none", base + "Require: 100rel\r\n\r\n", 420, false},
		{"body without type", base + "Content-Length: 3\r\n\r\nabc", 400, false},
		{"sdp body", base + "Content-Type: application/sdp\r\nContent-Length: 3\r\n\r\nv=0", 0, false},
		{"accept wildcard", base + "Accept: application/*\r\n\r\n", 0, false},
		{"ack never answered", strings.ReplaceAll(base, "INVITE", "ACK") + "Require: foo\r\n\r\n", 0, false},
		{"bad ack dropped", strings.Replace(strings.ReplaceAll(base, "INVITE", "ACK"), "CSeq: 1 ACK", "CSeq: 1 BYE", 1) + "\r\n", 400, true},
		{"no via dropped", strings.Replace(base, "Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK-1;rport\r\n", "", 1) + "\r\n", 400, true},
		{"garbage", "\x16\x03\x01\x02\x00\x01", 400, true},
		{"empty", "", 400, true},
		{"stray response", "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 INVITE\r\n\r\n", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Check([]byte(tc.msg), DefaultPolicy())
			require.Equal(t, tc.drop, r.Drop, r.Detail)
			if !tc.drop || tc.status != 0 {
				require.Equal(t, tc.status, r.Status, r.Detail)
			}
		})
	}
}

// TestInviteCallIDLimit: an INVITE whose Call-ID the event contract
// cannot carry as a subject is refused with 400 at the gate (issue 14,
// finding 10); one at the limit passes.
func TestInviteCallIDLimit(t *testing.T) {
	withCallID := func(msg, id string) []byte {
		return []byte(strings.Replace(msg, "Call-ID: c1", "Call-ID: "+id, 1) + "\r\n")
	}
	longest := strings.Repeat("i", events.MaxSubjectLen)
	require.Equal(t, events.MaxSubjectLen, DefaultPolicy().MaxInviteCallID)

	r := Check(withCallID(base, longest), DefaultPolicy())
	require.True(t, r.OK(), r.Detail)

	msg := withCallID(base, longest+"i")
	r = Check(msg, DefaultPolicy())
	require.False(t, r.Drop, r.Detail)
	require.Equal(t, 400, r.Status)
	require.Equal(t, "Call-ID Too Long", r.Reason)
	require.Equal(t, fmt.Sprintf("Call-ID is %d bytes, longer than the %d an event subject carries",
		events.MaxSubjectLen+1, events.MaxSubjectLen), r.Detail)
	res := string(Reply(msg, r, "t", netip.AddrPort{}))
	require.True(t, strings.HasPrefix(res, "SIP/2.0 400 Call-ID Too Long\r\n"), res)

	// Only a new call's Call-ID becomes an event subject.
	options := strings.NewReplacer("INVITE", "OPTIONS").Replace(base)
	require.True(t, Check(withCallID(options, longest+"i"), DefaultPolicy()).OK())
	// 0 is no limit.
	require.True(t, Check(msg, Policy{}).OK())
}

func TestReplyNeverEchoesControlCharacters(t *testing.T) {
	msg := []byte(strings.Replace(base, "Call-ID: c1", "Call-ID: c1\nVia: SIP/2.0/UDP evil", 1) + "\r\n")
	r := Check(msg, DefaultPolicy())
	require.Equal(t, 400, r.Status)
	require.Nil(t, Reply(msg, r, "t", netip.AddrPort{}))
}

func TestTransactionFields(t *testing.T) {
	r := Check([]byte(base+"\r\n"), DefaultPolicy())
	require.True(t, r.OK())
	require.Equal(t, "c1", r.CallID)
	require.Equal(t, "z9hG4bK-1", r.Branch)
	require.False(t, r.ToTag)
	r = Check([]byte(strings.Replace(base, "192.0.2.1>", "192.0.2.1>;tag=x", 1)+"\r\n"), DefaultPolicy())
	require.True(t, r.ToTag)
}

func TestReplyRport(t *testing.T) {
	msg := []byte(base + "Require: x\r\n\r\n")
	r := Check(msg, DefaultPolicy())
	res := string(Reply(msg, r, "tag1", netip.MustParseAddrPort("203.0.113.7:40000")))
	require.Contains(t, res, "Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK-1;rport=40000;received=203.0.113.7\r\n")
	require.Contains(t, res, "To: <sip:+15550200@192.0.2.1>;tag=tag1\r\n")
	require.True(t, strings.HasPrefix(res, "SIP/2.0 420 Bad Extension\r\n"))
}

func FuzzCheck(f *testing.F) {
	files, _ := filepath.Glob("../../testdata/rfc4475/*/*.dat")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(base + "\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := Check(data, DefaultPolicy())
		if r.OK() && r.Size > len(data) {
			t.Fatalf("size %d beyond %d bytes", r.Size, len(data))
		}
		if res := Reply(data, r, "t", netip.AddrPort{}); res != nil {
			if _, err := sip.NewParser().ParseSIP(res); err != nil && r.Status != 0 {
				// A reply may copy a malformed header; it must still end
				// properly and never be empty.
				if !strings.HasSuffix(string(res), "\r\n\r\n") {
					t.Fatalf("reply not terminated: %q", res)
				}
			}
		}
	})
}

func TestCanonical(t *testing.T) {
	files := readCorpus(t)
	for name, data := range files {
		r := Check(data, DefaultPolicy())
		if !r.OK() || r.Response {
			continue
		}
		t.Run(name, func(t *testing.T) {
			out := Canonical(data, r, true)
			again := Check(out, DefaultPolicy())
			require.True(t, again.OK(), again.Detail)
			msg, err := sip.NewParser().ParseSIP(out)
			require.NoError(t, err)
			req := msg.(*sip.Request)
			rport, ok := req.Via().Params.Get("rport")
			require.True(t, ok)
			require.Empty(t, rport)
			if req.From() != nil && strings.Contains(strings.ToLower(string(data)), "tag") {
				_, hasTag := req.From().Params.Get("tag")
				require.True(t, hasTag || name == "invalid/unksm2", "From tag lost")
			}
			require.Equal(t, fmt.Sprint(len(req.Body())), req.ContentLength().Value())
		})
	}
	r := Check([]byte(base+"\r\n"), DefaultPolicy())
	require.Contains(t, string(Canonical([]byte(base+"\r\n"), r, true)), "Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK-1;rport\r\n")
	require.Equal(t, "SIP/2.0/UDP h;branch=x;rport,SIP/2.0/UDP g", withRport(compact("SIP / 2.0 / UDP  h ; branch = x , SIP/2.0/UDP g")))
	require.Equal(t, `"A  \" b" <sip:a@b>;tag=1`, compact(`"A  \" b"   <sip:a@b> ; tag = 1`))
}
