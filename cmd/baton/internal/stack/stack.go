// Package stack runs the whole Baton pipeline on one machine: the embedded
// broker, a private ClickHouse, the four services as separate processes,
// and SIPp as the carrier's SBC placing demo calls. `baton dev` and the
// end-to-end test both drive it.
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Services in start order; they stop in reverse.
var services = []string{"analytics", "transfer", "router", "ingress"}

// instance is one process of a service: "router", or "router-2" when
// several run.
type instance struct {
	service, name string
	index         int
}

func (s *Stack) instances() []instance {
	var out []instance
	for _, svc := range services {
		n := max(s.opts.Replicas[svc], 1)
		if svc == "ingress" {
			n = 1
		}
		for i := 1; i <= n; i++ {
			name := svc
			if n > 1 {
				name = fmt.Sprintf("%s-%d", svc, i)
			}
			out = append(out, instance{service: svc, name: name, index: i})
		}
	}
	return out
}

// Instances names every service process, for logs and Kill.
func (s *Stack) Instances() []string {
	var names []string
	for _, inst := range s.instances() {
		names = append(names, inst.name)
	}
	return names
}

// Options says where things are and which ports to use. A zero port picks
// a free one.
type Options struct {
	// BinDir holds the service binaries and baton itself.
	BinDir string
	// RunDir holds the broker's and ClickHouse's data, configs and logs.
	RunDir string
	// RepoDir is the repository root: deploy/local and deploy/sipp live there.
	RepoDir string

	BrokerPort, ClickHouseTCPPort, ClickHouseHTTPPort int
	IngressPort, TransferPort, SBCPort                int
	DashboardPort                                     int
	// SIPHost is the address ingress and transfer bind and advertise
	// (Contact, Via, SDP); empty means 127.0.0.1.
	SIPHost string

	// Replicas runs that many instances of router, transfer or analytics
	// in one consumer group (default 1). Ingress is the SIP edge: one.
	Replicas map[string]int

	// AgentURL, when set, puts a voice-AI agent in every call: ingress
	// streams each call's audio to it (Media Streams), and the router
	// hands off only when the agent asks (no rule does). APIToken is the
	// agent API's bearer token; the router serves the API when it is set.
	AgentURL, APIToken string

	// Demo, when set, gives the router the demo's destinations and rules
	// (demoroutes.go) with these SIPp destinations for its warm
	// transfers; rules then decide each agent's handoff.
	Demo *DemoRoutes

	// OutboundTarget, when set (IP:port of the called party), lets agents
	// place outbound calls (POST /v1/calls, decision 0018) through the
	// trunk demo-sbc: ingress lists that trunk (loopback) and sends its
	// INVITEs there; the router allows +1555 numbers on it, denies
	// +1555900 (premium), presents +15550001111 and sends X-Campaign and
	// X-Baton-Call.
	OutboundTarget string

	// StaticMembership gives each router, transfer and analytics instance
	// its name as kafka.instance_id, as the shipped configs do with
	// ${POD_NAME}: a static group member restarted with the same id takes
	// its partitions back at once. Binaries from before kafka.instance_id
	// refuse the key; leave it off for them.
	StaticMembership bool

	// Configure, when set, may change each instance's config (by its
	// instance name) before it is written: the interop suite points the
	// router's destinations and transfer's routes at its own peers.
	Configure func(instance string, cfg map[string]any)

	// Progress receives one line per step.
	Progress io.Writer
	Logger   *slog.Logger
}

// DefaultOptions are the well-known local ports of `make run`.
func DefaultOptions() Options {
	return Options{
		BinDir: "bin", RunDir: ".run", RepoDir: ".",
		BrokerPort: 9092, ClickHouseTCPPort: 19000, ClickHouseHTTPPort: 18123,
		IngressPort: 5060, TransferPort: 5070, SBCPort: 5061, DashboardPort: 8081,
	}
}

// Stack is a running pipeline.
type Stack struct {
	opts Options

	// mu guards procs, the runs of each process, and the supervisor's
	// state.
	mu       sync.Mutex
	procs    []*process
	stopping bool
	// restarts counts, per part, the restarts Supervise made.
	restarts map[string]int

	// BrokerAddr, IngressAddr and ClickHouseHTTP are where the parts listen.
	BrokerAddr     string
	IngressAddr    string
	ClickHouseHTTP string
	ClickHouseTCP  string
	Database       string
	// DashboardAddr is where the first analytics instance serves its
	// dashboard page.
	DashboardAddr string
	// RouterAPI is the first router's agent API (http://host:port), when
	// Options.APIToken is set; RouterAPIs is every router's, in instance
	// order (router-1, router-2, ...).
	RouterAPI  string
	RouterAPIs []string
}

type process struct {
	name string
	bin  string
	args []string
	env  []string // added to baton dev's environment
	log  string
	// killed is set by Kill until Restart: Supervise leaves it dead.
	killed bool
	run    *run
}

// run is one execution of a process.
type run struct {
	cmd  *exec.Cmd
	exit chan struct{} // closed when the process has exited
	err  error         // how it exited, set before exit closes
}

// ended reports whether the run is over.
func (r *run) ended() bool {
	select {
	case <-r.exit:
		return true
	default:
		return false
	}
}

// Start brings the pipeline up and returns once every stage is ready. On
// error everything already started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	for _, p := range []struct {
		name string
		port *int
	}{
		{"broker", &opts.BrokerPort}, {"clickhouse tcp", &opts.ClickHouseTCPPort},
		{"clickhouse http", &opts.ClickHouseHTTPPort}, {"ingress", &opts.IngressPort},
		{"transfer", &opts.TransferPort}, {"sbc", &opts.SBCPort}, {"dashboard", &opts.DashboardPort},
	} {
		if *p.port == 0 {
			if *p.port, err = freePort(); err != nil {
				return nil, fmt.Errorf("pick a port for %s: %w", p.name, err)
			}
		}
	}
	if opts.SIPHost == "" {
		opts.SIPHost = "127.0.0.1"
	}
	for _, bin := range append([]string{"baton"}, services...) {
		if _, err := os.Stat(filepath.Join(opts.BinDir, bin)); err != nil {
			return nil, fmt.Errorf("binary %s missing in %s (run make build): %w", bin, opts.BinDir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(opts.RepoDir, "deploy", "local", "clickhouse.sh")); err != nil {
		return nil, fmt.Errorf("repository root %s has no deploy/local/clickhouse.sh (set --repo-dir): %w", opts.RepoDir, err)
	}
	if opts.RunDir, err = filepath.Abs(opts.RunDir); err != nil {
		return nil, fmt.Errorf("run dir: %w", err)
	}
	for _, sub := range []string{"logs", "config"} {
		if err := os.MkdirAll(filepath.Join(opts.RunDir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("create run dir: %w", err)
		}
	}
	s := &Stack{
		opts:           opts,
		BrokerAddr:     fmt.Sprintf("127.0.0.1:%d", opts.BrokerPort),
		IngressAddr:    net.JoinHostPort(opts.SIPHost, strconv.Itoa(opts.IngressPort)),
		ClickHouseHTTP: fmt.Sprintf("127.0.0.1:%d", opts.ClickHouseHTTPPort),
		ClickHouseTCP:  fmt.Sprintf("127.0.0.1:%d", opts.ClickHouseTCPPort),
		Database:       "baton",
		DashboardAddr:  fmt.Sprintf("127.0.0.1:%d", opts.DashboardPort),
	}
	defer func() {
		if err != nil {
			s.Stop(ctx)
		}
	}()

	s.progress("starting the embedded broker on %s", s.BrokerAddr)
	if err := s.spawn("broker", filepath.Join(opts.BinDir, "baton"), "broker",
		"--listen", s.BrokerAddr, "--data-dir", filepath.Join(opts.RunDir, "broker")); err != nil {
		return nil, err
	}
	if err := s.waitTCP(ctx, "broker", s.BrokerAddr); err != nil {
		return nil, err
	}

	s.progress("starting ClickHouse on %s (data in %s)", s.ClickHouseHTTP, filepath.Join(opts.RunDir, "clickhouse"))
	if err := s.clickhouse(ctx, "start"); err != nil {
		return nil, err
	}

	if err := s.writeConfigs(); err != nil {
		return nil, err
	}
	for _, inst := range s.instances() {
		s.progress("starting %s", inst.name)
		var env []string
		if inst.service == "router" && opts.APIToken != "" {
			env = []string{apiTokensEnv + "=" + opts.APIToken}
		}
		if err := s.spawnEnv(inst.name, env, filepath.Join(opts.BinDir, inst.service), "--config", s.configPath(inst.name)); err != nil {
			return nil, err
		}
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	s.progress("pipeline ready: SIP on udp://%s and tcp://%s, Kafka on %s, ClickHouse HTTP on %s", s.IngressAddr, s.IngressAddr, s.BrokerAddr, s.ClickHouseHTTP)
	return s, nil
}

func (s *Stack) progress(format string, args ...any) {
	fmt.Fprintf(s.opts.Progress, "baton dev: "+format+"\n", args...)
}

// LogPath is where a part's output goes.
func (s *Stack) LogPath(name string) string { return filepath.Join(s.opts.RunDir, "logs", name+".log") }

func (s *Stack) spawn(name, bin string, args ...string) error {
	return s.spawnEnv(name, nil, bin, args...)
}

// spawnEnv is spawn with env added to the process's environment.
func (s *Stack) spawnEnv(name string, env []string, bin string, args ...string) error {
	p := &process{name: name, bin: bin, args: args, env: env, log: s.LogPath(name)}
	if err := p.start(os.O_TRUNC); err != nil {
		return err
	}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return nil
}

// start runs the process, its output going to its log (truncated, or
// appended to on a restart).
func (p *process) start(logMode int) error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|logMode, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	// The processes outlive ctx on purpose: Stop ends them with SIGTERM so
	// each can shut down gracefully, in order.
	cmd := exec.Command(p.bin, p.args...)
	if len(p.env) > 0 {
		cmd.Env = append(os.Environ(), p.env...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return fmt.Errorf("start %s (%s): %w", p.name, p.bin, err)
	}
	r := &run{cmd: cmd, exit: make(chan struct{})}
	go func() {
		r.err = cmd.Wait()
		_ = f.Close()
		close(r.exit)
	}()
	p.run = r
	return nil
}

// exited reports a process that is no longer running, with its log tail.
func (s *Stack) exited() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		if p.run.ended() {
			return fmt.Errorf("%s exited (%w); last lines of %s:\n%s", p.name, p.run.err, p.log, tail(p.log, 15))
		}
	}
	return nil
}

func (s *Stack) waitTCP(ctx context.Context, name, addr string) error {
	return s.poll(ctx, name, 30*time.Second, dialTCP(addr))
}

// dialTCP is a check that addr accepts a connection.
func dialTCP(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// poll retries check every 100 ms until it succeeds, a process dies, or
// the deadline passes.
func (s *Stack) poll(ctx context.Context, what string, limit time.Duration, check func(context.Context) error) error {
	return s.pollWhile(ctx, what, limit, func() error { return s.exited() }, check)
}

// pollWhile is poll that gives up when alive, not a process exit, fails.
func (s *Stack) pollWhile(ctx context.Context, what string, limit time.Duration, alive func() error, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if err := alive(); err != nil {
			return err
		}
		attempt, cancelAttempt := context.WithTimeout(ctx, time.Second)
		last = check(attempt)
		cancelAttempt()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v: %w", what, limit, last)
		case <-tick.C:
		}
	}
}

// waitReady waits until ingress answers OPTIONS and the three consumer
// groups are stable with a member each.
func (s *Stack) waitReady(ctx context.Context) error {
	if err := s.poll(ctx, "ingress", 30*time.Second, func(ctx context.Context) error {
		return sipOptions(ctx, s.IngressAddr)
	}); err != nil {
		return err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.BrokerAddr))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	members := map[string]int{}
	for _, inst := range s.instances() {
		if inst.service != "ingress" {
			members["baton-"+inst.service]++
		}
	}
	groups := []string{"baton-router", "baton-transfer", "baton-analytics"}
	return s.poll(ctx, "consumer groups "+strings.Join(groups, ", "), 60*time.Second, func(ctx context.Context) error {
		described, err := adm.DescribeGroups(ctx, groups...)
		if err != nil {
			return err
		}
		for _, g := range groups {
			d, ok := described[g]
			if !ok || d.Err != nil || d.State != "Stable" || len(d.Members) < members[g] {
				return fmt.Errorf("group %s is %q with %d of %d members", g, d.State, len(d.Members), members[g])
			}
		}
		return nil
	})
}

// sipOptions sends one OPTIONS over UDP and waits for any final response.
func sipOptions(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	local := conn.LocalAddr().String()
	branch := "z9hG4bK-ready-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	msg := "OPTIONS sip:" + addr + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";branch=" + branch + "\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:ready@" + local + ">;tag=ready\r\n" +
		"To: <sip:" + addr + ">\r\n" +
		"Call-ID: " + branch + "@baton-dev\r\n" +
		"CSeq: 1 OPTIONS\r\n" +
		"Content-Length: 0\r\n\r\n"
	if _, err := conn.Write([]byte(msg)); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
		line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
		return fmt.Errorf("OPTIONS answered %q", line)
	}
	return nil
}

func (s *Stack) clickhouse(ctx context.Context, verb string) error {
	script := filepath.Join(s.opts.RepoDir, "deploy", "local", "clickhouse.sh")
	cmd := exec.CommandContext(ctx, script, verb, filepath.Join(s.opts.RunDir, "clickhouse"))
	cmd.Env = append(os.Environ(),
		"CH_TCP_PORT="+strconv.Itoa(s.opts.ClickHouseTCPPort),
		"CH_HTTP_PORT="+strconv.Itoa(s.opts.ClickHouseHTTPPort))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("clickhouse %s: %w\n%s", verb, err, out)
	}
	return nil
}

// Stop ends the services in reverse start order with SIGTERM (SIGKILL
// after 15 s), then ClickHouse. It runs to the end even when ctx is
// already cancelled (Ctrl-C is what usually calls it).
func (s *Stack) Stop(ctx context.Context) {
	s.mu.Lock()
	s.stopping = true // Supervise restarts nothing from here
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		r := p.run
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-r.exit:
		case <-time.After(15 * time.Second):
			s.opts.Logger.Warn("process did not stop on SIGTERM; killing", "process", p.name)
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
			<-r.exit
		}
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.clickhouse(stopCtx, "stop"); err != nil {
		s.opts.Logger.Warn("stop clickhouse", "err", err)
	}
}

// Kill sends SIGKILL to one running part, for tests that need a stage gone.
func (s *Stack) Kill(name string) error {
	s.mu.Lock()
	p := s.find(name)
	if p == nil {
		s.mu.Unlock()
		return errors.New("no process named " + name)
	}
	p.killed = true
	r := p.run
	s.mu.Unlock()
	if err := syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s: %w", name, err)
	}
	<-r.exit
	return nil
}

// find returns the process named name, nil when none; s.mu is held.
func (s *Stack) find(name string) *process {
	for _, p := range s.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// Restart starts a part that Kill ended again, with the same command
// line: the broker reloads its data dir and listens on the same port, a
// service reads the same config. It returns once the part is ready: the
// broker accepts connections, ingress answers OPTIONS; the consumers are
// only started (their groups take them back in on their own).
func (s *Stack) Restart(ctx context.Context, name string) error {
	s.mu.Lock()
	p := s.find(name)
	if p == nil {
		s.mu.Unlock()
		return errors.New("no process named " + name)
	}
	if !p.run.ended() {
		s.mu.Unlock()
		return fmt.Errorf("restart %s: it is still running", name)
	}
	err := p.start(os.O_APPEND)
	if err == nil {
		p.killed = false
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	// Only this part's death ends the wait: another may be down for its
	// own fault and come back meanwhile.
	alive := func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if r := p.run; r.ended() {
			return fmt.Errorf("%s exited again (%w); last lines of %s:\n%s", name, r.err, p.log, tail(p.log, 15))
		}
		return nil
	}
	switch name {
	case "broker":
		return s.pollWhile(ctx, name, 30*time.Second, alive, dialTCP(s.BrokerAddr))
	case "ingress":
		return s.pollWhile(ctx, name, 30*time.Second, alive, func(ctx context.Context) error {
			return sipOptions(ctx, s.IngressAddr)
		})
	}
	return nil
}

// supervisePoll is how often Supervise looks for parts that exited.
const supervisePoll = 200 * time.Millisecond

// Supervise restarts, until ctx ends or Stop begins, every part that
// exits on its own (not by Kill), as a service manager does
// (compose's restart: unless-stopped, Kubernetes' restartPolicy: Always).
// Restarts reports what it did.
func (s *Stack) Supervise(ctx context.Context) {
	tick := time.NewTicker(supervisePoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			return
		}
		for _, p := range s.procs {
			if p.killed || !p.run.ended() {
				continue
			}
			s.opts.Logger.Warn("part exited; restarting it", "process", p.name, "err", p.run.err)
			s.progress("%s exited (%v); restarting it", p.name, p.run.err)
			if err := p.start(os.O_APPEND); err != nil {
				s.opts.Logger.Error("restart", "process", p.name, "err", err)
				continue
			}
			if s.restarts == nil {
				s.restarts = map[string]int{}
			}
			s.restarts[p.name]++
		}
		s.mu.Unlock()
	}
}

// Restarts returns how often Supervise restarted each part.
func (s *Stack) Restarts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.restarts)
}

func freePort() (int, error) {
	// A TCP and a UDP socket on the same port: the port is free for both.
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return port, nil
		}
	}
	return 0, errors.New("no port free for both TCP and UDP")
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
