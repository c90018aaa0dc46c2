package sipx

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidateCustom(t *testing.T) {
	cases := []struct {
		name, value string
		want        error
	}{
		{"X-Customer-Id", "C-1001", nil},
		{"X-Under_Score", "v", nil},
		{"x-lower", "v", ErrHeaderName},
		{"Customer-Id", "v", ErrHeaderName},
		{"X-", "v", ErrHeaderName},
		{"X-Bad Name", "v", ErrHeaderName},
		{"X-Inject", "a\r\nRefer-To: sip:premium@evil", ErrHeaderValue},
		{"X-Lf", "a\nb", ErrHeaderValue},
		{"X-Nul", "a\x00b", ErrHeaderValue},
		{"X-Long", strings.Repeat("v", MaxHeaderLine), ErrHeaderLine},
		{"X-Fits", strings.Repeat("v", MaxHeaderLine-len("X-Fits: ")), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateCustom(tc.name, tc.value)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.True(t, errors.Is(err, tc.want), "got %v want %v", err, tc.want)
		})
	}
}

func TestStripPrefix(t *testing.T) {
	got, ok := StripPrefix("x-Intent")
	require.True(t, ok)
	require.Equal(t, "Intent", got)
	_, ok = StripPrefix("Via")
	require.False(t, ok)
	_, ok = StripPrefix("X-")
	require.False(t, ok)
}

func TestReferToRoundTrip(t *testing.T) {
	hs := []Header{{"X-Customer-Id", "C 1001&x=y"}, {"X-Intent", "billing/dispute?"}, {"X-Name", "Zoë <VIP>"}}
	v, err := ReferTo("sip:support@pbx.example.com:5080", hs)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(v, "<sip:support@pbx.example.com:5080?X-Customer-Id=C%201001%26x%3Dy&"), v)
	require.NotContains(t, v[1:len(v)-1], "<")
	got, err := ReferToHeaders(v)
	require.NoError(t, err)
	require.Equal(t, hs, got)
}

func TestReferToRefuses(t *testing.T) {
	_, err := ReferTo("tel:+15550100", []Header{{"X-A", "b"}})
	require.ErrorContains(t, err, "cannot carry headers")
	require.ErrorIs(t, err, ErrReferTarget)
	for _, target := range []string{"sip:a@b?Route=x", "sip:a@b?Refer-To=sip:evil@x", "sip:<a@b>", "sip:a@b\tc", "sip:a@b\x7f", "sip:a@b\r\nX-A: b"} {
		_, err = ReferTo(target, nil)
		require.ErrorIs(t, err, ErrReferTarget, target)
		require.ErrorContains(t, err, "bare URI", target)
	}
	_, err = ReferTo("sip:a@b", []Header{{"X-A", "b\r\nRefer-To: sip:evil"}})
	require.ErrorIs(t, err, ErrHeaderValue)
}

func TestParseSipfrag(t *testing.T) {
	f, err := ParseSipfrag([]byte("SIP/2.0 200 OK\r\n"))
	require.NoError(t, err)
	require.Equal(t, Sipfrag{200, "OK"}, f)
	f, err = ParseSipfrag([]byte("SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n"))
	require.NoError(t, err)
	require.Equal(t, 486, f.Status)
	for _, bad := range []string{"", "SIP/2.0 20 OK", "HTTP/1.1 200 OK", "SIP/2.0 abc", "SIP/2.0 999 x"} {
		_, err := ParseSipfrag([]byte(bad))
		require.Error(t, err, bad)
	}
}

func FuzzReferTo(f *testing.F) {
	f.Add("sip:a@b", "X-A", "v")
	f.Add("sips:support@pbx:5061", "X-Customer-Id", "a&b=c%20")
	f.Fuzz(func(t *testing.T, target, name, value string) {
		v, err := ReferTo(target, []Header{{name, value}})
		if err != nil {
			return
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			t.Fatalf("Refer-To carries a control character: %q", v)
		}
		got, err := ReferToHeaders(v)
		if err != nil {
			t.Fatalf("own Refer-To does not parse: %v", err)
		}
		if len(got) != 1 || got[0].Name != name || got[0].Value != value {
			t.Fatalf("round trip: got %v want %s=%s", got, name, value)
		}
	})
}

// FuzzValidateCustom: whatever ValidateCustom accepts is one header line
// of the allowed name and a value without CR, LF or NUL.
func FuzzValidateCustom(f *testing.F) {
	f.Add("X-Customer-Id", "C-1001")
	f.Add("X-Inject", "a\r\nRefer-To: sip:evil@x")
	f.Add("X-Bad: name", "v")
	f.Add("X Bad", "v")
	f.Add("X-Nul", "a\x00b")
	f.Fuzz(func(t *testing.T, name, value string) {
		if err := ValidateCustom(name, value); err != nil {
			return
		}
		if strings.ContainsAny(name+value, "\r\n\x00") {
			t.Fatalf("accepted a control character: %q: %q", name, value)
		}
		if strings.ContainsAny(name, ": \t") || !IsCustom(name) {
			t.Fatalf("accepted header name %q", name)
		}
		if LineLen(name, value) > MaxHeaderLine {
			t.Fatalf("accepted a %d-byte line", LineLen(name, value))
		}
	})
}

func FuzzParseSipfrag(f *testing.F) {
	f.Add([]byte("SIP/2.0 200 OK\r\n"))
	f.Add([]byte("SIP/2.0 100 Trying"))
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := ParseSipfrag(body)
		if err == nil && (s.Status < 100 || s.Status > 699) {
			t.Fatalf("status %d accepted", s.Status)
		}
	})
}
