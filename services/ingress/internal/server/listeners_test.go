package server

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
)

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "baton-ingress-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// streamPeer is an SBC on a TCP or TLS connection.
type streamPeer struct {
	conn net.Conn
	r    *bufio.Reader
}

// read returns the next message framed by Content-Length, nil at EOF.
func (p *streamPeer) read(t *testing.T) *sip.Response {
	t.Helper()
	require.NoError(t, p.conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	tp := textproto.NewReader(p.r)
	var head []string
	for {
		line, err := tp.ReadLine()
		if errors.Is(err, io.EOF) && len(head) == 0 {
			return nil
		}
		require.NoError(t, err)
		if line == "" {
			if len(head) == 0 {
				continue // keepalive
			}
			break
		}
		head = append(head, line)
	}
	n := 0
	for _, h := range head {
		if name, v, ok := strings.Cut(h, ":"); ok && (strings.EqualFold(name, "Content-Length") || name == "l") {
			var err error
			n, err = strconv.Atoi(strings.TrimSpace(v))
			require.NoError(t, err)
		}
	}
	body := make([]byte, n)
	_, err := io.ReadFull(p.r, body)
	require.NoError(t, err)
	m, err := sip.NewParser().ParseSIP(append([]byte(strings.Join(head, "\r\n")+"\r\n\r\n"), body...))
	require.NoError(t, err)
	res, ok := m.(*sip.Response)
	require.True(t, ok)
	return res
}

// final sends msg and returns the first final response.
func (p *streamPeer) final(t *testing.T, msg []byte) *sip.Response {
	t.Helper()
	_, err := p.conn.Write(msg)
	require.NoError(t, err)
	for {
		res := p.read(t)
		require.NotNil(t, res, "connection closed")
		if res.StatusCode >= 200 {
			return res
		}
	}
}

func streamRequest(transport string, method sip.RequestMethod, me net.Addr, callID, branch, toTag string, cseq int, extra, body string) []byte {
	ct := ""
	if body != "" {
		ct = "Content-Type: application/sdp\r\n"
	}
	return fmt.Appendf(nil, "%s sip:+15550200@127.0.0.1 SIP/2.0\r\n"+
		"Via: SIP/2.0/%s %s;branch=%s\r\n"+
		"From: <sip:+15550100@127.0.0.1>;tag=stream\r\nTo: <sip:+15550200@127.0.0.1>%s\r\n"+
		"Call-ID: %s\r\nCSeq: %d %s\r\nContact: <sip:sbc@%s;transport=%s>\r\nMax-Forwards: 70\r\n"+
		"%s%sContent-Length: %d\r\n\r\n%s",
		method, transport, me, branch, toTag, callID, cseq, method, me, strings.ToLower(transport), extra, ct, len(body), body)
}

func TestListeners(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	certFile, keyFile, pool := selfSigned(t)
	in := startIngress(t, brokers, func(c *config.Config) {
		c.Listeners = []config.Listener{
			{Transport: config.UDP, Address: "127.0.0.1:0"},
			{Transport: config.UDP, Address: "[::1]:0"},
			{Transport: config.TCP, Address: "127.0.0.1:0"},
			{Transport: config.TLS, Address: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile},
		}
	})
	consumer := newCalls(t, brokers, topics.Calls)
	addrs := in.srv.Addrs()
	require.Len(t, addrs, 4)

	t.Run("udp over ipv6", func(t *testing.T) {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6loopback})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, conn.Close()) })
		me := conn.LocalAddr()
		_, err = conn.WriteTo(streamRequest("UDP", sip.INVITE, me, "v6-call", "z9hG4bK-v6", "", 1, "", offer), addrs[1])
		require.NoError(t, err)
		buf := make([]byte, 65535)
		for {
			require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
			n, err := conn.Read(buf)
			require.NoError(t, err)
			m, err := sip.NewParser().ParseSIP(buf[:n])
			require.NoError(t, err)
			res := m.(*sip.Response)
			if res.StatusCode < 200 {
				continue
			}
			require.Equal(t, sip.StatusOK, res.StatusCode)
			require.Equal(t, "::1", strings.Trim(res.Contact().Address.Host, "[]"), "the IPv6 listener's contact")
			require.Equal(t, addrs[1].(*net.UDPAddr).Port, res.Contact().Address.Port)
			break
		}
		ev := consumer.next(t)
		require.Equal(t, events.TypeCallStarted, ev.Type)
		d := ev.Data.(*batonv1.CallStarted).GetDialog()
		require.Equal(t, batonv1.Transport_TRANSPORT_UDP, d.GetTransport())
		require.True(t, strings.HasPrefix(d.GetRemoteAddress(), "[::1]:"), d.GetRemoteAddress())
	})

	streams := []struct {
		name, transport string
		dial            func() (net.Conn, error)
		want            batonv1.Transport
	}{
		{"tcp", "TCP", func() (net.Conn, error) { return net.Dial("tcp", addrs[2].String()) }, batonv1.Transport_TRANSPORT_TCP},
		{"tls", "TLS", func() (net.Conn, error) {
			return tls.Dial("tcp", addrs[3].String(), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
		}, batonv1.Transport_TRANSPORT_TLS},
	}
	for _, st := range streams {
		t.Run(st.name, func(t *testing.T) {
			conn, err := st.dial()
			require.NoError(t, err)
			t.Cleanup(func() { _ = conn.Close() })
			p := &streamPeer{conn: conn, r: bufio.NewReader(conn)}
			me := conn.LocalAddr()
			callID := st.name + "-call"

			// Validation runs on stream transports too: 420 and 400.
			res := p.final(t, streamRequest(st.transport, sip.INVITE, me, callID+"-ext", "z9hG4bK-ext-"+st.name, "", 1, "Require: foo\r\n", offer))
			require.Equal(t, 420, res.StatusCode)
			require.Equal(t, "foo", res.GetHeader("Unsupported").Value())
			res = p.final(t, []byte(strings.Replace(string(streamRequest(st.transport, sip.INVITE, me, callID+"-mf", "z9hG4bK-mf-"+st.name, "", 1, "", offer)), "Max-Forwards: 70", "Max-Forwards: 300", 1)))
			require.Equal(t, sip.StatusBadRequest, res.StatusCode)

			res = p.final(t, streamRequest(st.transport, sip.INVITE, me, callID, "z9hG4bK-inv-"+st.name, "", 1, "", offer))
			require.Equal(t, sip.StatusOK, res.StatusCode, res.Short())
			require.Equal(t, strings.ToLower(st.transport), func() string { v, _ := res.Contact().Address.UriParams.Get("transport"); return v }())
			tag, _ := res.To().Params.Get("tag")
			ev := consumer.next(t)
			require.Equal(t, events.TypeCallStarted, ev.Type)
			require.Equal(t, callID, ev.Subject)
			require.Equal(t, st.want, ev.Data.(*batonv1.CallStarted).GetDialog().GetTransport())

			_, err = conn.Write(streamRequest(st.transport, sip.ACK, me, callID, "z9hG4bK-ack-"+st.name, ";tag="+tag, 1, "", ""))
			require.NoError(t, err)
			res = p.final(t, streamRequest(st.transport, sip.BYE, me, callID, "z9hG4bK-bye-"+st.name, ";tag="+tag, 2, "", ""))
			require.Equal(t, sip.StatusOK, res.StatusCode)
			ev = consumer.next(t)
			require.Equal(t, events.TypeCallEnded, ev.Type)
			require.Equal(t, callID, ev.Subject)
		})
	}
}

// TestTCPACLClosesConnection: a TCP peer no trunk allows gets no answer;
// its connection is closed at accept, before a byte is read.
func TestTCPACLClosesConnection(t *testing.T) {
	t.Parallel()
	in := startIngress(t, []string{"127.0.0.1:1"}, func(c *config.Config) {
		c.Listeners = []config.Listener{{Transport: config.TCP, Address: "127.0.0.1:0"}}
		c.Trunks = []config.Trunk{{Name: "elsewhere", Sources: []string{"192.0.2.0/24"}}}
	})
	conn, err := net.Dial("tcp", in.srv.Addrs()[0].String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	_, err = conn.Write(streamRequest("TCP", sip.OPTIONS, conn.LocalAddr(), "acl", "z9hG4bK-acl", "", 1, "", ""))
	require.NoError(t, err)
	// No answer: the connection was closed at accept (EOF, or a reset
	// when the request reached a socket already closed).
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err := conn.Read(make([]byte, 512))
	require.Zero(t, n)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the connection was kept open")
	require.Eventually(t, func() bool { return in.srv.Counters()["connections_refused_acl"] == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Zero(t, in.srv.Stats().ACLDropped.Load(), "the stranger's request was read")
}
