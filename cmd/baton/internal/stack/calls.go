package stack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Refer is one REFER the SBC (SIPp) received, as its scenario logged it:
// the X- header values the call's INVITE carried, and the Refer-To that
// came back.
type Refer struct {
	CallID  string
	Sent    map[string]string // x_customer_id, x_intent, x_language
	ReferTo string
}

// CallsResult is what a SIPp run reported.
type CallsResult struct {
	// ExitCode is SIPp's: 0 when every call passed.
	ExitCode int
	Refers   []Refer
	// Failures are the scenario's failure markers (REFER_TIMEOUT, ...).
	Failures []string
	LogDir   string
}

// PlaceCalls has SIPp, playing the carrier's SBC, place n calls at rate
// calls per second into ingress with deploy/sipp/<scenario>.xml and the
// X- headers of deploy/sipp/calls.csv.
func (s *Stack) PlaceCalls(ctx context.Context, scenario string, n int, rate int) (CallsResult, error) {
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		return CallsResult{}, errors.New("sipp not found on PATH: install Debian's sip-tester (make deps)")
	}
	dir := filepath.Join(s.opts.RunDir, "sipp", time.Now().UTC().Format("20060102T150405.000"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return CallsResult{}, fmt.Errorf("sipp log dir: %w", err)
	}
	sippDir := filepath.Join(s.opts.RepoDir, "deploy", "sipp")
	args := []string{
		s.IngressAddr,
		"-sf", filepath.Join(sippDir, scenario+".xml"),
		"-inf", filepath.Join(sippDir, "calls.csv"),
		"-s", "agent",
		"-i", "127.0.0.1", "-p", strconv.Itoa(s.opts.SBCPort),
		"-m", strconv.Itoa(n), "-r", strconv.Itoa(rate), "-l", strconv.Itoa(max(rate, 1)),
		"-default_behaviors", "all,-bye",
		"-timeout", "120s", "-timeout_error",
		"-trace_logs", "-log_file", filepath.Join(dir, "refer.log"),
		"-trace_msg", "-message_file", filepath.Join(dir, "messages.log"),
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log"),
		"-nostdin",
	}
	out, err := os.Create(filepath.Join(dir, "sipp.out"))
	if err != nil {
		return CallsResult{}, fmt.Errorf("sipp output: %w", err)
	}
	cmd := exec.CommandContext(ctx, sipp, args...)
	cmd.Stdout, cmd.Stderr = out, out
	res := CallsResult{LogDir: dir}
	err = cmd.Run()
	if cerr := out.Close(); cerr != nil {
		return res, fmt.Errorf("sipp output: %w", cerr)
	}
	if err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			return res, fmt.Errorf("run sipp: %w", err)
		}
		res.ExitCode = exit.ExitCode()
	}
	res.Refers, res.Failures, err = readReferLog(filepath.Join(dir, "refer.log"))
	return res, err
}

// readReferLog parses the scenario's log lines:
//
//	REFER call_id=... x_customer_id=... x_intent=... x_language=... via=... refer_to=<...>
func readReferLog(path string) ([]Refer, []string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read sipp log: %w", err)
	}
	defer func() { _ = f.Close() }()
	var refers []Refer
	var failures []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		word, rest, _ := strings.Cut(line, " ")
		switch word {
		case "REFER":
			head, referTo, _ := strings.Cut(rest, " refer_to=")
			r := Refer{ReferTo: referTo, Sent: map[string]string{}}
			for _, field := range strings.Fields(head) {
				k, v, _ := strings.Cut(field, "=")
				if k == "call_id" {
					r.CallID = v
				} else if strings.HasPrefix(k, "x_") {
					r.Sent[k] = v
				}
			}
			refers = append(refers, r)
		case "", "HANGUP":
		default:
			failures = append(failures, line)
		}
	}
	return refers, failures, sc.Err()
}
