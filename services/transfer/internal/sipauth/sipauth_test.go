package sipauth

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/stretchr/testify/require"
)

const password = "pw-never-shown"

func request(t *testing.T) *sip.Request {
	t.Helper()
	var uri sip.Uri
	require.NoError(t, sip.ParseUri("sip:sbc@192.0.2.10:5060;transport=udp", &uri))
	req := sip.NewRequest(sip.REFER, uri)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 7, MethodName: sip.REFER})
	return req
}

func challenge(code int, values ...string) *sip.Response {
	res := sip.NewResponse(code, "Unauthorized")
	name := "WWW-Authenticate"
	if code == sip.StatusProxyAuthRequired {
		name = "Proxy-Authenticate"
	}
	for _, v := range values {
		res.AppendHeader(sip.NewHeader(name, v))
	}
	return res
}

// rfcResponse is RFC 7616 3.4.1's response for qop=auth, computed here.
func rfcResponse(alg, user, realm, pw, method, uri, nonce, cnonce string, nc int) string {
	sum := func(s string) string {
		if alg == "SHA-256" {
			b := sha256.Sum256([]byte(s))
			return hex.EncodeToString(b[:])
		}
		b := md5.Sum([]byte(s))
		return hex.EncodeToString(b[:])
	}
	ha1 := sum(user + ":" + realm + ":" + pw)
	ha2 := sum(method + ":" + uri)
	return sum(fmt.Sprintf("%s:%s:%08x:%s:auth:%s", ha1, nonce, nc, cnonce, ha2))
}

func TestAnswerPicksTheStrongestAndComputesRFC7616(t *testing.T) {
	for _, tc := range []struct {
		name    string
		code    int
		offered []string
		header  string
		alg     string
	}{
		{"401 MD5 only", 401, []string{`Digest realm="r", nonce="n1", qop="auth"`}, "Authorization", "MD5"},
		{"407 SHA-256 after MD5", 407, []string{`Digest realm="r", nonce="n1", qop="auth", algorithm=MD5`,
			`Digest realm="r", nonce="n1", qop="auth", algorithm=SHA-256`}, "Proxy-Authorization", "SHA-256"},
		{"401 SHA-256 before MD5", 401, []string{`Digest realm="r", nonce="n1", qop="auth, auth-int", algorithm=SHA-256`,
			`Digest realm="r", nonce="n1", qop="auth", algorithm=MD5`}, "Authorization", "SHA-256"},
		{"lower-case algorithm", 401, []string{`Digest realm="r", nonce="n1", qop="auth", algorithm=sha-256`}, "Authorization", "SHA-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := request(t)
			a, err := NewSession(Credentials{Username: "baton", Password: password}).Answer(req, challenge(tc.code, tc.offered...))
			require.NoError(t, err)
			require.Equal(t, tc.header, a.Header)
			require.Equal(t, tc.alg, a.Algorithm)
			h := req.GetHeader(tc.header)
			require.NotNil(t, h)
			cred, err := digest.ParseCredentials(h.Value())
			require.NoError(t, err)
			require.Equal(t, "sip:sbc@192.0.2.10:5060;transport=udp", cred.URI, "digest-uri is the whole Request-URI")
			require.Equal(t, "auth", cred.QOP)
			require.Equal(t, rfcResponse(tc.alg, "baton", "r", password, "REFER", cred.URI, "n1", cred.Cnonce, cred.Nc), cred.Response)
			require.NotContains(t, req.String(), password)
		})
	}
}

func TestAnswerPolicy(t *testing.T) {
	creds := Credentials{Username: "baton", Password: password, Realm: "carrier"}
	first := challenge(401, `Digest realm="carrier", nonce="n1", qop="auth"`)
	again := challenge(401, `Digest realm="carrier", nonce="n2", qop="auth"`)
	stale := challenge(401, `Digest realm="carrier", nonce="n2", qop="auth", stale=true`)

	t.Run("challenged again without stale: rejected", func(t *testing.T) {
		s := NewSession(creds)
		req := request(t)
		_, err := s.Answer(req, first)
		require.NoError(t, err)
		_, err = s.Answer(req, again)
		require.ErrorIs(t, err, ErrRejected)
	})
	t.Run("stale nonce retried once", func(t *testing.T) {
		s := NewSession(creds)
		req := request(t)
		_, err := s.Answer(req, first)
		require.NoError(t, err)
		a, err := s.Answer(req, stale)
		require.NoError(t, err)
		require.True(t, a.Stale)
		require.Len(t, req.GetHeaders("Authorization"), 1, "the earlier answer is replaced")
		require.Contains(t, req.GetHeader("Authorization").Value(), `nonce="n2"`)
		_, err = s.Answer(req, stale)
		require.ErrorIs(t, err, ErrRejected, "a second stale is not retried")
	})
	t.Run("other realm not answered", func(t *testing.T) {
		_, err := NewSession(creds).Answer(request(t), challenge(401, `Digest realm="elsewhere", nonce="n1"`))
		require.ErrorIs(t, err, ErrUnsupported)
	})
	t.Run("unsupported algorithm or qop", func(t *testing.T) {
		for _, v := range []string{`Digest realm="carrier", nonce="n1", algorithm=MD5-sess`,
			`Digest realm="carrier", nonce="n1", algorithm=SHA-1`, `Digest realm="carrier", nonce="n1", qop="auth-conf"`,
			`Basic realm="carrier"`, `Digest realm="carrier"`} {
			_, err := NewSession(creds).Answer(request(t), challenge(401, v))
			require.ErrorIs(t, err, ErrUnsupported, v)
		}
	})
	t.Run("no challenge", func(t *testing.T) {
		_, err := NewSession(creds).Answer(request(t), sip.NewResponse(401, "Unauthorized"))
		require.ErrorIs(t, err, ErrNoChallenge)
		_, err = NewSession(creds).Answer(request(t), sip.NewResponse(403, "Forbidden"))
		require.ErrorIs(t, err, ErrNoChallenge)
		require.False(t, Challenged(sip.NewResponse(403, "Forbidden")))
		require.True(t, Challenged(sip.NewResponse(407, "Proxy Authentication Required")))
	})
}

func TestCredentialsNeverShowThePassword(t *testing.T) {
	c := Credentials{Username: "baton", Password: password, Realm: "carrier"}
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	logger.Info("creds", "c", c, "p", &c)
	logger.Info("json", slog.Any("c", c))
	for _, s := range []string{buf.String(), fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c)} {
		require.NotContains(t, s, password)
		require.True(t, strings.Contains(s, "baton"), s)
	}
}

func FuzzAnswer(f *testing.F) {
	f.Add(`Digest realm="r", nonce="n", qop="auth", algorithm=SHA-256`)
	f.Add(`Digest realm="r", nonce="n", qop="auth,auth-int", stale=TRUE, opaque="o"`)
	f.Add(`Digest ,,,=`)
	f.Fuzz(func(t *testing.T, v string) {
		req := request(t)
		_, _ = NewSession(Credentials{Username: "u", Password: "p"}).Answer(req, challenge(401, v))
	})
}
