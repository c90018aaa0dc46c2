package transfer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/services/transfer/internal/sdp"
)

// selfSigned is a certificate for 127.0.0.1 that is its own CA.
type selfSigned struct {
	cert tls.Certificate
	pool *x509.CertPool
}

func newSelfSigned(t *testing.T, name string) selfSigned {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return selfSigned{cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool: pool}
}

// destOptions shape a test destination.
type destOptions struct {
	// suite is the SDES suite it answers with; empty answers plain RTP.
	suite string
	// tls, when set, makes it a SIP-over-TLS server with this config.
	tls *tls.Config
	// echo sends every packet back (re-encrypted with its own key).
	noEcho bool
	// ring sends 180 Ringing before the 200.
	ring bool
}

// mediaPacket is one media packet a destination decrypted.
type mediaPacket struct {
	header  rtp.Header
	payload []byte
}

// destPeer is a sipgo destination (UAS) over UDP or TLS that answers
// RTP/AVP or RTP/SAVP (SDES, its own key) and echoes what it decrypts.
type destPeer struct {
	addr    net.Addr
	echoed  atomic.Int64
	byes    atomic.Int64
	mu      sync.Mutex
	invites []*sip.Request
	packets []mediaPacket
}

func (d *destPeer) invite(t *testing.T) *sip.Request {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	require.NotEmpty(t, d.invites)
	return d.invites[0]
}

func (d *destPeer) media() []mediaPacket {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]mediaPacket(nil), d.packets...)
}

func (d *destPeer) port() int {
	if a, ok := d.addr.(*net.TCPAddr); ok {
		return a.Port
	}
	return d.addr.(*net.UDPAddr).Port
}

func startDestination(t *testing.T, o destOptions) *destPeer {
	t.Helper()
	uaOpts := []sipgo.UserAgentOption{sipgo.WithUserAgent("test-destination")}
	ua, err := sipgo.NewUA(uaOpts...)
	require.NoError(t, err)
	srv, err := sipgo.NewServer(ua)
	require.NoError(t, err)
	var lc net.ListenConfig
	media, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	d := &destPeer{}
	var wg sync.WaitGroup
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		d.mu.Lock()
		d.invites = append(d.invites, req)
		d.mu.Unlock()
		offer, err := sdp.Parse(string(req.Body()))
		wantProto := "RTP/AVP"
		if o.suite != "" {
			wantProto = "RTP/SAVP"
		}
		if err != nil || offer.Proto != wantProto {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil))
			return
		}
		var dec, enc *srtp.Context
		var ours sdp.Crypto
		if o.suite != "" {
			var theirs sdp.Crypto
			for _, c := range offer.Crypto {
				if c.Suite == o.suite {
					theirs = c
				}
			}
			ours, err = sdp.NewCrypto(theirs.Tag, o.suite)
			if err != nil || theirs.Suite == "" {
				_ = tx.Respond(sip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil))
				return
			}
			var derr, eerr error
			dec, derr = srtpContext(theirs)
			enc, eerr = srtpContext(ours)
			if derr != nil || eerr != nil {
				_ = tx.Respond(sip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil))
				return
			}
		}
		wg.Go(func() { d.serveMedia(media, dec, enc, !o.noEcho) })
		ans := sdp.Session{Origin: "dest 1 1 IN IP4 127.0.0.1", Addr: media.LocalAddr().(*net.UDPAddr).AddrPort(),
			Proto: wantProto, Formats: offer.Formats[:1]}
		if o.suite != "" {
			ans.Crypto = []sdp.Crypto{ours}
		}
		if o.ring {
			ringing := sip.NewResponseFromRequest(req, 180, "Ringing", nil)
			ringing.To().Params.Add("tag", "dest-tag")
			_ = tx.Respond(ringing)
			time.Sleep(50 * time.Millisecond) // a phone rings a while before it is picked up
		}
		res := sip.NewResponseFromRequest(req, 200, "OK", []byte(ans.String()))
		res.To().Params.Add("tag", "dest-tag")
		contact := sip.Uri{Scheme: "sip", User: "dest", Host: "127.0.0.1", Port: d.port()}
		if o.tls != nil {
			contact.Scheme = "sips"
		}
		res.AppendHeader(&sip.ContactHeader{Address: contact})
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		_ = tx.Respond(res)
	})
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		d.byes.Add(1)
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	served := make(chan struct{})
	var closer func() error
	if o.tls != nil {
		ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
		require.NoError(t, err)
		d.addr = ln.Addr()
		tln := tls.NewListener(ln, o.tls)
		closer = tln.Close
		go func() {
			defer close(served)
			_ = srv.ServeTLS(tln)
		}()
	} else {
		conn, err := lc.ListenPacket(t.Context(), "udp", "127.0.0.1:0")
		require.NoError(t, err)
		d.addr = conn.LocalAddr()
		closer = conn.Close
		go func() {
			defer close(served)
			_ = srv.ServeUDP(conn)
		}()
	}
	t.Cleanup(func() {
		require.NoError(t, ua.Close())
		_ = closer()
		_ = media.Close()
		<-served
		wg.Wait()
	})
	return d
}

// serveMedia records every packet it can decrypt and echoes it.
func (d *destPeer) serveMedia(media *net.UDPConn, dec, enc *srtp.Context, echo bool) {
	buf := make([]byte, 1500)
	for {
		n, from, err := media.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		plain := append([]byte(nil), buf[:n]...)
		if dec != nil {
			if plain, err = dec.DecryptRTP(nil, buf[:n], nil); err != nil {
				continue
			}
		}
		var p rtp.Packet
		if err := p.Unmarshal(plain); err != nil {
			continue
		}
		d.mu.Lock()
		d.packets = append(d.packets, mediaPacket{header: p.Header, payload: append([]byte(nil), p.Payload...)})
		d.mu.Unlock()
		if !echo {
			continue
		}
		out := plain
		if enc != nil {
			if out, err = enc.EncryptRTP(nil, plain, nil); err != nil {
				continue
			}
		}
		if _, err := media.WriteToUDPAddrPort(out, from); err == nil {
			d.echoed.Add(1)
		}
	}
}

// writeWAV writes an 8 kHz mono 16-bit PCM WAV file of samples.
func writeWAV(t *testing.T, samples []int16) string {
	t.Helper()
	data := make([]byte, 2*len(samples))
	for i, s := range samples {
		binary.LittleEndian.PutUint16(data[2*i:], uint16(s))
	}
	b := []byte("RIFF\x00\x00\x00\x00WAVEfmt ")
	b = binary.LittleEndian.AppendUint32(b, 16)
	b = binary.LittleEndian.AppendUint16(b, 1)    // PCM
	b = binary.LittleEndian.AppendUint16(b, 1)    // mono
	b = binary.LittleEndian.AppendUint32(b, 8000) // Hz
	b = binary.LittleEndian.AppendUint32(b, 16000)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 16)
	b = append(b, "data"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)-8))
	path := filepath.Join(t.TempDir(), "whisper.wav")
	require.NoError(t, os.WriteFile(path, b, 0o600))
	return path
}
