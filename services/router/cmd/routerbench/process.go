package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// stopTimeout is how long a process gets after SIGTERM before SIGKILL.
const stopTimeout = 15 * time.Second

// process is a child process whose stderr goes to a log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error // Wait's, once done is closed
}

// startProcess starts bin with args; stdout, when not nil, receives its
// standard output.
func startProcess(bin, logPath string, stdout io.Writer, args ...string) (*process, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("log of %s: %w", bin, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = log
	cmd.Stdout = stdout
	if err := cmd.Start(); err != nil {
		return nil, errors.Join(fmt.Errorf("start %s: %w", bin, err), log.Close())
	}
	p := &process{name: bin, cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports an error when the process has already ended, with the
// tail of its log.
func (p *process) exited() error {
	select {
	case <-p.done:
		tail, _ := os.ReadFile(p.log.Name()) // best effort, for the message
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		if p.err == nil {
			return fmt.Errorf("%s exited early; log %s ends:\n%s", p.name, p.log.Name(), tail)
		}
		return fmt.Errorf("%s exited early (%w); log %s ends:\n%s", p.name, p.err, p.log.Name(), tail)
	default:
		return nil
	}
}

// watch is ctx limited by timeout and ended when the process exits.
func (p *process) watch(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// stop sends SIGTERM, waits, and kills the process after stopTimeout. A
// process that ended by itself before is an error.
func (p *process) stop() error {
	early := p.exited()
	if early == nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM) // it may end on its own meanwhile
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			_ = p.cmd.Process.Kill() // already gone is fine
			<-p.done
		}
	}
	if err := p.log.Close(); err != nil {
		return errors.Join(early, fmt.Errorf("close log of %s: %w", p.name, err))
	}
	if early == nil && p.err != nil {
		return fmt.Errorf("%s stopped: %w (log %s)", p.name, p.err, p.log.Name())
	}
	return early
}

// startBroker starts `baton broker` and waits for its ready line, which
// names the address it bound.
func startBroker(ctx context.Context, bin, dir string, args ...string) (*process, string, error) {
	r, w := io.Pipe()
	p, err := startProcess(bin, dir+"/broker.log", w, append([]string{"broker"}, args...)...)
	if err != nil {
		return nil, "", errors.Join(err, w.Close())
	}
	addrs := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			// "broker ready on 127.0.0.1:PORT (data dir DIR)"
			if rest, ok := strings.CutPrefix(sc.Text(), "broker ready on "); ok {
				addr, _, _ := strings.Cut(rest, " ")
				addrs <- strings.TrimSuffix(addr, ",")
			}
		}
		_, _ = io.Copy(io.Discard, r) // keep the pipe drained
	}()
	go func() {
		<-p.done
		_ = w.Close() // ends the scanner
	}()
	select {
	case addr := <-addrs:
		return p, addr, nil
	case <-p.done:
		return nil, "", errors.Join(p.exited(), p.stop())
	case <-time.After(startTimeout):
		return nil, "", errors.Join(fmt.Errorf("%s broker: no ready line after %v", bin, startTimeout), p.stop())
	case <-ctx.Done():
		return nil, "", errors.Join(ctx.Err(), p.stop())
	}
}
