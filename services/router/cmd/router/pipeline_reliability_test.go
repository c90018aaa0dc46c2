//go:build reliability

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/pkg/logtest"
	"github.com/baton-voice/baton/pkg/startup"
)

// pipeline is the router (this package's run, with its agent API and
// metrics) and the transfer service (the real binary) on one kfake
// cluster, with a raw UDP SIP peer as the carrier's SBC: every call's
// dialog, and transfer's trunk, point at it, so every SIP request
// transfer sends for any handoff lands there, byte for byte.
type pipeline struct {
	brokers     []string
	api         string // http://host:port
	routerOps   string // host:port of the router's /metrics
	transferOps string
	far         *farEnd
	pub         *kgo.Client
	token       string
}

// pipelineConfig is what a test adds to the router's configuration.
type pipelineConfig struct {
	// routerYAML is appended to the router's file (destinations, rules,
	// allowlist…).
	routerYAML string
	// webhook, when set, is the pre-call webhook.
	webhook http.Handler
}

const testToken = "reliability-token"

func startPipeline(t *testing.T, pc pipelineConfig) *pipeline {
	t.Helper()
	bin := transferBinary(t)
	brokers := kafkatest.NewCluster(t, 1)
	far := startFarEnd(t)
	p := &pipeline{brokers: brokers, far: far, token: testToken}

	t.Setenv("BATON_RELIABILITY_TOKENS", testToken)
	routerOps := freeTCP(t)
	doc := fmt.Sprintf(`kafka:
  brokers: [%q]
  partitions: 1
metrics:
  listen: %s
api:
  listen: 127.0.0.1:0
  tokens_env: BATON_RELIABILITY_TOKENS
reload:
  poll_interval: 0s
`, brokers[0], routerOps)
	if pc.webhook != nil {
		hook := &http.Server{Handler: pc.webhook, ReadHeaderTimeout: 5 * time.Second}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		go func() { _ = hook.Serve(ln) }()
		t.Cleanup(func() { _ = hook.Close() })
		doc += fmt.Sprintf("precall:\n  url: http://%s/precall\n", ln.Addr())
	}
	path := writeConfig(t, doc+pc.routerYAML)
	ctx, cancel := context.WithCancel(t.Context())
	var stderr logtest.Buffer
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, []string{"--config", path}, &stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-exit:
			if code != startup.ExitOK {
				t.Errorf("router exited %d: %s", code, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("router did not stop")
		}
	})
	addrRE := regexp.MustCompile(`"msg":"agent API listening".*?"addr":"([^"]+)"`)
	require.Eventually(t, func() bool {
		return strings.Contains(stderr.String(), "router started") && addrRE.MatchString(stderr.String())
	}, 30*time.Second, 20*time.Millisecond, "router: %s", stderr.String())
	p.api = "http://" + addrRE.FindStringSubmatch(stderr.String())[1]
	p.routerOps = routerOps

	p.transferOps = freeTCP(t)
	farAddr := far.addr().String()
	tdoc := fmt.Sprintf(`listen: 127.0.0.1:0
external_host: 127.0.0.1
kafka:
  brokers: [%q]
  partitions: 1
metrics:
  listen: %s
log:
  level: info
notify_timeout: 2s
bye_after_refer: 0s
max_command_age: 0s
invite:
  trunk_host: %s
`, brokers[0], p.transferOps, farAddr)
	tpath := filepath.Join(t.TempDir(), "transfer.yaml")
	require.NoError(t, os.WriteFile(tpath, []byte(tdoc), 0o600))
	tctx, tcancel := context.WithCancel(context.WithoutCancel(t.Context()))
	cmd := exec.CommandContext(tctx, bin, "--config", tpath)
	var tlog bytes.Buffer
	var tmu sync.Mutex
	cmd.Stdout = &lockedWriter{w: &tlog, mu: &tmu}
	cmd.Stderr = cmd.Stdout
	require.NoError(t, cmd.Start())
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-waited:
		case <-time.After(20 * time.Second):
			tcancel()
			<-waited
		}
		tcancel()
		if t.Failed() {
			tmu.Lock()
			t.Logf("transfer log:\n%s", tlog.String())
			tmu.Unlock()
		}
	})
	for _, ops := range []string{p.routerOps, p.transferOps} {
		require.Eventually(t, func() bool { return get(t, "http://"+ops+"/readyz") == http.StatusOK }, 60*time.Second,
			50*time.Millisecond, "%s never ready", ops)
	}

	pub, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	require.NoError(t, err)
	t.Cleanup(pub.Close)
	p.pub = pub
	return p
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// transferBinary is $BATON_BIN_DIR/transfer (make builds it), else a
// fresh build of it.
func transferBinary(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("BATON_BIN_DIR"); dir != "" {
		bin := filepath.Join(dir, "transfer")
		_, err := os.Stat(bin)
		require.NoError(t, err, "BATON_BIN_DIR has no transfer binary: run make build")
		return bin
	}
	bin := filepath.Join(t.TempDir(), "transfer")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "github.com/baton-voice/baton/services/transfer/cmd/transfer")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "build transfer: %s", out)
	return bin
}

func freeTCP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func get(t *testing.T, url string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// call makes an agent API request; body is marshalled to JSON unless it
// is a string (sent as is).
func (p *pipeline) call(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		require.NoError(t, err)
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, p.api+path, r)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	var out map[string]any
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if len(data) > 0 {
		require.NoError(t, json.Unmarshal(data, &out), "%s", data)
	}
	return resp.StatusCode, out
}

// dialogTo is a call's dialog with the far end.
func (p *pipeline) dialog(callID string) *batonv1.Dialog {
	a := p.far.addr().String()
	return &batonv1.Dialog{
		CallId: "sip-" + callID, LocalTag: "ingress-tag", RemoteTag: "sbc-tag",
		LocalUri: "sip:agent@127.0.0.1:5060", RemoteUri: "sip:+4915112345678@" + a, RemoteTarget: "sip:sbc@" + a,
		Transport: batonv1.Transport_TRANSPORT_UDP, NextLocalCseq: 1, LocalContact: "<sip:baton@127.0.0.1:5060>",
	}
}

// startCall publishes a CallStarted as ingress would and waits until the
// router serves the call.
func (p *pipeline) startCall(t *testing.T, callID string, vars map[string]string) {
	t.Helper()
	ev, err := events.New("baton/ingress", callID, &batonv1.CallStarted{Dialog: p.dialog(callID),
		CallerNumber: "+4915112345678", CalleeNumber: "+4930999", Variables: vars}, time.Now())
	require.NoError(t, err)
	rec, err := events.Encode("baton.calls", ev)
	require.NoError(t, err)
	require.NoError(t, p.pub.ProduceSync(t.Context(), rec).FirstErr())
	require.Eventually(t, func() bool { code, _ := p.call(t, "GET", "/v1/calls/"+callID, nil); return code == 200 },
		30*time.Second, 20*time.Millisecond, "call %s never served", callID)
}

// handoffStatus waits until the handoff of request requestID (any, when
// empty) has one of the statuses want.
func (p *pipeline) handoffStatus(t *testing.T, callID, requestID string, want ...string) map[string]any {
	t.Helper()
	var h map[string]any
	require.Eventually(t, func() bool {
		_, h = p.call(t, "GET", "/v1/calls/"+callID+"/handoff", nil)
		if requestID != "" && h["request_id"] != requestID {
			return false
		}
		for _, w := range want {
			if h["status"] == w {
				return true
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "call %s handoff %s never %v: %v", callID, requestID, want, h)
	return h
}

// metric reads one sample of a Prometheus text exposition at ops: the
// series name with exactly labels (0 when absent).
func metric(t *testing.T, ops, name string, labels map[string]string) float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+ops+"/metrics", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		series, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		n, lbl, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		got := map[string]string{}
		for _, kv := range strings.Split(strings.TrimSuffix(lbl, "}"), ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				got[k] = strings.Trim(v, `"`)
			}
		}
		if len(got) != len(labels) {
			continue
		}
		match := true
		for k, v := range labels {
			match = match && got[k] == v
		}
		if match {
			f, err := strconv.ParseFloat(value, 64)
			require.NoError(t, err)
			return f
		}
	}
	require.NoError(t, sc.Err())
	return 0
}

// records reads every committed record of topic from the start until
// enough says it has what it needs (then a little more, for anything
// late), decoded.
func (p *pipeline) records(t *testing.T, topic string, enough func([]events.Event) bool) []events.Event {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	require.NoError(t, err)
	defer cl.Close()
	var out []events.Event
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var settle <-chan time.Time
	for {
		pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		fetches := cl.PollFetches(pctx)
		pcancel()
		for _, rec := range fetches.Records() {
			ev, err := events.Decode(rec)
			require.NoError(t, err)
			out = append(out, ev)
		}
		if settle == nil && enough(out) {
			settle = time.After(time.Second)
		}
		select {
		case <-settle:
			return out
		case <-ctx.Done():
			t.Fatalf("%s: only %d records", topic, len(out))
		default:
		}
	}
}

// farEnd is the carrier's SBC: a plain UDP socket that keeps every
// datagram and declines every REFER (603), so a transfer fails and the
// call returns to the agent.
type farEnd struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  [][]byte
	done chan struct{}
}

func startFarEnd(t *testing.T) *farEnd {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	require.NoError(t, err)
	f := &farEnd{conn: conn, done: make(chan struct{})}
	go f.serve()
	t.Cleanup(func() {
		_ = conn.Close()
		<-f.done
	})
	return f
}

func (f *farEnd) addr() netip.AddrPort { return f.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (f *farEnd) serve() {
	defer close(f.done)
	buf := make([]byte, 65535)
	for {
		n, from, err := f.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		data := append([]byte(nil), buf[:n]...)
		f.mu.Lock()
		f.got = append(f.got, data)
		f.mu.Unlock()
		if res := answer(data); res != nil {
			_, _ = f.conn.WriteToUDPAddrPort(res, from)
		}
	}
}

// answer is the far end's response to a request: REFER 603, INVITE 486,
// anything else 200; ACKs and responses get none. It copies Via, From,
// To (tagged), Call-ID and CSeq (RFC 3261 8.2.6.2).
func answer(req []byte) []byte {
	head, _, ok := bytes.Cut(req, []byte("\r\n\r\n"))
	if !ok {
		return nil
	}
	lines := strings.Split(string(head), "\r\n")
	method, _, _ := strings.Cut(lines[0], " ")
	if method == "ACK" || method == "SIP/2.0" {
		return nil
	}
	status := "200 OK"
	switch method {
	case "REFER":
		status = "603 Decline"
	case "INVITE":
		status = "486 Busy Here"
	}
	var b strings.Builder
	b.WriteString("SIP/2.0 " + status + "\r\n")
	for _, l := range lines[1:] {
		name, _, _ := strings.Cut(l, ":")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "via", "v", "from", "f", "call-id", "i", "cseq":
			b.WriteString(l + "\r\n")
		case "to", "t":
			if !strings.Contains(l, ";tag=") {
				l += ";tag=far"
			}
			b.WriteString(l + "\r\n")
		}
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return []byte(b.String())
}

// wireRequest is one datagram's head, checked.
type wireRequest struct {
	method  string
	callID  string
	headers map[string][]string // lower-cased name → values
}

var headerName = regexp.MustCompile("^[A-Za-z0-9.!%*_+`'~-]+$")

// requests returns what reached the far end, each datagram checked: no
// NUL in the head, every line ends in CRLF with no other CR or LF, every
// header line a token name and a colon.
func (f *farEnd) requests(t *testing.T) []wireRequest {
	t.Helper()
	f.mu.Lock()
	got := append([][]byte(nil), f.got...)
	f.mu.Unlock()
	var out []wireRequest
	for _, data := range got {
		head, _, ok := bytes.Cut(data, []byte("\r\n\r\n"))
		require.True(t, ok, "no end of head: %q", data)
		require.NotContains(t, string(head), "\x00", "NUL on the wire: %q", data)
		lines := strings.Split(string(head), "\r\n")
		m := wireRequest{headers: map[string][]string{}}
		m.method, _, _ = strings.Cut(lines[0], " ")
		for _, l := range lines {
			require.NotContains(t, l, "\r", "bare CR on the wire: %q", data)
			require.NotContains(t, l, "\n", "bare LF on the wire: %q", data)
		}
		for _, l := range lines[1:] {
			name, value, ok := strings.Cut(l, ":")
			require.True(t, ok && headerName.MatchString(name), "not a header line %q in %q", l, data)
			k := strings.ToLower(name)
			m.headers[k] = append(m.headers[k], strings.TrimSpace(value))
		}
		require.Len(t, m.headers["call-id"], 1, "%q", data)
		m.callID = m.headers["call-id"][0]
		out = append(out, m)
	}
	return out
}
