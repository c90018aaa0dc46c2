package server

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/services/ingress/internal/rtp"
)

func TestParseInfoDTMF(t *testing.T) {
	cases := []struct {
		ct, body string
		want     rtp.DTMF
		wantErr  bool
	}{
		{"application/dtmf-relay", "Signal=5\r\nDuration=160\r\n", rtp.DTMF{Digit: "5", DurationMS: 160}, false},
		{"application/dtmf-relay", "Signal= *\nDuration= 100", rtp.DTMF{Digit: "*", DurationMS: 100}, false},
		{"Application/DTMF-Relay", "Signal=a", rtp.DTMF{Digit: "A"}, false},
		{"application/dtmf-relay", "Signal=10\r\n", rtp.DTMF{Digit: "*"}, false},
		{"application/dtmf-relay", "Signal=11\r\n", rtp.DTMF{Digit: "#"}, false},
		{"application/dtmf-relay", "Signal=13\r\n", rtp.DTMF{Digit: "B"}, false},
		{"application/dtmf-relay", "Signal=16\r\n", rtp.DTMF{Digit: "flash"}, false},
		{"application/dtmf", " 9\r\n", rtp.DTMF{Digit: "9"}, false},
		{"application/dtmf-relay", "Duration=160", rtp.DTMF{}, true},
		{"application/dtmf-relay", "Signal=5\r\nDuration=-1", rtp.DTMF{}, true},
		{"application/dtmf-relay", "Signal=55", rtp.DTMF{}, true},
		{"application/dtmf", "E", rtp.DTMF{}, true},
		{"text/plain", "5", rtp.DTMF{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.ct+" "+tc.body, func(t *testing.T) {
			got, err := parseInfoDTMF(tc.ct, []byte(tc.body))
			if tc.wantErr {
				require.ErrorIs(t, err, errDTMFBody)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

// FuzzParseInfoDTMF: an INFO body either gives one digit or errDTMFBody.
func FuzzParseInfoDTMF(f *testing.F) {
	f.Add("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n")
	f.Add("application/dtmf", "#")
	f.Add("application/dtmf-relay", "Signal=16\nDuration=99999999999")
	f.Fuzz(func(t *testing.T, ct, body string) {
		d, err := parseInfoDTMF(ct, []byte(body))
		if err != nil {
			require.ErrorIs(t, err, errDTMFBody)
			return
		}
		require.NotEmpty(t, d.Digit)
	})
}
