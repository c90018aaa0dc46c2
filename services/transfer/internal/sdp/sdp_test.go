package sdp

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const sbcAnswer = "v=0\r\n" +
	"o=sbc 1234 5 IN IP4 192.0.2.1\r\n" +
	"s=-\r\n" +
	"c=IN IP4 192.0.2.1\r\n" +
	"t=0 0\r\n" +
	"m=audio 40000 RTP/SAVP 8 101\r\n" +
	"c=IN IP4 198.51.100.7\r\n" +
	"a=rtpmap:8 PCMA/8000\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"a=fmtp:101 0-15\r\n" +
	"a=crypto:2 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==\r\n" +
	"a=recvonly\r\n" +
	"m=video 40002 RTP/AVP 96\r\n" +
	"a=sendonly\r\n"

func TestParse(t *testing.T) {
	s, err := Parse(sbcAnswer)
	require.NoError(t, err)
	require.Equal(t, "sbc 1234 5 IN IP4 192.0.2.1", s.Origin)
	require.Equal(t, netip.MustParseAddrPort("198.51.100.7:40000"), s.Addr, "media-level c= wins")
	require.Equal(t, "RTP/SAVP", s.Proto)
	require.Equal(t, "recvonly", s.Direction, "the video stream's attributes do not leak")
	require.Equal(t, []Format{{PT: 8, Name: "PCMA", ClockRate: 8000}, {PT: 101, Name: "telephone-event", ClockRate: 8000, Fmtp: "0-15"}}, s.Formats)
	require.Len(t, s.Crypto, 1)
	require.Equal(t, 2, s.Crypto[0].Tag)
	require.Len(t, s.Crypto[0].Key, 28)
	audio, ok := s.Audio()
	require.True(t, ok)
	require.Equal(t, "PCMA", audio.Name)
}

func TestParseErrors(t *testing.T) {
	for name, body := range map[string]string{
		"no audio":      "v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 1 RTP/AVP 96\r\n",
		"no address":    "v=0\r\nm=audio 1 RTP/AVP 0\r\n",
		"bad port":      "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n",
		"bad payload":   "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP x\r\n",
		"bad c= addr":   "v=0\r\nc=IN IP4 example.com\r\nm=audio 1 RTP/AVP 0\r\n",
		"empty message": "",
	} {
		_, err := Parse(body)
		require.ErrorIs(t, err, ErrSDP, name)
	}
}

func TestRoundTripAndOrigin(t *testing.T) {
	c, err := NewCrypto(1, "AES_CM_128_HMAC_SHA1_80")
	require.NoError(t, err)
	s := Session{
		Origin:  NextOrigin("ingress 77 3 IN IP4 10.0.0.1", netip.MustParseAddr("10.0.0.2")),
		Addr:    netip.MustParseAddrPort("10.0.0.2:32000"),
		Proto:   "RTP/SAVP",
		Formats: []Format{{PT: 0, Name: "PCMU", ClockRate: 8000}},
		Crypto:  []Crypto{c},
	}
	require.Equal(t, "ingress 77 4 IN IP4 10.0.0.1", s.Origin, "same session, next version")
	back, err := Parse(s.String())
	require.NoError(t, err)
	require.Equal(t, s.Addr, back.Addr)
	require.Equal(t, s.Formats, back.Formats)
	require.Equal(t, s.Crypto, back.Crypto)
	require.Equal(t, "sendrecv", back.Direction)
	require.True(t, strings.HasPrefix(NextOrigin("", netip.MustParseAddr("10.0.0.2")), "baton "))
	_, err = NewCrypto(1, "NULL_HMAC")
	require.ErrorIs(t, err, ErrSDP)
}

func FuzzParse(f *testing.F) {
	f.Add(sbcAnswer)
	f.Add("v=0\r\nc=IN IP6 ::1\r\nm=audio 0 RTP/AVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:xx|2^20\r\n")
	f.Fuzz(func(t *testing.T, body string) {
		s, err := Parse(body)
		if err != nil {
			return
		}
		if s.Origin == "" {
			s.Origin = "x 1 1 IN IP4 127.0.0.1"
		}
		if strings.ContainsAny(s.Origin, "\r\n") {
			return
		}
		// What parsed renders and parses again to the same stream.
		back, err := Parse(s.String())
		require.NoError(t, err)
		require.Equal(t, s.Addr, back.Addr)
		require.Len(t, back.Formats, len(s.Formats))
	})
}

func TestParseRTCPAttribute(t *testing.T) {
	base := "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
	for _, tc := range []struct{ attr, want string }{
		{"", "invalid AddrPort"},
		{"a=rtcp:4011\r\n", "10.0.0.1:4011"},
		{"a=rtcp:53020 IN IP4 192.0.2.7\r\n", "192.0.2.7:53020"},
		{"a=rtcp:nope\r\n", "invalid AddrPort"},
	} {
		s, err := Parse(base + tc.attr)
		require.NoError(t, err)
		require.Equal(t, tc.want, s.RTCP.String(), tc.attr)
	}
}
