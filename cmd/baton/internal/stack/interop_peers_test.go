//go:build interop

package stack

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/stretchr/testify/require"
)

// The independent SIP software the interop suite drives (Debian's
// packages): Kamailio as the carrier's SBC, baresip and linphonec as
// callers and human agents. Each runs as its own process from a config
// under deploy/interop, filled in for this run.

// peerProc is one peer process, its output in a log file; it is ended
// (SIGTERM to its process group, SIGKILL after 5 s) at the test's end.
type peerProc struct {
	name string
	cmd  *exec.Cmd
	log  string
	exit chan struct{}
}

func startPeer(t *testing.T, name, logPath string, stdin io.Reader, bin string, args ...string) *peerProc {
	t.Helper()
	f, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr, cmd.Stdin = f, f, stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start(), "start %s", name)
	p := &peerProc{name: name, cmd: cmd, log: logPath, exit: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = f.Close()
		close(p.exit)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.exit:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.exit
		}
		if t.Failed() {
			t.Logf("--- %s log (tail) ---\n%s", name, tail(logPath, 40))
		}
	})
	return p
}

// alive fails the test when the peer has exited.
func (p *peerProc) alive(t *testing.T) {
	t.Helper()
	select {
	case <-p.exit:
		t.Fatalf("%s exited; last lines of %s:\n%s", p.name, p.log, tail(p.log, 30))
	default:
	}
}

// render fills the template file src (under deploy/interop) with vars
// into dst.
func render(t *testing.T, repo, src, dst string, vars any) {
	t.Helper()
	tpl, err := template.ParseFiles(filepath.Join(repo, "deploy", "interop", src))
	require.NoError(t, err)
	var b bytes.Buffer
	require.NoError(t, tpl.Execute(&b, vars))
	require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
	require.NoError(t, os.WriteFile(dst, b.Bytes(), 0o644))
}

// udpPort is a free UDP port on 127.0.0.1 (TCP too).
func udpPort(t *testing.T) int {
	t.Helper()
	p, err := freePort()
	require.NoError(t, err)
	return p
}

// portPair is a free port whose next port is free too: baresip listens
// for SIP on UDP and TCP at its sip_listen port and for SIP over TLS on the
// next one, whatever sip_transports says.
func portPair(t *testing.T) int {
	t.Helper()
	for range 50 {
		p := udpPort(t)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		if err == nil {
			_ = l.Close()
			return p
		}
	}
	t.Fatal("no two free ports in a row")
	return 0
}

// kamailio is the SBC: Kamailio 5.6 with deploy/interop/kamailio.cfg.tmpl.
type kamailio struct {
	proc *peerProc
	addr string // host:port, UDP and TCP
}

type kamailioVars struct {
	// TLSPort, when set, adds a TLS listener with the certificate and
	// key TLSConfig's profiles name.
	TLSPort   int
	TLSConfig string

	Host, ModulePath                  string
	Port                              int
	Ingress, Human, NoAnswer          string
	HumanUser, NoAnswerUser, BusyUser string
}

func startKamailio(t *testing.T, repo, dir string, v kamailioVars) *kamailio {
	t.Helper()
	requireTools(t, "kamailio")
	mods, err := filepath.Glob("/usr/lib/*/kamailio/modules/tm.so")
	require.NoError(t, err)
	require.NotEmpty(t, mods, "kamailio's modules (tm.so) not found under /usr/lib/*/kamailio/modules")
	v.ModulePath = filepath.Dir(mods[0])
	if v.TLSPort != 0 {
		_, err := os.Stat(filepath.Join(v.ModulePath, "tls.so"))
		require.NoError(t, err, "kamailio's tls module: install kamailio-tls-modules (make deps)")
	}
	cfg := filepath.Join(dir, "kamailio.cfg")
	render(t, repo, "kamailio.cfg.tmpl", cfg, v)
	out, err := exec.Command("kamailio", "-c", "-f", cfg).CombinedOutput()
	require.NoError(t, err, "kamailio -c: %s", out)
	k := &kamailio{addr: net.JoinHostPort(v.Host, strconv.Itoa(v.Port))}
	k.proc = startPeer(t, "kamailio", filepath.Join(dir, "kamailio.log"), nil, "kamailio",
		"-f", cfg, "-DD", "-E", "-m", "64", "-M", "8", "-Y", dir, "-P", filepath.Join(dir, "kamailio.pid"))
	waitFor(t, "kamailio answering OPTIONS", 20*time.Second, func() error {
		k.proc.alive(t)
		ctx, cancel := contextTimeout(t, time.Second)
		defer cancel()
		return sipOptions(ctx, k.addr)
	})
	return k
}

// writeCert writes a self-signed certificate for 127.0.0.1 (its own CA)
// and its key as PEM files in dir: Kamailio's and transfer's TLS.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	return certFile, keyFile
}

// sbcMessage is one request or reply Kamailio logged (an "IOP" line).
type sbcMessage struct {
	At     time.Time
	Reply  bool
	Status int // replies
	Method string
	CallID string
	CSeq   string
	Source string
	RURI   string // requests
}

// messages reads every request and reply Kamailio has logged so far.
func (k *kamailio) messages(t *testing.T) []sbcMessage {
	t.Helper()
	data, err := os.ReadFile(k.proc.log)
	require.NoError(t, err)
	var out []sbcMessage
	for _, line := range strings.Split(string(data), "\n") {
		_, rest, ok := strings.Cut(line, "IOP ")
		if !ok {
			continue
		}
		kind, rest, _ := strings.Cut(rest, " ")
		m := sbcMessage{Reply: kind == "RPL"}
		for _, f := range strings.Fields(rest) {
			key, val, _ := strings.Cut(f, "=")
			switch key {
			case "t":
				sec, frac, _ := strings.Cut(val, ".")
				s, _ := strconv.ParseInt(sec, 10, 64)
				us, _ := strconv.ParseInt(frac, 10, 64)
				m.At = time.Unix(s, us*1000)
			case "s":
				m.Status, _ = strconv.Atoi(val)
			case "m":
				m.Method = val
			case "ci":
				m.CallID = val
			case "cs":
				m.CSeq = val
			case "src":
				m.Source = val
			case "ru":
				m.RURI = val
			}
		}
		out = append(out, m)
	}
	return out
}

// baresip is a baresip 1.0 user agent driven over ctrl_tcp.
type baresip struct {
	t       *testing.T
	name    string
	proc    *peerProc
	conn    net.Conn
	recDir  string
	sipAddr string

	mu     sync.Mutex
	events []map[string]any
	resp   chan map[string]any
	token  int
}

type baresipVars struct {
	Host, ModulePath, RecordDir, User, AnswerMode string
	SIPPort, CtrlPort, RTPMin, RTPMax, ToneHz     int
}

// startBaresip runs baresip as user, playing a sine of toneHz and
// recording what it hears under dir/rec; answerMode is manual or auto.
func startBaresip(t *testing.T, repo, dir, user string, toneHz int, answerMode string, rtpMin int) *baresip {
	t.Helper()
	requireTools(t, "baresip")
	conf := filepath.Join(dir, user)
	v := baresipVars{
		Host: "127.0.0.1", ModulePath: "/usr/lib/baresip/modules", RecordDir: filepath.Join(conf, "rec"),
		User: user, AnswerMode: answerMode, SIPPort: portPair(t), CtrlPort: udpPort(t),
		RTPMin: rtpMin, RTPMax: rtpMin + 99, ToneHz: toneHz,
	}
	require.NoError(t, os.MkdirAll(v.RecordDir, 0o755))
	render(t, repo, "baresip/config.tmpl", filepath.Join(conf, "config"), v)
	render(t, repo, "baresip/accounts.tmpl", filepath.Join(conf, "accounts"), v)
	b := &baresip{t: t, name: "baresip-" + user, recDir: v.RecordDir, resp: make(chan map[string]any, 16),
		sipAddr: net.JoinHostPort(v.Host, strconv.Itoa(v.SIPPort))}
	b.proc = startPeer(t, b.name, filepath.Join(dir, user+".log"), nil, "baresip", "-f", conf)
	ctrl := net.JoinHostPort(v.Host, strconv.Itoa(v.CtrlPort))
	waitFor(t, b.name+" ctrl_tcp", 20*time.Second, func() error {
		b.proc.alive(t)
		c, err := net.Dial("tcp", ctrl)
		if err != nil {
			return err
		}
		b.conn = c
		return nil
	})
	t.Cleanup(func() { _ = b.conn.Close() })
	go b.read()
	return b
}

// read takes netstrings ("len:json,") off the control connection:
// responses to commands and events.
func (b *baresip) read() {
	r := bufio.NewReader(b.conn)
	for {
		n, err := r.ReadString(':')
		if err != nil {
			return
		}
		size, err := strconv.Atoi(strings.TrimSpace(n[:len(n)-1]))
		if err != nil || size > 1<<20 {
			return
		}
		buf := make([]byte, size+1)
		if _, err := io.ReadFull(r, buf); err != nil {
			return
		}
		var m map[string]any
		if json.Unmarshal(buf[:size], &m) != nil {
			continue
		}
		if m["response"] == true {
			b.resp <- m
			continue
		}
		b.mu.Lock()
		b.events = append(b.events, m)
		b.mu.Unlock()
	}
}

// do sends one command (a menu long command, as "/dial" takes it) and
// returns its response's data.
func (b *baresip) do(t *testing.T, command, params string) string {
	t.Helper()
	data, err := b.try(command, params)
	require.NoError(t, err)
	return data
}

// try is do that returns the failure instead of failing the test.
func (b *baresip) try(command, params string) (string, error) {
	b.mu.Lock()
	b.token++
	token := b.token
	b.mu.Unlock()
	msg, err := json.Marshal(map[string]string{"command": command, "params": params, "token": strconv.Itoa(token)})
	if err != nil {
		return "", err
	}
	if _, err := fmt.Fprintf(b.conn, "%d:%s,", len(msg), msg); err != nil {
		return "", fmt.Errorf("%s: send %s: %w", b.name, command, err)
	}
	select {
	case r := <-b.resp:
		data, _ := r["data"].(string)
		if r["ok"] != true {
			return data, fmt.Errorf("%s: %s %s: %s", b.name, command, params, data)
		}
		return data, nil
	case <-time.After(10 * time.Second):
		return "", fmt.Errorf("%s: no response to %s %s", b.name, command, params)
	}
}

// waitEvent waits for the next event of type typ (CALL_ESTABLISHED,
// CALL_CLOSED, ...) after the first skip events, and returns it with the
// index after it.
func (b *baresip) waitEvent(t *testing.T, typ string, from int, limit time.Duration) (map[string]any, int) {
	t.Helper()
	var ev map[string]any
	next := from
	waitFor(t, b.name+" event "+typ, limit, func() error {
		b.proc.alive(t)
		b.mu.Lock()
		defer b.mu.Unlock()
		for i := from; i < len(b.events); i++ {
			if b.events[i]["type"] == typ {
				ev, next = b.events[i], i+1
				return nil
			}
		}
		return fmt.Errorf("not yet; events so far: %v", eventTypes(b.events))
	})
	return ev, next
}

// eventCount is how many events arrived so far (an index for waitEvent).
func (b *baresip) eventCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.events)
}

func eventTypes(evs []map[string]any) []string {
	var out []string
	for _, e := range evs {
		out = append(out, fmt.Sprint(e["type"]))
	}
	return out
}

// recordings are the WAV files sndfile wrote with what baresip decoded
// (what it heard), oldest first.
func (b *baresip) recordings(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(b.recDir, "dump-*-dec.wav"))
	require.NoError(t, err)
	return files
}

// linphonec is linphonec 5.1 driven through its stdin, its output logged.
type linphonec struct {
	t       *testing.T
	proc    *peerProc
	stdin   io.WriteCloser
	sipAddr string
	record  string
}

type linphonecVars struct {
	Host, User              string
	SIPPort, RTPMin, RTPMax int
	// SRTP accepts SDES SRTP offers as well as plain RTP ones.
	SRTP bool
}

// startLinphonec runs linphonec answering every call itself (-a), playing
// play (a WAV file) into its calls and recording what it hears.
func startLinphonec(t *testing.T, repo, dir, user, play string, rtpMin int, srtp bool) *linphonec {
	t.Helper()
	requireTools(t, "linphonec")
	v := linphonecVars{Host: "127.0.0.1", User: user, SIPPort: udpPort(t), RTPMin: rtpMin, RTPMax: rtpMin + 99, SRTP: srtp}
	home := filepath.Join(dir, "linphonec-"+user)
	rc := filepath.Join(home, "linphonerc")
	render(t, repo, "linphonec/linphonerc.tmpl", rc, v)
	pr, pw := io.Pipe()
	l := &linphonec{t: t, stdin: pw, sipAddr: net.JoinHostPort(v.Host, strconv.Itoa(v.SIPPort)),
		record: filepath.Join(home, "heard.wav")}
	// linphonec keeps its call log database under $HOME.
	l.proc = startPeerEnv(t, "linphonec-"+user, filepath.Join(dir, "linphonec-"+user+".log"), pr,
		[]string{"HOME=" + home}, "linphonec", "-c", rc, "-a", "-d", "3")
	t.Cleanup(func() { _ = pw.Close() })
	l.send(t, "soundcard use files")
	l.send(t, "play "+play)
	l.send(t, "record "+l.record)
	waitFor(t, "linphonec listening on "+l.sipAddr, 20*time.Second, func() error {
		l.proc.alive(t)
		ctx, cancel := contextTimeout(t, time.Second)
		defer cancel()
		return sipOptions(ctx, l.sipAddr)
	})
	return l
}

// send writes one command line to linphonec.
func (l *linphonec) send(t *testing.T, line string) {
	t.Helper()
	_, err := io.WriteString(l.stdin, line+"\n")
	require.NoError(t, err)
}

// waitLog waits until linphonec's output has a line containing s, after
// offset bytes, and returns the offset after it.
func (l *linphonec) waitLog(t *testing.T, s string, offset int, limit time.Duration) int {
	t.Helper()
	next := offset
	waitFor(t, "linphonec saying "+strconv.Quote(s), limit, func() error {
		l.proc.alive(t)
		data, err := os.ReadFile(l.proc.log)
		if err != nil {
			return err
		}
		if offset > len(data) {
			offset = len(data)
		}
		i := bytes.Index(data[offset:], []byte(s))
		if i < 0 {
			return fmt.Errorf("not yet")
		}
		next = offset + i + len(s)
		return nil
	})
	return next
}

// logSize is the length of linphonec's output so far (an offset for
// waitLog).
func (l *linphonec) logSize() int {
	st, err := os.Stat(l.proc.log)
	if err != nil {
		return 0
	}
	return int(st.Size())
}

func startPeerEnv(t *testing.T, name, logPath string, stdin io.Reader, env []string, bin string, args ...string) *peerProc {
	t.Helper()
	// startPeer with env added: the same process handling.
	f, err := os.Create(logPath)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		if k == "HOME" {
			// linphonec's core does not start (it never listens)
			// when it cannot open its call log database here.
			require.NoError(t, os.MkdirAll(filepath.Join(v, ".local", "share", "linphone"), 0o755))
		}
	}
	p := startPeer(t, name, logPath, stdin, "env", append(append(env, bin), args...)...)
	return p
}
