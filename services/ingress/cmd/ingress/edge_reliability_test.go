//go:build reliability

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/pkg/reliabilitytest"
)

// The suite's addresses on the loopback: the legitimate SBC, the flooding
// trunk, and (not allowlisted) 127.0.0.1, where the scanners send from.
const (
	legitIP = "127.0.0.2"
	floodIP = "127.0.0.3"
)

// ingressBinary is the built ingress: BATON_BIN_DIR's (make builds it),
// else a fresh build into a temp dir.
func ingressBinary(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("BATON_BIN_DIR"); dir != "" {
		bin := filepath.Join(dir, "ingress")
		_, err := os.Stat(bin)
		require.NoError(t, err, "BATON_BIN_DIR has no ingress: run make build")
		return bin
	}
	bin := filepath.Join(t.TempDir(), "ingress")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "build ingress: %s", out)
	return bin
}

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	require.NoError(t, err, "%s is required (make deps installs it)", name)
	return p
}

func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "tcp" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer func() { require.NoError(t, l.Close()) }()
		return l.Addr().(*net.TCPAddr).Port
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer func() { require.NoError(t, c.Close()) }()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// edge is a running ingress process.
type edge struct {
	sipPort int
	metrics string // base URL of /metrics
	log     string
}

// startEdge runs the ingress binary with the config body (listen, kafka,
// metrics and rtp are added) until the test ends; it returns once /readyz
// says ready.
func startEdge(t *testing.T, brokers []string, body string) *edge {
	t.Helper()
	dir := t.TempDir()
	e := &edge{sipPort: freePort(t, "udp"), log: filepath.Join(dir, "ingress.log")}
	metricsPort := freePort(t, "tcp")
	e.metrics = fmt.Sprintf("http://127.0.0.1:%d", metricsPort)
	rtpMin := 30000 + 2*rand.IntN(12000)
	cfg := fmt.Sprintf("listen: 127.0.0.1:%d\nrtp: {port_min: %d, port_max: %d}\npublish_timeout: 2s\ndrain_timeout: 0s\n"+
		"kafka: {brokers: [%s], client_id: bti-ingress, partitions: 1}\nlog: {level: info, format: json}\n"+
		"metrics: {listen: 127.0.0.1:%d}\n%s",
		e.sipPort, rtpMin, rtpMin+1999, strings.Join(brokers, ", "), metricsPort, body)
	path := filepath.Join(dir, "ingress.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))

	logFile, err := os.Create(e.log)
	require.NoError(t, err)
	cmd := exec.Command(ingressBinary(t), "--config", path)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		require.NoError(t, logFile.Close())
		if t.Failed() {
			out, _ := os.ReadFile(e.log)
			t.Logf("ingress log (tail):\n%s", tail(string(out), 4000))
		}
	})
	require.Eventually(t, func() bool {
		res, err := http.Get(e.metrics + "/readyz")
		if err != nil {
			return false
		}
		_ = res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond, "ingress never became ready")
	return e
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// scrape reads /metrics into "name{labels}" -> value.
func (e *edge) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	res, err := http.Get(e.metrics + "/metrics")
	require.NoError(t, err)
	defer func() { require.NoError(t, res.Body.Close()) }()
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	require.NoError(t, sc.Err())
	return out
}

func rejected(m map[string]float64, reason string) float64 {
	return m[`baton_ingress_rejected_total{reason="`+reason+`"}`]
}

// sippRun is one SIPp process.
type sippRun struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	logs string // the -log_file the scenario's <log> actions write
	done chan error
}

func startSIPp(t *testing.T, e *edge, scenario, localIP string, args ...string) *sippRun {
	t.Helper()
	bin := requireTool(t, "sipp")
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "..", "deploy", "sipp"))
	require.NoError(t, err)
	tmp := t.TempDir()
	s := &sippRun{logs: filepath.Join(tmp, "actions.log"), done: make(chan error, 1)}
	s.cmd = exec.CommandContext(t.Context(), bin, append([]string{
		"127.0.0.1:" + strconv.Itoa(e.sipPort),
		"-sf", filepath.Join(dir, scenario),
		"-i", localIP, "-p", strconv.Itoa(freePort(t, "udp")),
		"-mi", localIP, "-mp", strconv.Itoa(freePort(t, "udp") &^ 1),
		"-timeout", "150s", "-timeout_error",
		"-trace_logs", "-log_file", s.logs,
		"-trace_err", "-error_file", filepath.Join(tmp, "errors.log"),
		"-nostdin",
	}, args...)...)
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	require.NoError(t, s.cmd.Start())
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-s.done:
			s.done <- err
		default:
			_ = s.cmd.Process.Kill()
			s.done <- <-s.done
		}
		if t.Failed() {
			errs, _ := os.ReadFile(filepath.Join(tmp, "errors.log"))
			t.Logf("sipp %s output (tail):\n%s\nerrors (tail):\n%s", scenario, tail(s.out.String(), 3000), tail(string(errs), 3000))
		}
	})
	return s
}

func (s *sippRun) wait() error {
	err := <-s.done
	s.done <- err
	return err
}

// count returns how many lines of the scenario's log start with prefix.
func (s *sippRun) count(t *testing.T, prefix string) int {
	t.Helper()
	data, err := os.ReadFile(s.logs)
	if os.IsNotExist(err) {
		return 0
	}
	require.NoError(t, err)
	n := 0
	for l := range strings.SplitSeq(string(data), "\n") {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// callsUntilMarker produces a marker to the calls topic and returns every
// event before it, read from the start.
func callsUntilMarker(t *testing.T, brokers []string, topic string) []events.Event {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	marker := "marker-" + strconv.Itoa(rand.Int())
	require.NoError(t, cl.ProduceSync(t.Context(), &kgo.Record{Topic: topic, Key: []byte(marker)}).FirstErr())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out []events.Event
	for {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "the marker never came back")
		require.NoError(t, fs.Err0())
		for _, r := range fs.Records() {
			if string(r.Key) == marker {
				return out
			}
			ev, err := events.Decode(r)
			require.NoError(t, err)
			out = append(out, ev)
		}
	}
}

// runScanner runs a SIPVicious tool to completion and returns its output.
func runScanner(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, requireTool(t, name), args...).CombinedOutput()
	require.NoError(t, err, "%s %v: %s", name, args, out)
	return string(out)
}

// packetCounter counts, with an nftables rule that only counts, the UDP
// packets from src to ingress's SIP port; its table is removed at cleanup.
type packetCounter struct {
	table string
}

func countPackets(t *testing.T, src string, port int) *packetCounter {
	t.Helper()
	nft := requireTool(t, "nft")
	c := &packetCounter{table: fmt.Sprintf("bti_scan_%d", port)}
	rules := fmt.Sprintf("table ip %s {\n chain input {\n  type filter hook input priority -300; policy accept;\n"+
		"  ip saddr %s udp dport %d counter\n }\n}\n", c.table, src, port)
	cmd := exec.CommandContext(t.Context(), nft, "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "nft: %s", out)
	t.Cleanup(func() {
		out, err := exec.Command(nft, "delete", "table", "ip", c.table).CombinedOutput()
		require.NoError(t, err, "nft: %s", out)
	})
	return c
}

var packetsRe = regexp.MustCompile(`counter packets (\d+)`)

func (c *packetCounter) packets(t *testing.T) int {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), requireTool(t, "nft"), "list", "table", "ip", c.table).CombinedOutput()
	require.NoError(t, err, "nft: %s", out)
	m := packetsRe.FindStringSubmatch(string(out))
	require.NotNil(t, m, "no counter in %s", out)
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return n
}

// TestReliabilityScanners: svmap and svwar, from 127.0.0.1, which no trunk
// allows, find nothing (ingress never answers them), every packet they
// send is counted as an ACL drop, and nothing is published; an allowed
// SBC's call, placed after, is answered.
func TestReliabilityScanners(t *testing.T) {
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	e := startEdge(t, brokers, fmt.Sprintf("trunks:\n  - {name: sbc, sources: [%s/32]}\n", legitIP))
	port := strconv.Itoa(e.sipPort)

	runs := []struct {
		tool string
		args []string
	}{
		{"svmap", []string{"-p", port, "127.0.0.1"}},
		{"svmap", []string{"-p", port, "-m", "INVITE", "127.0.0.1"}},
		{"svmap", []string{"-p", port, "-m", "REGISTER", "-e", "100", "127.0.0.1"}},
		{"svwar", []string{"-e", "100-199", "-m", "REGISTER", "--force", "udp://127.0.0.1:" + port}},
		{"svwar", []string{"-e", "100-199", "-m", "INVITE", "--force", "udp://127.0.0.1:" + port}},
		{"svwar", []string{"-e", "100-199", "-m", "OPTIONS", "udp://127.0.0.1:" + port}},
	}
	counter := countPackets(t, "127.0.0.1", e.sipPort)
	before := rejected(e.scrape(t), "acl")
	for _, r := range runs {
		out := runScanner(t, r.tool, r.args...)
		require.Contains(t, out, "found nothing", "%s %v found something:\n%s", r.tool, r.args, out)
		require.NotContains(t, out, "baton", "%s %v learnt our User-Agent:\n%s", r.tool, r.args, out)
	}
	m := e.scrape(t)
	aclDrops := rejected(m, "acl") - before
	sent := counter.packets(t)
	require.GreaterOrEqual(t, sent, len(runs), "each scanner run sends at least one packet")
	require.EqualValues(t, sent, aclDrops, "every scanner packet is counted as an ACL drop")
	for _, reason := range []string{"invalid", "overload_calls", "overload_rate", "trunk_overload_calls", "trunk_overload_rate", "draining", "unacked_source"} {
		require.Zero(t, rejected(m, reason), reason)
	}

	// The allowed SBC is answered: the silence above was the ACL's.
	legit := startSIPp(t, e, "ingress_legit.xml", legitIP, "-m", "1")
	require.NoError(t, legit.wait(), "the allowed SBC's call failed")
	got := callsUntilMarker(t, brokers, topics.Calls)
	var types []string
	for _, ev := range got {
		types = append(types, ev.Type)
	}
	require.Equal(t, []string{events.TypeCallStarted, events.TypeCallEnded}, types, "only the allowed call's facts")

	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 3, Test: t.Name(),
		Load:   fmt.Sprintf("%d scanner runs against a live ingress (trunks allow only %s)", len(runs), legitIP),
		Faults: "SIP scanning from a source no trunk allows",
		Inputs: "svmap (OPTIONS, INVITE, REGISTER), svwar (REGISTER, INVITE, OPTIONS; extensions 100-199)",
		Lost: fmt.Sprintf("responses to scanners: 0 (every run: found nothing); %d packets sent (nft counter), %.0f dropped by the ACL (baton_ingress_rejected_total{reason=acl}); events from scanners: 0; allowed call answered: 1 of 1",
			sent, aclDrops),
	})
}

// memory is the ingress's memory as /metrics reports it.
type memory struct {
	rss, heap float64
}

func (e *edge) memory(t *testing.T) memory {
	t.Helper()
	m := e.scrape(t)
	return memory{rss: m["process_resident_memory_bytes"], heap: m["go_memstats_heap_alloc_bytes"]}
}

func mib(b float64) float64 { return b / (1 << 20) }

// TestReliabilityFlood: a SIPp INVITE flood from one trunk at 5x the
// configured capacity, while another trunk's SBC places calls held 3 s.
// The flooding trunk has its own limits (trunks[].max_calls, max_cps,
// docs/decisions/0009), so its excess gets 503 with Retry-After,
// statelessly; ingress's memory stays bounded; at least 99% of the
// legitimate calls complete; events exist only for admitted calls.
func TestReliabilityFlood(t *testing.T) {
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	const (
		maxCPS, maxCalls           = 40, 100 // global
		floodMaxCPS, floodMaxCalls = 20, 30  // the flooding trunk's share
		floodRate, floodCalls      = 5 * maxCPS, 2000
		legitRate, legitCalls      = 10, 200
		retryAfter                 = 7
	)
	e := startEdge(t, brokers, fmt.Sprintf("limits: {max_calls: %d, max_cps: %d, retry_after: %ds}\n"+
		"trunks:\n  - {name: sbc, sources: [%s/32]}\n  - {name: noisy, sources: [%s/32], max_calls: %d, max_cps: %d}\n",
		maxCalls, maxCPS, retryAfter, legitIP, floodIP, floodMaxCalls, floodMaxCPS))

	time.Sleep(time.Second)
	before := e.memory(t)
	var (
		mu   sync.Mutex
		peak memory
	)
	sampled := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
				res, err := http.Get(e.metrics + "/metrics")
				if err != nil {
					continue
				}
				body, err := io.ReadAll(res.Body)
				_ = res.Body.Close()
				if err != nil {
					continue
				}
				var m memory
				for l := range strings.SplitSeq(string(body), "\n") {
					if v, ok := strings.CutPrefix(l, "process_resident_memory_bytes "); ok {
						m.rss, _ = strconv.ParseFloat(v, 64)
					}
					if v, ok := strings.CutPrefix(l, "go_memstats_heap_alloc_bytes "); ok {
						m.heap, _ = strconv.ParseFloat(v, 64)
					}
				}
				mu.Lock()
				peak.rss, peak.heap = max(peak.rss, m.rss), max(peak.heap, m.heap)
				mu.Unlock()
			}
		}
	}()

	legit := startSIPp(t, e, "ingress_legit.xml", legitIP,
		"-r", strconv.Itoa(legitRate), "-m", strconv.Itoa(legitCalls), "-l", "200")
	time.Sleep(2 * time.Second) // legitimate calls are up when the flood starts
	flood := startSIPp(t, e, "ingress_flood.xml", floodIP,
		"-r", strconv.Itoa(floodRate), "-rp", "1000", "-m", strconv.Itoa(floodCalls), "-l", "3000")
	floodErr := flood.wait()
	legitErr := legit.wait()
	time.Sleep(3 * time.Second)
	close(stopSampling)
	<-sampled
	after := e.memory(t)

	completed := legit.count(t, "completed ")
	admitted := flood.count(t, "admitted ")
	refused := flood.count(t, fmt.Sprintf("refused retry-after=%d", retryAfter))
	require.NoError(t, floodErr, "a flood call got neither 200 nor 503 with Retry-After")
	require.Equal(t, floodCalls, admitted+refused, "every flood INVITE was admitted or refused with Retry-After")
	require.Positive(t, refused)
	require.GreaterOrEqual(t, completed*100, legitCalls*99, "legitimate calls completed: %d of %d (sipp: %v)", completed, legitCalls, legitErr)

	m := e.scrape(t)
	trunkRefusals := rejected(m, "trunk_overload_calls") + rejected(m, "trunk_overload_rate")
	require.EqualValues(t, refused, trunkRefusals+rejected(m, "overload_calls")+rejected(m, "overload_rate")+rejected(m, "unacked_source"),
		"each 503 SIPp saw is one counted refusal")

	got := callsUntilMarker(t, brokers, topics.Calls)
	started, ended := map[string]bool{}, map[string]bool{}
	for _, ev := range got {
		switch ev.Type {
		case events.TypeCallStarted:
			require.False(t, started[ev.Subject], "two CallStarted for %s", ev.Subject)
			started[ev.Subject] = true
		case events.TypeCallEnded:
			ended[ev.Subject] = true
		default:
			t.Fatalf("unexpected event %s", ev.Type)
		}
	}
	require.Len(t, started, completed+admitted, "CallStarted only for admitted calls")
	require.Len(t, ended, completed+admitted)

	// Bounded: the admission memory is a fixed ring and refusals are
	// stateless, so the flood must not grow the process beyond these.
	const rssBound, heapBound = 256 << 20, 128 << 20
	mu.Lock()
	p := peak
	mu.Unlock()
	require.Positive(t, p.rss)
	require.Less(t, p.rss, float64(rssBound), "peak RSS")
	require.Less(t, p.heap, float64(heapBound), "peak heap")

	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 3, Test: t.Name(),
		Load: fmt.Sprintf("legit SBC %d calls at %d/s held 3 s; limits max_cps %d, max_calls %d; flooding trunk max_cps %d, max_calls %d",
			legitCalls, legitRate, maxCPS, maxCalls, floodMaxCPS, floodMaxCalls),
		Faults: fmt.Sprintf("SIPp INVITE flood from another trunk: %d INVITEs at %d/s (5x max_cps)", floodCalls, floodRate),
		Inputs: "deploy/sipp/ingress_legit.xml, deploy/sipp/ingress_flood.xml",
		Lost: fmt.Sprintf("legit completed %d of %d; flood %d admitted, %d got 503 Retry-After %d (%.0f counted trunk refusals); CallStarted %d = admitted calls; RSS %.0f/%.0f/%.0f MiB and heap %.0f/%.0f/%.0f MiB before/peak/after (bounds %d/%d MiB)",
			completed, legitCalls, admitted, refused, retryAfter, trunkRefusals, len(started),
			mib(before.rss), mib(p.rss), mib(after.rss), mib(before.heap), mib(p.heap), mib(after.heap), rssBound>>20, heapBound>>20),
	})
}
