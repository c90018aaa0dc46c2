package probe

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/pkg/sipprobe"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// report is the JSON report, decoded.
type report struct {
	Targets []Report `json:"targets"`
	Up      int      `json:"up"`
	Down    int      `json:"down"`
	Skipped int      `json:"skipped"`
}

func runJSON(t *testing.T, opts Options) (report, Summary) {
	t.Helper()
	opts.JSON = true
	var out bytes.Buffer
	sum, err := Run(t.Context(), opts, &out)
	require.NoError(t, err)
	var r report
	require.NoError(t, json.Unmarshal(out.Bytes(), &r), out.String())
	return r, sum
}

func target(t *testing.T, r report, name string) Report {
	t.Helper()
	for _, tr := range r.Targets {
		if tr.Name == name {
			return tr
		}
	}
	t.Fatalf("no target %s in the report", name)
	return Report{}
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	return path
}

// TestProbeSIPpUpAndClosedPortDown: a SIPp destination answering OPTIONS
// (deploy/sipp/dest_options.xml) over UDP is reported up with its 200,
// a round-trip time, Allow (REFER accepted) and Supported; a destination on
// a closed TCP port is down with the reason; a tel: route without
// transfer's trunk_host is skipped, and the table says all of it.
func TestProbeSIPpUpAndClosedPortDown(t *testing.T) {
	sippPort := startSIPp(t, "dest_options.xml", 2)
	closed := closedTCPPort(t)
	routerYAML := writeFile(t, "router.yaml", fmt.Sprintf(`
destinations:
  - name: support
    route: sip:queue@127.0.0.1:%d
  - name: gone
    route: sip:queue@127.0.0.1:%d;transport=tcp
  - name: phone
    method: INVITE
    encryption: udp_rtp
    route: tel:+15551234567
`, sippPort, closed))

	r, sum := runJSON(t, Options{RouterConfig: routerYAML, Timeout: 3 * time.Second, WarnDays: 14})
	require.Equal(t, Summary{Up: 1, Down: 1, Skipped: 1}, sum)
	up := target(t, r, "support").Result
	require.NotNil(t, up)
	require.True(t, up.Up, "error: %s", up.Error)
	require.Equal(t, 200, up.Status)
	require.Equal(t, sipprobe.UDP, up.Transport)
	require.Equal(t, "127.0.0.1:"+strconv.Itoa(sippPort), up.Addr)
	require.Positive(t, up.RTT)
	require.True(t, up.AcceptsRefer)
	require.Contains(t, up.Allow, "REFER")
	require.Equal(t, []string{"replaces", "timer"}, up.Supported)

	down := target(t, r, "gone").Result
	require.NotNil(t, down)
	require.False(t, down.Up)
	require.Equal(t, sipprobe.TCP, down.Transport)
	require.Zero(t, down.Status)
	require.Contains(t, down.Error, "refused")

	require.Nil(t, target(t, r, "phone").Result)
	require.Contains(t, target(t, r, "phone").Skip, "trunk_host")

	// The table, and the error that makes `baton probe` exit 1.
	var out bytes.Buffer
	sum, err := Run(t.Context(), Options{RouterConfig: routerYAML, Timeout: 3 * time.Second, Only: []string{"support"}}, &out)
	require.NoError(t, err)
	require.Equal(t, 1, sum.Up)
	lines := strings.Split(out.String(), "\n")
	require.Regexp(t, `^TARGET\s+KIND\s+TRANSPORT\s+ADDRESS\s+STATE\s+STATUS\s+RTT\s+REFER`, lines[0])
	require.Regexp(t, `^support\s+destination\s+UDP\s+127\.0\.0\.1:\d+\s+up\s+200 OK\s+\S+s\s+yes`, lines[1])
	require.Contains(t, out.String(), "1 up, 0 down, 0 skipped, 0 with warnings")
}

// TestProbeWarnsOfAnExpiringCertificate: a TLS destination (INVITE,
// tls_srtp: transfer signals over TLS) whose certificate verifies against
// transfer's ca_file but expires in two days is up, with the certificate's
// expiry and a warning; with --warn-days 1 the warning goes. A certificate
// the CA did not sign is reported as not verifying, and OPTIONS cannot
// pass the handshake: down.
func TestProbeWarnsOfAnExpiringCertificate(t *testing.T) {
	ca, caKey, caPEM := newCA(t)
	expiring := leafCert(t, ca, caKey, 2*24*time.Hour)
	port := startTLSServer(t, expiring)
	caFile := writeFile(t, "ca.pem", string(caPEM))
	transferYAML := writeFile(t, "transfer.yaml", "tls:\n  ca_file: "+caFile+"\n")
	routerYAML := writeFile(t, "router.yaml", fmt.Sprintf(`
destinations:
  - name: desk
    method: INVITE
    route: sip:desk@127.0.0.1:%d
`, port))

	r, sum := runJSON(t, Options{RouterConfig: routerYAML, TransferConfig: transferYAML, Timeout: 3 * time.Second, WarnDays: 14})
	require.Equal(t, Summary{Up: 1, Warnings: 1}, sum)
	res := target(t, r, "desk").Result
	require.NotNil(t, res)
	require.True(t, res.Up, "error: %s", res.Error)
	require.Equal(t, sipprobe.TLS, res.Transport)
	require.Equal(t, 200, res.Status)
	require.NotNil(t, res.Cert)
	require.True(t, res.Cert.Valid, res.Cert.VerifyError)
	require.Equal(t, 1, res.Cert.ExpiresInDays)
	require.WithinDuration(t, expiring.Leaf.NotAfter, res.Cert.NotAfter, time.Second)
	require.Len(t, res.Warnings, 1)
	require.Contains(t, res.Warnings[0], "TLS certificate expires in 1d")

	var out bytes.Buffer
	_, err := Run(t.Context(), Options{RouterConfig: routerYAML, TransferConfig: transferYAML, Timeout: 3 * time.Second, WarnDays: 14}, &out)
	require.NoError(t, err)
	require.Regexp(t, `desk\s+destination\s+TLS\s+127\.0\.0\.1:\d+\s+up \(warning\)\s+200 OK`, out.String())
	require.Contains(t, out.String(), "desk: warning: TLS certificate expires in 1d")

	r, sum = runJSON(t, Options{RouterConfig: routerYAML, TransferConfig: transferYAML, Timeout: 3 * time.Second, WarnDays: 1})
	require.Equal(t, Summary{Up: 1}, sum, "two days left is outside a one-day warning")
	require.Empty(t, target(t, r, "desk").Result.Warnings)

	// Another CA's certificate: read and reported, but not trusted.
	other, otherKey, _ := newCA(t)
	untrusted := startTLSServer(t, leafCert(t, other, otherKey, 90*24*time.Hour))
	routerYAML = writeFile(t, "router.yaml", fmt.Sprintf(`
destinations:
  - name: rogue
    route: sips:desk@127.0.0.1:%d
`, untrusted))
	r, sum = runJSON(t, Options{RouterConfig: routerYAML, TransferConfig: transferYAML, Timeout: 3 * time.Second, WarnDays: 14})
	require.Equal(t, 1, sum.Down)
	res = target(t, r, "rogue").Result
	require.False(t, res.Up)
	require.NotNil(t, res.Cert)
	require.False(t, res.Cert.Valid)
	require.Contains(t, res.Cert.VerifyError, "unknown authority")
	require.Contains(t, res.Error, "certificate")
}

// TestProbeCallPlacesATestCall: --call renders the destination's headers
// with the router (router replay, built from this tree) and places an
// INVITE with them to a SIPp destination (dest_answer.xml), which answers;
// the call is ACKed and ended with a BYE the destination answers 200.
func TestProbeCallPlacesATestCall(t *testing.T) {
	routerBin := buildRouter(t)
	sippPort, logFile := startSIPpCall(t)
	routerYAML := writeFile(t, "router.yaml", fmt.Sprintf(`
destinations:
  - name: desk
    method: INVITE
    encryption: udp_rtp
    route: sip:queue@127.0.0.1:%d
    headers:
      X-Customer-Id: "{Customer-Id}"
      X-Intent: "{intent}"
`, sippPort))
	r, sum := runJSON(t, Options{RouterConfig: routerYAML, Timeout: 5 * time.Second, Call: true, RouterBin: routerBin,
		Test: TestCall{CallerNumber: "+15550100000", CalleeNumber: "+15550199999",
			Variables: map[string]string{"Customer-Id": "C-77", "Intent": "probe"}}})
	// A test call goes only to a destination that answered OPTIONS.
	desk := target(t, r, "desk")
	require.NotNil(t, desk.Result)
	require.True(t, desk.Result.Up, "OPTIONS: %s", desk.Result.Error)
	require.Equal(t, 1, sum.Up)
	require.NotNil(t, desk.Call, "call skipped: %s", desk.CallSkip)
	require.True(t, desk.Call.Answered, "call: %+v", desk.Call)
	require.Equal(t, 200, desk.Call.Status)
	require.Equal(t, 200, desk.Call.ByeStatus)
	require.Contains(t, desk.Call.Provisional, 180)
	log := waitSIPpLog(t, logFile, "BYE call_id=")
	require.Contains(t, log, "x_customer_id=C-77 x_intent=probe", "the rendered headers reached the destination")
}

// TestLoadReadsTargetsAsTransferDials: trunk routes and methods are
// inherited, tel: routes and extensions go through trunk_host, INVITE
// destinations are probed over TLS unless udp_rtp, BYE destinations have
// nothing to probe, trunks with a route and trunk_host are targets too.
func TestLoadReadsTargetsAsTransferDials(t *testing.T) {
	routerYAML := writeFile(t, "router.yaml", `
trunks:
  - name: carrier
    method: REFER
    route: sip:pbx.example.com;transport=tcp
  - name: twilio
destinations:
  - name: via-carrier
    trunk: carrier
  - name: warm
    method: invite
    route: tel:+1 555-0100
  - name: warm-plain
    method: INVITE
    encryption: udp_rtp
    route: "1234"
  - name: back
    method: BYE
unknown_field_the_router_validates: true
`)
	transferYAML := writeFile(t, "transfer.yaml", "invite:\n  trunk_host: sbc.example.com:5080\n")
	plan, err := Load(routerYAML, transferYAML)
	require.NoError(t, err)
	type row struct{ name, kind, method, uri, transport, skip string }
	var got []row
	for _, e := range plan.Entries {
		got = append(got, row{e.Name, e.Kind, e.Method, e.URI, e.Transport, e.Skip})
	}
	require.Equal(t, []row{
		{"via-carrier", KindDestination, "REFER", "sip:pbx.example.com;transport=tcp", "", ""},
		{"warm", KindDestination, "INVITE", "sip:+1 555-0100@sbc.example.com:5080;user=phone", sipprobe.TLS, ""},
		{"warm-plain", KindDestination, "INVITE", "sip:1234@sbc.example.com:5080", "", ""},
		{"back", KindDestination, "BYE", "", "", "BYE hands the call back to the SBC: no route to probe"},
		{"carrier", KindTrunk, "REFER", "sip:pbx.example.com;transport=tcp", "", ""},
		{"trunk_host", KindTrunk, "", "sip:sbc.example.com:5080", "", ""},
	}, got)

	_, err = Load(filepath.Join(t.TempDir(), "missing.yaml"), "")
	require.ErrorIs(t, err, ErrConfig)
	_, err = Load(writeFile(t, "bad.yaml", "destinations: {"), "")
	require.ErrorIs(t, err, ErrConfig)
	_, err = Load(routerYAML, writeFile(t, "t.yaml", "tls:\n  ca_file: /nonexistent/ca.pem\n"))
	require.ErrorIs(t, err, ErrConfig)
	_, err = Run(t.Context(), Options{RouterConfig: routerYAML, Only: []string{"nope"}}, &bytes.Buffer{})
	require.ErrorIs(t, err, ErrConfig)
}

// --- helpers ---

func repoRoot() string { return filepath.Join("..", "..", "..", "..") }

// startSIPp runs a deploy/sipp scenario as a UAS on a free UDP port for
// calls calls and returns the port.
func startSIPp(t *testing.T, scenario string, calls int) int {
	t.Helper()
	port, _ := runSIPp(t, scenario, calls)
	return port
}

// startSIPpCall runs dest_answer.xml for the test call. SIPp's -aa
// answers the probe's OPTIONS 200 first; that OPTIONS counts as one of
// SIPp's calls, hence -m 2.
func startSIPpCall(t *testing.T) (int, string) {
	t.Helper()
	return runSIPp(t, "dest_answer.xml", 2, "-aa")
}

func runSIPp(t *testing.T, scenario string, calls int, extra ...string) (int, string) {
	t.Helper()
	bin, err := exec.LookPath("sipp")
	require.NoError(t, err, "SIPp is required (Debian package sip-tester)")
	dir, err := filepath.Abs(filepath.Join(repoRoot(), "deploy", "sipp"))
	require.NoError(t, err)
	port := freeUDPPort(t)
	tmp := t.TempDir()
	logFile := filepath.Join(tmp, "sipp.log")
	var out bytes.Buffer
	args := append([]string{
		"-sf", filepath.Join(dir, scenario), "-i", "127.0.0.1", "-p", strconv.Itoa(port),
		"-m", strconv.Itoa(calls), "-mp", strconv.Itoa(freeUDPPort(t)), "-mi", "127.0.0.1",
		"-timeout", "60s", "-timeout_error", "-trace_logs", "-log_file", logFile,
		"-trace_msg", "-message_file", filepath.Join(tmp, "messages.log"), "-nostdin",
	}, extra...)
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			msgs, _ := os.ReadFile(filepath.Join(tmp, "messages.log"))
			t.Logf("sipp output:\n%s\nmessages:\n%s", out.String(), msgs)
		}
	})
	require.Eventually(t, func() bool { return udpBound(t, port) }, 10*time.Second, 5*time.Millisecond, "sipp did not bind its port")
	return port, logFile
}

// waitSIPpLog waits for SIPp's log to hold want and returns it.
func waitSIPpLog(t *testing.T, path, want string) string {
	t.Helper()
	var log string
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(path)
		log = string(b)
		return strings.Contains(log, want)
	}, 10*time.Second, 10*time.Millisecond, "sipp log has no %q", want)
	return log
}

// udpBound reads the kernel's socket table: binding the port ourselves
// would race SIPp's own bind.
func udpBound(t *testing.T, port int) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/net/udp")
	require.NoError(t, err)
	suffix := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(data), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 1 && strings.HasSuffix(f[1], suffix) {
			return true
		}
	}
	return false
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	port := c.LocalAddr().(*net.UDPAddr).Port
	require.NoError(t, c.Close())
	return port
}

// closedTCPPort is a port nothing listens on: bound, then closed.
func closedTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

func buildRouter(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "router")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./services/router/cmd/router")
	cmd.Dir = repoRoot()
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "build router: %s", out)
	return bin
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "baton probe test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return ca, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// leafCert is a server certificate for 127.0.0.1 signed by ca, valid from
// an hour ago for life.
func leafCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, life time.Duration) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "desk.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(life),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// startTLSServer is a sipgo SIP server on TLS in the test process that
// answers OPTIONS 200 with Allow and Supported; it returns the port.
func startTLSServer(t *testing.T, cert tls.Certificate) int {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("probe-test-tls"))
	require.NoError(t, err)
	srv, err := sipgo.NewServer(ua)
	require.NoError(t, err)
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
		res.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS"))
		res.AppendHeader(sip.NewHeader("Supported", "timer"))
		_ = tx.Respond(res)
	})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := tls.NewListener(raw, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.ServeTLS(ln)
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-served
		_ = srv.Close()
		_ = ua.Close()
	})
	return raw.Addr().(*net.TCPAddr).Port
}
