package sdp

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func offer(lines ...string) []byte {
	return []byte(strings.Join(append([]string{"v=0", "o=sbc 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0"}, lines...), "\r\n") + "\r\n")
}

func TestNegotiate(t *testing.T) {
	p := Params{Host: "203.0.113.7", Port: 20002, SessionID: 42}
	cases := []struct {
		name  string
		offer []byte
		want  string // the answer's media section
		codec Codec
		tel   int
	}{
		{
			name:  "pcmu and telephone-event",
			offer: offer("m=audio 4000 RTP/AVP 8 0 101", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15"),
			want:  "m=audio 20002 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n",
			codec: PCMU, tel: 101,
		},
		{
			name:  "pcma only, no events",
			offer: offer("m=audio 4000 RTP/AVP 8", "a=rtpmap:8 PCMA/8000"),
			want:  "m=audio 20002 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=ptime:20\r\na=sendrecv\r\n",
			codec: PCMA, tel: -1,
		},
		{
			name:  "other event payload type kept",
			offer: offer("m=audio 4000 RTP/AVP 0 96", "a=rtpmap:96 telephone-event/8000"),
			want:  "m=audio 20002 RTP/AVP 0 96\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
			codec: PCMU, tel: 96,
		},
		{
			name:  "hold offer answered recvonly",
			offer: offer("m=audio 4000 RTP/AVP 0", "a=sendonly"),
			want:  "m=audio 20002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=recvonly\r\n",
			codec: PCMU, tel: -1,
		},
		{
			name:  "video rejected with port 0",
			offer: offer("m=video 5000 RTP/AVP 96", "a=rtpmap:96 H264/90000", "m=audio 4000 RTP/AVP 0"),
			want:  "m=video 0 RTP/AVP 96\r\nm=audio 20002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
			codec: PCMU, tel: -1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Negotiate(tc.offer, p)
			require.NoError(t, err)
			head := "v=0\r\no=baton 42 42 IN IP4 203.0.113.7\r\ns=baton\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\n"
			require.Equal(t, head+tc.want, string(a.SDP))
			require.Equal(t, tc.codec, a.Codec)
			require.Equal(t, tc.tel, a.TelephoneEvent)
			require.Equal(t, "10.0.0.1:4000", a.RemoteAddr)
		})
	}
}

func TestNegotiateIPv6(t *testing.T) {
	a, err := Negotiate(offer("m=audio 4000 RTP/AVP 0"), Params{Host: "2001:db8::7", Port: 20000, SessionID: 1})
	require.NoError(t, err)
	require.Contains(t, string(a.SDP), "c=IN IP6 2001:db8::7\r\n")
}

// TestNegotiateMixedVersions: the session c= and the audio c= may be of
// different IP versions (RFC 5118 4.8); the media-level one wins, and an
// IPv4-mapped IPv6 address is IPv6.
func TestNegotiateMixedVersions(t *testing.T) {
	a, err := Negotiate(offer("m=audio 4000 RTP/AVP 0", "c=IN IP6 2001:db8::20"), Params{Host: "127.0.0.1", Port: 20000, SessionID: 1})
	require.NoError(t, err)
	require.Equal(t, "[2001:db8::20]:4000", a.RemoteAddr)
	a, err = Negotiate(offer("m=audio 4000 RTP/AVP 0", "c=IN IP6 ::ffff:192.0.2.12"), Params{Host: "127.0.0.1", Port: 20000, SessionID: 1})
	require.NoError(t, err)
	require.Equal(t, "[::ffff:192.0.2.12]:4000", a.RemoteAddr)
}

func TestNegotiateRefuses(t *testing.T) {
	for name, body := range map[string][]byte{
		"empty":         nil,
		"not sdp":       []byte("hello"),
		"no media":      offer(),
		"g729 only":     offer("m=audio 4000 RTP/AVP 18", "a=rtpmap:18 G729/8000"),
		"audio refused": offer("m=audio 0 RTP/AVP 0"),
		"pcmu wideband": offer("m=audio 4000 RTP/AVP 96", "a=rtpmap:96 PCMU/16000"),
		"ip4 with ipv6": offer("m=audio 4000 RTP/AVP 0", "c=IN IP4 2001:db8::1"),
		"ip6 with ipv4": offer("m=audio 4000 RTP/AVP 0", "c=IN IP6 192.0.2.1"),
		"ip5":           offer("m=audio 4000 RTP/AVP 0", "c=IN IP5 192.0.2.1"),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Negotiate(body, Params{Host: "127.0.0.1", Port: 20000})
			require.True(t, errors.Is(err, ErrNotAcceptable), "%v", err)
		})
	}
}

func TestNegotiateDirectionAndHold(t *testing.T) {
	p := Params{Host: "203.0.113.7", Port: 20002, SessionID: 42, Version: 43}
	cases := []struct {
		name           string
		offer          []byte
		dir, remoteDir string
		hold           bool
		remote         string
	}{
		{"sendrecv", offer("m=audio 4000 RTP/AVP 0", "a=sendrecv"), "sendrecv", "sendrecv", false, "10.0.0.1:4000"},
		{"no attribute", offer("m=audio 4000 RTP/AVP 0"), "sendrecv", "sendrecv", false, "10.0.0.1:4000"},
		{"hold", offer("m=audio 4002 RTP/AVP 0", "a=sendonly"), "recvonly", "sendonly", true, "10.0.0.1:4002"},
		{"inactive", offer("m=audio 4000 RTP/AVP 0", "a=inactive"), "inactive", "inactive", true, "10.0.0.1:4000"},
		{"recvonly", offer("m=audio 4000 RTP/AVP 0", "a=recvonly"), "sendonly", "recvonly", false, "10.0.0.1:4000"},
		{"rfc2543 hold", offer("m=audio 4000 RTP/AVP 0", "c=IN IP4 0.0.0.0"), "sendrecv", "sendrecv", true, "0.0.0.0:4000"},
		{"new media address", offer("m=audio 6000 RTP/AVP 8", "c=IN IP4 10.0.0.9"), "sendrecv", "sendrecv", false, "10.0.0.9:6000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Negotiate(tc.offer, p)
			require.NoError(t, err)
			require.Equal(t, tc.dir, a.Direction)
			require.Equal(t, tc.remoteDir, a.RemoteDirection)
			require.Equal(t, tc.hold, a.Hold)
			require.Equal(t, tc.remote, a.RemoteAddr)
			require.Contains(t, string(a.SDP), "o=baton 42 43 IN IP4 203.0.113.7\r\n")
			require.Contains(t, string(a.SDP), "a="+tc.dir+"\r\n")
		})
	}
}

func TestOfferAndReadAnswer(t *testing.T) {
	off := Offer(Params{Host: "203.0.113.7", Port: 20002, SessionID: 42, Version: 44})
	require.Equal(t, "v=0\r\no=baton 42 44 IN IP4 203.0.113.7\r\ns=baton\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\n"+
		"m=audio 20002 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"+
		"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n", string(off))

	a, err := ReadAnswer(offer("m=audio 7000 RTP/AVP 8 101", "a=rtpmap:101 telephone-event/8000", "a=sendonly"), off)
	require.NoError(t, err)
	require.Equal(t, PCMA, a.Codec)
	require.Equal(t, 101, a.TelephoneEvent)
	require.Equal(t, "10.0.0.1:7000", a.RemoteAddr)
	require.Equal(t, "sendonly", a.RemoteDirection)
	require.Equal(t, "recvonly", a.Direction)
	require.True(t, a.Hold)
	require.Equal(t, off, a.SDP)

	_, err = ReadAnswer(offer("m=audio 7000 RTP/AVP 18"), off)
	require.ErrorIs(t, err, ErrNotAcceptable)
}
