package route

import (
	"strings"
	"testing"

	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	for route, want := range map[string]Kind{
		"sip:support@pbx.example.com":           SIP,
		"sips:+4930123456@pbx.example.com:5061": SIP,
		"sip:pbx.example.com;transport=tls":     SIP,
		"SIP:a@[2001:db8::1]:5060":              SIP,
		"tel:+1-555-0100":                       Tel,
		"tel:+15550100;phone-context=x":         Tel,
		"1234":                                  Extension,
		"+15550100":                             Extension,
	} {
		got, err := Parse(route)
		require.NoError(t, err, route)
		require.Equal(t, want, got, route)
	}
	for _, bad := range []string{
		"", "queue", "http://x", "sip:", "sip:a@", "sip:a@b?Refer-To=sip:evil@x", "sip:<a@b>", "sip:a@b c",
		"sip:a@b\r\nX-A: 1", "sip:a@b\x00", "sip:a@b:99999", "sip:a@b\tc", "tel:abc", "sip:\"a\"@b",
	} {
		_, err := Parse(bad)
		var re *Error
		require.ErrorAs(t, err, &re, "%q", bad)
	}
}

func TestAdHoc(t *testing.T) {
	for _, ok := range []string{
		"sip:+4930123456@carrier.example", "sips:queue@carrier.example:5061", "sip:+1555@carrier.example;user=phone",
		"sip:a@carrier.example;transport=TLS", "sip:a@carrier.example;transport=tcp", "tel:+4930123456", "tel:+1-555-0100", "1234", "sip:%2B1555@carrier.example",
	} {
		require.NoError(t, AdHoc(ok), ok)
	}
	for _, bad := range []string{
		// A glob "sip:*@carrier.example" matches these; each really goes elsewhere or carries extras.
		"sip:x@evil.example;a=@carrier.example",
		"sip:x@carrier.example;maddr=evil.example",
		"sip:x@carrier.example;method=INVITE",
		"sip:x:secret@carrier.example",
		"sip:x;isub=1@carrier.example",
		"sip:a@carrier.example?Refer-To=sip:evil@x",
		"sip:a@carrier.example?X-A=1",
		"<sip:a@carrier.example>",
		"sip:a@carrier.example\r\nRefer-To: sip:evil@x",
		"tel:+15550100;phone-context=evil.example",
		"sip:" + strings.Repeat("1", MaxAdHoc) + "@carrier.example",
		"sip:a b@carrier.example",
		"sip:a@carrier.example;transport=sctp",
	} {
		var re *Error
		require.ErrorAs(t, AdHoc(bad), &re, "%q", bad)
	}
}

func TestNumberAndDenied(t *testing.T) {
	deny := []string{}
	for _, p := range []string{"+1900", "+44 9", "+1-976"} {
		n, err := NumberPrefix(p)
		require.NoError(t, err)
		deny = append(deny, n)
	}
	require.Equal(t, []string{"+1900", "+449", "+1976"}, deny)
	for _, tc := range []struct {
		route, prefix string
	}{
		{"tel:+19005550100", "+1900"},
		{"tel:+1-900-555-0100", "+1900"},
		{"tel:+1(900)5550100", "+1900"},
		{"sip:+19005550100@carrier.example", "+1900"},
		{"sips:+19005550100@carrier.example;user=phone", "+1900"},
		{"sip:%2B19005550100@carrier.example", "+1900"},
		{"sip:+1.900.555.0100@carrier.example", "+1900"},
		{"sip:+449098790000@carrier.example", "+449"},
		{"+19765550100", "+1976"},
		{"SIP:+19005550100@carrier.example", "+1900"},
	} {
		got, ok := Denied(tc.route, deny)
		require.True(t, ok, tc.route)
		require.Equal(t, tc.prefix, got, tc.route)
	}
	for _, allowed := range []string{"tel:+4930123456", "sip:queue@carrier.example", "sip:carrier.example", "+15550100", "sip:+1800@carrier.example"} {
		_, ok := Denied(allowed, deny)
		require.False(t, ok, allowed)
	}
	for _, bad := range []string{"", "+", "premium", "+1 900 x"} {
		_, err := NumberPrefix(bad)
		var re *Error
		require.ErrorAs(t, err, &re, bad)
	}
}

// FuzzAdHoc: a route AdHoc accepts is one bare URI or number: no header,
// bracket, quote, space or control character can ride in it, and its
// number (for the deny list) is found.
func FuzzAdHoc(f *testing.F) {
	for _, s := range []string{"sip:+4930123456@carrier.example", "tel:+1-900-555-0100", "1234",
		"sip:x@evil.example;a=@carrier.example", "sip:a@b?Refer-To=sip:evil@x", "sip:a@b\r\nRefer-To: x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, r string) {
		if AdHoc(r) != nil {
			return
		}
		if strings.ContainsAny(r, "?<>\" ") || sipx.HasControl(r) || len(r) > MaxAdHoc {
			t.Fatalf("AdHoc accepted %q", r)
		}
		if strings.Count(r, "@") > 1 {
			t.Fatalf("AdHoc accepted two '@': %q", r)
		}
		if strings.Contains(strings.ToLower(r), "maddr") {
			t.Fatalf("AdHoc accepted maddr: %q", r)
		}
	})
}
