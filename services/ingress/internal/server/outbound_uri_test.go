package server

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestOutboundURI(t *testing.T) {
	for in, want := range map[string]string{
		"+15551234567":                  "sip:+15551234567@carrier.example;user=phone",
		"tel:+15551234567":              "sip:+15551234567@carrier.example;user=phone",
		"200":                           "sip:200@carrier.example;user=phone",
		"sip:200@pbx.example.com":       "sip:200@pbx.example.com",
		"sips:bob@pbx.example.com:5061": "sips:bob@pbx.example.com:5061",
	} {
		u, err := outboundURI(in, "carrier.example")
		require.NoError(t, err, in)
		require.Equal(t, want, u.String(), in)
	}
	for _, bad := range []string{"", "+1555 123", "tel:+1555;x=1", "sip:", "sip:a@b\r\nX: y", "sip:<a@b>", "bob", "+1555123456789012345678901234567890"} {
		_, err := outboundURI(bad, "carrier.example")
		require.Error(t, err, "%q", bad)
	}
}

// FuzzOutboundURI: whatever reaches ingress in an OutboundCallRequested,
// the URI it would send has no line break.
func FuzzOutboundURI(f *testing.F) {
	for _, s := range []string{"+15551234567", "tel:+1555", "sip:200@pbx.example.com;user=phone", "sip:a@b\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := outboundURI(s, "carrier.example")
		if err != nil {
			return
		}
		require.False(t, strings.ContainsAny(u.String(), "\r\n\x00"), "%q", u.String())
	})
}
