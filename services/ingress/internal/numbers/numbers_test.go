package numbers

import (
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
)

func TestFromURI(t *testing.T) {
	cases := []struct {
		uri, number, raw string
	}{
		{"sip:+15550100@carrier.example.com", "+15550100", "+15550100"},
		{"sip:alice@10.0.0.1:5060;user=phone", "alice", "alice"},
		{"sip:10.0.0.1", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.uri, func(t *testing.T) {
			var u sip.Uri
			require.NoError(t, sip.ParseUri(tc.uri, &u))
			n, raw := FromURI(u)
			require.Equal(t, tc.number, n)
			require.Equal(t, tc.raw, raw)
		})
	}
}
