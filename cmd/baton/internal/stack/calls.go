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
	Sent    map[string]string // x_customer_id, x_intent, x_language (and caller in sbc_demo)
	ReferTo string
}

// Ending is how sbc_demo.xml saw a call end without a REFER: a warm
// transfer's re-INVITE (Kind "REINVITE") or a hand-back BYE ("HANDBACK"),
// with the log line's other fields (via, x_handback_reason, ...).
type Ending struct {
	Kind, CallID string
	Fields       map[string]string
}

// CallsResult is what a SIPp run reported.
type CallsResult struct {
	// ExitCode is SIPp's: 0 when every call passed.
	ExitCode int
	Refers   []Refer
	// Endings are the re-INVITEs and hand-back BYEs sbc_demo.xml logged.
	Endings []Ending
	// Failures are the scenario's failure markers (REFER_TIMEOUT, ...).
	Failures []string
	LogDir   string
	// Placed are the Call-IDs SIPp sent an INVITE for, Answered those
	// whose INVITE got a 2xx, and Refused counts the others by their
	// final status (SIPp's message trace).
	Placed, Answered []string
	Refused          map[int]int
	// PlacedOver is the time from the first call's INVITE to the last's.
	PlacedOver time.Duration
	// Successful and Failed are SIPp's final call counters.
	Successful, Failed int
}

// fullTraceCalls is the most calls a run traces in full (messages.log,
// every message with its headers and body) for debugging.
const fullTraceCalls = 200

// PlaceCalls has SIPp, playing the carrier's SBC, place n calls at rate
// calls per second into ingress with deploy/sipp/<scenario>.xml and the
// X- headers of deploy/sipp/calls.csv.
func (s *Stack) PlaceCalls(ctx context.Context, scenario string, n int, rate int) (CallsResult, error) {
	return s.PlaceCallsLimit(ctx, scenario, n, rate, rate)
}

// PlaceCallsLimit is PlaceCalls with at most limit calls up at once
// (PlaceCalls allows rate): when calls take longer than a second, as
// while a stage restarts, a higher limit keeps the rate.
func (s *Stack) PlaceCallsLimit(ctx context.Context, scenario string, n, rate, limit int) (CallsResult, error) {
	return s.PlaceCallsFrom(ctx, scenario, "calls.csv", n, rate, limit)
}

// PlaceCallsFrom is PlaceCallsLimit with the injection file
// deploy/sipp/<csv> instead of calls.csv.
func (s *Stack) PlaceCallsFrom(ctx context.Context, scenario, csv string, n, rate, limit int) (CallsResult, error) {
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
		"-inf", filepath.Join(sippDir, csv),
		"-s", "agent",
		"-i", "127.0.0.1", "-p", strconv.Itoa(s.opts.SBCPort),
		"-m", strconv.Itoa(n), "-r", strconv.Itoa(rate), "-l", strconv.Itoa(max(limit, 1)),
		"-default_behaviors", "all,-bye",
		"-timeout", "120s", "-timeout_error",
		"-trace_logs", "-log_file", filepath.Join(dir, "refer.log"),
		// One line per message: cheap enough at hundreds of calls/s,
		// where the full trace slows SIPp down.
		"-trace_shortmsg", "-shortmessage_file", filepath.Join(dir, "shortmessages.log"),
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log"),
		// The final counters, as SIPp wrote them at its end.
		"-trace_stat", "-stf", filepath.Join(dir, "stats.csv"), "-fd", "5",
		"-nostdin",
	}
	if n <= fullTraceCalls {
		args = append(args, "-trace_msg", "-message_file", filepath.Join(dir, "messages.log"))
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
	res.Refers, res.Endings, res.Failures, err = readReferLog(filepath.Join(dir, "refer.log"))
	if err != nil {
		return res, err
	}
	res.Placed, res.Answered, res.Refused, res.PlacedOver, err = readShortMessageLog(filepath.Join(dir, "shortmessages.log"))
	if err != nil {
		return res, err
	}
	stats, err := readSIPpStats(filepath.Join(dir, "stats.csv"))
	if err != nil {
		return res, err
	}
	res.Successful, res.Failed = stats["SuccessfulCall(C)"], stats["FailedCall(C)"]
	return res, nil
}

// readSIPpStats returns the integer columns of the last row of SIPp's
// -trace_stat file (semicolon separated, a header row first).
func readSIPpStats(path string) (map[string]int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sipp statistics: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) < 2 {
		return nil, fmt.Errorf("sipp statistics %s: no rows", path)
	}
	head := strings.Split(strings.TrimSpace(lines[0]), ";")
	row := strings.Split(strings.TrimSpace(lines[len(lines)-1]), ";")
	out := map[string]int{}
	for i, name := range head {
		if i < len(row) {
			if n, err := strconv.Atoi(strings.TrimSpace(row[i])); err == nil {
				out[strings.TrimSpace(name)] = n
			}
		}
	}
	for _, need := range []string{"SuccessfulCall(C)", "FailedCall(C)", "Retransmissions(C)"} {
		if _, ok := out[need]; !ok {
			return nil, fmt.Errorf("sipp statistics %s: no column %s", path, need)
		}
	}
	return out, nil
}

// readShortMessageLog reads SIPp's short message trace (-trace_shortmsg):
// one line per message, tab-separated: date, time, epoch, S (sent) or R
// (received), Call-ID, "CSeq:N METHOD", first line. It returns the
// Call-IDs of the INVITEs sent, those answered 2xx, the count of calls
// per final non-2xx answer to their INVITE, and the time from the first
// call's INVITE to the last's.
func readShortMessageLog(path string) (placed, answered []string, refused map[int]int, over time.Duration, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, 0, nil
	}
	if err != nil {
		return nil, nil, nil, 0, fmt.Errorf("read sipp message trace: %w", err)
	}
	var firstAt, lastAt float64
	defer func() { _ = f.Close() }()
	final := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) < 7 || !strings.HasSuffix(fields[5], " INVITE") {
			continue
		}
		dir, callID, first := fields[3], fields[4], fields[6]
		if dir == "S" && strings.HasPrefix(first, "INVITE ") {
			if _, ok := final[callID]; !ok {
				final[callID] = 0
				placed = append(placed, callID)
				if at, err := strconv.ParseFloat(fields[2], 64); err == nil {
					if firstAt == 0 {
						firstAt = at
					}
					lastAt = at
				}
			}
			continue
		}
		code, ok := strings.CutPrefix(first, "SIP/2.0 ")
		if dir != "R" || !ok {
			continue
		}
		n, err := strconv.Atoi(strings.SplitN(code, " ", 2)[0])
		if prev, known := final[callID]; err == nil && known && prev == 0 && n >= 200 {
			final[callID] = n
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, nil, 0, fmt.Errorf("read sipp message trace: %w", err)
	}
	refused = map[int]int{}
	for _, id := range placed {
		switch n := final[id]; {
		case n >= 200 && n < 300:
			answered = append(answered, id)
		case n >= 300:
			refused[n]++
		}
	}
	return placed, answered, refused, time.Duration((lastAt - firstAt) * float64(time.Second)), nil
}

// readReferLog parses the scenario's log lines:
//
//	REFER call_id=... x_customer_id=... x_intent=... x_language=... via=... refer_to=<...>
//
// and sbc_demo.xml's REINVITE and HANDBACK lines (key=value, no spaces in
// values) as endings.
func readReferLog(path string) ([]Refer, []Ending, []string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, nil
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read sipp log: %w", err)
	}
	defer func() { _ = f.Close() }()
	var refers []Refer
	var endings []Ending
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
				} else if strings.HasPrefix(k, "x_") || k == "caller" {
					r.Sent[k] = v
				}
			}
			refers = append(refers, r)
		case "REINVITE", "HANDBACK":
			e := Ending{Kind: word, Fields: map[string]string{}}
			for _, field := range strings.Fields(rest) {
				k, v, _ := strings.Cut(field, "=")
				if k == "call_id" {
					e.CallID = v
				} else {
					e.Fields[k] = v
				}
			}
			endings = append(endings, e)
		case "", "HANGUP", "BRIDGE_HANGUP":
		default:
			failures = append(failures, line)
		}
	}
	return refers, endings, failures, sc.Err()
}
