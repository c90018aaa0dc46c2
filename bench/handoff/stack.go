package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/baton-voice/baton/pkg/hops"
)

// apiToken is the agent API's bearer token in this private stack.
const apiToken = "bench-handoff-token"

// Timeouts of the stack's start and stop.
const (
	startTimeout = 2 * time.Minute
	stopTimeout  = 20 * time.Second
)

// process is a child process whose stderr goes to a log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

func startProcess(name, bin, logPath string, env []string, stdout io.Writer, args ...string) (*process, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("log of %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = log
	cmd.Stdout = stdout
	if stdout == nil {
		cmd.Stdout = log
	}
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		return nil, errors.Join(fmt.Errorf("start %s: %w", name, err), log.Close())
	}
	p := &process{name: name, cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() error {
	select {
	case <-p.done:
		if p.err == nil {
			return fmt.Errorf("%s exited; see %s", p.name, p.log.Name())
		}
		return fmt.Errorf("%s exited (%w); see %s", p.name, p.err, p.log.Name())
	default:
		return nil
	}
}

func (p *process) stop() {
	if p.exited() == nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM) // it may end on its own meanwhile
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	_ = p.log.Close()
}

// stack is the pipeline under test.
type stack struct {
	dir                    string
	procs                  []*process
	chDir                  string
	repoDir                string
	broker                 string
	ingress                string
	sbcPort                int
	routerAPI              string
	chTCP, chHTTP          int
	ready                  []string // /readyz URLs
	hopFiles               map[string]string
	stopClickHouse         func()
	analyticsMaxWait       time.Duration
	transferSIP, ingressPt int
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	return ports, nil
}

// startStack starts the broker, ClickHouse and the four services.
func startStack(ctx context.Context, o options, dir string, sbcPort int) (_ *stack, err error) {
	s := &stack{dir: dir, repoDir: o.repoDir, sbcPort: sbcPort, hopFiles: map[string]string{}, analyticsMaxWait: o.analyticsMaxWait}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	for _, sub := range []string{"logs", "config"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
	}
	if s.broker, err = s.startBroker(ctx, filepath.Join(o.binDir, "baton")); err != nil {
		return nil, err
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	s.chTCP, s.chHTTP, s.ingressPt, s.transferSIP = ports[0], ports[1], ports[2], ports[3]
	if err := s.startClickHouse(ctx); err != nil {
		return nil, err
	}
	s.ingress = fmt.Sprintf("127.0.0.1:%d", s.ingressPt)
	for _, svc := range []string{"router", "transfer", "analytics", "ingress"} {
		cfg, err := s.config(svc)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(dir, "config", svc+".yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			return nil, fmt.Errorf("config of %s: %w", svc, err)
		}
		s.hopFiles[svc] = filepath.Join(dir, "hops-"+svc)
		env := []string{hops.Env + "=" + s.hopFiles[svc]}
		if svc == "router" {
			env = append(env, "BENCH_API_TOKENS="+apiToken)
		}
		p, err := startProcess(svc, filepath.Join(o.binDir, svc), filepath.Join(dir, "logs", svc+".log"), env, nil, "--config", path)
		if err != nil {
			return nil, err
		}
		s.procs = append(s.procs, p)
	}
	return s, s.waitReady(ctx)
}

func (s *stack) startBroker(ctx context.Context, bin string) (string, error) {
	r, w := io.Pipe()
	p, err := startProcess("broker", bin, filepath.Join(s.dir, "logs", "broker.log"), nil, w, "broker",
		"--listen", "127.0.0.1:0", "--data-dir", filepath.Join(s.dir, "broker"), "--partitions", "6",
		"--topics", "baton.calls,baton.handoffs,baton.transfers,bench.base", "--log-level", "warn")
	if err != nil {
		return "", errors.Join(err, w.Close())
	}
	s.procs = append(s.procs, p)
	addrs := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "broker ready on "); ok {
				addr, _, _ := strings.Cut(rest, " ")
				addrs <- strings.TrimSuffix(addr, ",")
			}
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	go func() {
		<-p.done
		_ = w.Close()
	}()
	select {
	case addr := <-addrs:
		return addr, nil
	case <-p.done:
		return "", p.exited()
	case <-time.After(startTimeout):
		return "", errors.New("broker: no ready line")
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (s *stack) startClickHouse(ctx context.Context) error {
	s.chDir = filepath.Join(s.dir, "clickhouse")
	script := filepath.Join(s.repoDir, "deploy", "local", "clickhouse.sh")
	cmd := exec.CommandContext(ctx, script, "start", s.chDir)
	cmd.Env = append(os.Environ(), fmt.Sprintf("CH_TCP_PORT=%d", s.chTCP), fmt.Sprintf("CH_HTTP_PORT=%d", s.chHTTP))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("start clickhouse: %w\n%s", err, out)
	}
	s.stopClickHouse = func() {
		stop := exec.Command(script, "stop", s.chDir)
		_ = stop.Run() // best effort at the end of the run
	}
	return nil
}

// config is svc's configuration: the local stack's (cmd/baton's
// stack.writeConfigs) with the agent API on and no rules, so only the
// agent's request hands a call off.
func (s *stack) config(svc string) (string, error) {
	metrics, err := freePort()
	if err != nil {
		return "", err
	}
	s.ready = append(s.ready, fmt.Sprintf("http://127.0.0.1:%d/readyz", metrics))
	kafka := fmt.Sprintf("kafka:\n  brokers: [%q]\n  client_id: bench-%s\n  session_timeout: 6s\n", s.broker, svc)
	common := kafka + "log:\n  level: info\n  format: json\n" + fmt.Sprintf("metrics:\n  listen: 127.0.0.1:%d\n", metrics)
	switch svc {
	case "ingress":
		return common + fmt.Sprintf(`listeners:
  - transport: udp
    address: %q
external_host: 127.0.0.1
trunk: bench-sbc
rtp:
  host: 127.0.0.1
  port_min: 20000
  port_max: 29999
limits:
  max_calls: 5000
  max_cps: 2000
`, s.ingress), nil
	case "router":
		api, err := freePort()
		if err != nil {
			return "", err
		}
		s.routerAPI = fmt.Sprintf("http://127.0.0.1:%d", api)
		return common + fmt.Sprintf(`transactional_id: bench-router-1
api:
  listen: 127.0.0.1:%d
  tokens_env: BENCH_API_TOKENS
destinations:
  - name: support
    method: REFER
    route: sip:+4930123456@agents.example.com
    default: true
    headers:
      X-Baton-Call-Id: $call_id
`, api), nil
	case "transfer":
		return common + fmt.Sprintf(`external_host: 127.0.0.1
listen: 127.0.0.1:%d
routes:
  allow: ["sip:*@agents.example.com"]
# 1000 handoffs/s keep more than the default 1024 transfers open (each
# until its call ended).
max_in_flight: 8192
`, s.transferSIP), nil
	case "analytics":
		c := common
		if s.analyticsMaxWait > 0 {
			c += fmt.Sprintf("batch:\n  max_wait: %v\n", s.analyticsMaxWait)
		}
		// analytics serves /readyz on its dashboard listener.
		c = strings.Replace(c, "metrics:\n  listen:", "http:\n  listen:", 1)
		return c + fmt.Sprintf("clickhouse:\n  addr: 127.0.0.1:%d\n  database: baton\n", s.chTCP), nil
	}
	return "", fmt.Errorf("unknown service %s", svc)
}

func (s *stack) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for _, u := range s.ready {
		for {
			for _, p := range s.procs {
				if err := p.exited(); err != nil {
					return err
				}
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err != nil {
				return err
			}
			res, err := http.DefaultClient.Do(req)
			if err == nil {
				_ = res.Body.Close()
				if res.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("not ready: %s (logs in %s)", u, filepath.Join(s.dir, "logs"))
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

func (s *stack) stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].stop()
	}
	if s.stopClickHouse != nil {
		s.stopClickHouse()
	}
}

// alive reports the first process that ended.
func (s *stack) alive() error {
	for _, p := range s.procs {
		if err := p.exited(); err != nil {
			return err
		}
	}
	return nil
}
