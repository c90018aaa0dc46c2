//go:build reliability

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
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/cmd/baton/internal/checker"
	"github.com/baton-voice/baton/cmd/baton/internal/netem"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/reliabilitytest"
)

// TestReliabilitySignallingUnderLoss places 1000 calls (INVITE, 200, ACK,
// REFER, 202, NOTIFY, 200, BYE, 200) from SIPp, the SBC, in a network
// namespace whose link to ingress and transfer drops 20% of the SIP
// packets each way, and checks that retransmission carries at least 99%
// of them through (SIPp ended the call well and transfer got the REFER
// accepted), that no Call-ID has a second CallStarted in Kafka however
// often its INVITE was retransmitted, and that every call the SBC got a
// 200 OK for has its CallStarted (a call ingress refused, 503 when Kafka
// does not take the CallStarted in time, has none and counts as
// incomplete).
func TestReliabilitySignallingUnderLoss(t *testing.T) {
	const (
		calls   = 1000
		rate    = 20 // calls per second: 50 s of calls, each up about 17 s
		percent = 20 // loss per direction
	)
	requireTools(t, "sipp", "clickhouse-server", "ip", "nft")
	if os.Geteuid() != 0 {
		t.Fatal("network namespaces need root: run the reliability suite as root")
	}
	ctx := t.Context()
	link, err := netem.Create(ctx, "btl-")
	require.NoError(t, err)
	// Registered first, so it runs after the stack has stopped.
	t.Cleanup(func() { require.NoError(t, link.Close(context.WithoutCancel(ctx))) })
	t.Logf("namespace %s: root side %s (%s), SBC side %s (%s)", link.Namespace, link.HostIP, link.HostDev, link.PeerIP, link.PeerDev)

	repo := repoRoot(t)
	s, err := Start(ctx, Options{
		BinDir:   binaries(t, repo),
		RunDir:   t.TempDir(),
		RepoDir:  repo,
		Progress: testWriter{t},
		// Ingress and transfer listen on the root end of the link, so
		// every SIP packet to or from the SBC crosses it.
		SIPHost: link.HostIP.String(),
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range append([]string{"broker"}, s.Instances()...) {
				t.Logf("--- %s log (tail) ---\n%s", name, tail(s.LogPath(name), 30))
			}
		}
		s.Stop(context.WithoutCancel(ctx))
	})

	// The namespace is ours alone: the SBC port is free there.
	sbcPort := s.opts.SBCPort
	require.NoError(t, link.SetLoss(ctx, percent, sbcPort))
	run, err := runLossySBC(ctx, s, link, sbcPort, calls, rate)
	// Registered before the run is judged, so that a SIPp that did not
	// finish is explained too.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sipp failure markers: %v\n--- sipp errors (tail) ---\n%s", run.markers, tail(filepath.Join(run.dir, "errors.log"), 40))
			t.Log(run.unfinished(3))
			// The run directory goes with the test; BATON_KEEP_SIPP keeps
			// SIPp's logs and message trace for a closer look.
			if keep := os.Getenv("BATON_KEEP_SIPP"); keep != "" && run.dir != "" {
				if err := os.CopyFS(keep, os.DirFS(run.dir)); err != nil {
					t.Logf("keeping the SIPp logs: %v", err)
				} else {
					t.Logf("SIPp logs kept in %s", keep)
				}
			}
		}
	})
	require.NoError(t, err)
	loss, err := link.Counters(ctx)
	require.NoError(t, err)
	t.Logf("sipp exit %d: %d placed, %d successful, %d failed; %s; loss: %s", run.exitCode, len(run.placed),
		run.stats["SuccessfulCall(C)"], run.stats["FailedCall(C)"], run.retransmissions(), loss)
	if len(run.markers) > 0 {
		t.Logf("sipp failure markers: %v\n%s", run.markers, run.unfinished(3))
	}

	// The loss really happened, on the SIP path, near the rate asked.
	require.Greater(t, loss.InSeen, uint64(5*calls), "SIP packets into the namespace")
	require.Greater(t, loss.OutSeen, uint64(5*calls), "SIP packets out of the namespace")
	require.InDelta(t, percent/100.0, loss.InRate(), 0.03)
	require.InDelta(t, percent/100.0, loss.OutRate(), 0.03)
	require.Len(t, run.placed, calls, "SIPp logs every call it places")
	for _, m := range []string{"INVITE", "NOTIFY", "BYE"} {
		require.Positive(t, run.sent(m).retrans, "SIPp retransmitted %s", m)
	}
	require.Positive(t, run.sent("202").retrans, "REFER copies were answered again")

	// Transfer publishes an outcome for every command it executes (Timer F
	// bounds a REFER nobody answers at 32 s): wait for them, then judge.
	recs := readSettled(t, s.BrokerAddr, 45*time.Second)
	report := checker.Check(recs, checker.Options{Calls: run.answered, RequireHandoff: true})
	var b strings.Builder
	require.NoError(t, report.Write(&b))
	t.Logf("checker:\n%s", b.String())

	started := map[string]int{}
	accepted := map[string]bool{}
	for _, r := range recs {
		if r.Withheld || r.Err != nil {
			continue
		}
		switch m := r.Event.Data.(type) {
		case *batonv1.CallStarted:
			started[m.GetDialog().GetCallId()]++
		case *batonv1.TransferOutcome:
			if m.GetStatus() == batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED {
				accepted[m.GetCallId()] = true
			}
		}
	}
	placed := map[string]bool{}
	duplicates, refused, completed := 0, 0, 0
	var incomplete []string
	for _, id := range run.placed {
		placed[id] = true
		switch n := started[id]; {
		case n == 0:
			refused++
		case n > 1:
			duplicates += n - 1
		}
		if run.done[id] && accepted[id] {
			completed++
		} else if len(incomplete) < 20 {
			incomplete = append(incomplete, fmt.Sprintf("%s (sipp done %t, REFER accepted %t)", id, run.done[id], accepted[id]))
		}
	}
	require.Zero(t, duplicates, "CallStarted published more than once for a Call-ID")
	var lost []string
	for _, id := range run.answered {
		if started[id] == 0 {
			lost = append(lost, id)
		}
	}
	require.Empty(t, lost, "calls the SBC got a 200 OK for, without a CallStarted")
	for id := range started {
		require.True(t, placed[id], "CallStarted for %s, a Call-ID SIPp never placed", id)
	}
	require.True(t, report.OK(), "checker findings:\n%s", strings.Join(report.Problems(), "\n"))
	require.GreaterOrEqual(t, completed*100, calls*99,
		"%d of %d calls completed (SIPp done and REFER accepted); incomplete: %v", completed, calls, incomplete)

	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 5,
		Test: t.Name(),
		Load: fmt.Sprintf("%d calls at %d/s, INVITE/200/ACK/REFER/202/NOTIFY/200/BYE/200 over UDP, SIPp SBC in netns %s",
			calls, rate, link.Namespace),
		Faults: fmt.Sprintf("%d%% random loss each way on the SIP path (nftables measured %.1f%%: %d of %d packets; in %.1f%%, out %.1f%%)",
			percent, 100*loss.Rate(), loss.Dropped(), loss.Seen(), 100*loss.InRate(), 100*loss.OutRate()),
		Inputs: "deploy/sipp/loss_sbc_refer.xml (SIPp 3.6 as the SBC); " + run.retransmissions(),
		Lost: fmt.Sprintf("%d of %d calls incomplete (%d completed: SIPp %d successful, %d failed; %d answered, %d refused; "+
			"%d REFERs accepted; %d CallEnded); %d duplicate CallStarted; %d answered calls without CallStarted; checker findings %d",
			calls-completed, calls, completed, run.stats["SuccessfulCall(C)"], run.stats["FailedCall(C)"], len(run.answered), refused,
			report.Executed, report.Ended, duplicates, len(lost), len(report.Findings)),
	})
}

// lossyRun is what SIPp did: the call ids it logged per log word, and its
// final statistics.
type lossyRun struct {
	exitCode int
	dir      string
	placed   []string
	// answered are the calls the SBC got a 200 OK for.
	answered []string
	done     map[string]bool
	// lines counts the scenario's log lines by first word.
	lines map[string]int
	// markers are failure lines (words not part of the good flow).
	markers []string
	// stats is the last row of SIPp's statistics file (counters).
	stats map[string]int
	// screen is SIPp's final scenario screen: each message's count and
	// retransmissions.
	screen []sippMessage
}

// sippMessage is one line of SIPp's scenario screen: a message sent or
// received, how many times, and how many of those were retransmissions
// (sent again on a timer or for a copy of the message before it, or
// copies received).
type sippMessage struct {
	name           string
	sent           bool
	count, retrans int
}

// sent sums the lines of a message SIPp sends (a message can be on
// several lines of a scenario).
func (r lossyRun) sent(name string) sippMessage {
	out := sippMessage{name: name, sent: true}
	for _, m := range r.screen {
		if m.name == name && m.sent {
			out.count += m.count
			out.retrans += m.retrans
		}
	}
	return out
}

// retransmissions says what SIPp counted: its own retransmissions on a
// timer, and the copies of the peers' messages its retransmission
// detection answered (later copies of the 200 OK to INVITE, during the
// pause, are answered too but not counted).
func (r lossyRun) retransmissions() string {
	return fmt.Sprintf("SIPp retransmitted INVITE %d, NOTIFY %d, BYE %d times (%d retransmissions in all); "+
		"it answered %d copies of REFER with the 202 again and %d copies of the 200 OK to INVITE with the ACK again; "+
		"%d REFERs overtook their 200 OK (dropped, recovered by retransmission); %d BYEs from transfer absorbed",
		r.sent("INVITE").retrans, r.sent("NOTIFY").retrans, r.sent("BYE").retrans, r.stats["Retransmissions(C)"],
		r.sent("202").retrans, r.sent("ACK").retrans, r.lines["REFER_EARLY"], r.lines["BATON_BYE"])
}

// runLossySBC runs SIPp inside the namespace with
// deploy/sipp/loss_sbc_refer.xml against the stack's ingress.
func runLossySBC(ctx context.Context, s *Stack, link *netem.Link, sbcPort, calls, rate int) (lossyRun, error) {
	dir := filepath.Join(s.opts.RunDir, "sipp-loss")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return lossyRun{}, fmt.Errorf("sipp log dir: %w", err)
	}
	sippDir := filepath.Join(s.opts.RepoDir, "deploy", "sipp")
	args := []string{
		s.IngressAddr,
		"-sf", filepath.Join(sippDir, "loss_sbc_refer.xml"),
		"-inf", filepath.Join(sippDir, "calls.csv"),
		"-s", "agent",
		"-i", link.PeerIP.String(), "-p", strconv.Itoa(sbcPort),
		"-m", strconv.Itoa(calls), "-r", strconv.Itoa(rate),
		// Calls last about 17 s (the scenario waits 16 s for REFER copies).
		"-l", strconv.Itoa(rate * 30),
		"-default_behaviors", "all,-bye",
		// Give up on a request only after 8 (INVITE) or 11 copies: at 20%
		// loss each way a copy and its answer both pass with p=0.64.
		"-max_invite_retrans", "7", "-max_non_invite_retrans", "10",
		"-timeout", "170s", "-timeout_error",
		"-trace_logs", "-log_file", filepath.Join(dir, "calls.log"),
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log"),
		"-trace_stat", "-stf", filepath.Join(dir, "stats.csv"), "-fd", "5",
		"-trace_screen", "-screen_file", filepath.Join(dir, "screen.log"),
		// Every message, so that a call that did not finish can be shown.
		"-trace_msg", "-message_file", filepath.Join(dir, "messages.log"),
		"-nostdin",
	}
	out, err := os.Create(filepath.Join(dir, "sipp.out"))
	if err != nil {
		return lossyRun{}, fmt.Errorf("sipp output: %w", err)
	}
	cmd := link.Command(ctx, "sipp", args...)
	cmd.Stdout, cmd.Stderr = out, out
	run := lossyRun{dir: dir}
	err = cmd.Run()
	if cerr := out.Close(); cerr != nil {
		return run, fmt.Errorf("sipp output: %w", cerr)
	}
	if err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			return run, fmt.Errorf("run sipp: %w", err)
		}
		run.exitCode = exit.ExitCode()
	}
	if err := run.readLog(filepath.Join(dir, "calls.log")); err != nil {
		return run, err
	}
	run.stats, err = readSIPpStats(filepath.Join(dir, "stats.csv"))
	if err == nil {
		run.screen, err = readSIPpScreen(filepath.Join(dir, "screen.log"))
	}
	if err != nil {
		return run, fmt.Errorf("%w (sipp exit %d):\n%s", err, run.exitCode, tail(filepath.Join(dir, "sipp.out"), 20))
	}
	return run, nil
}

// unfinished describes up to n calls SIPp placed but did not log as
// done: their log lines and every message SIPp sent or received for them.
func (r lossyRun) unfinished(n int) string {
	var ids []string
	for _, id := range r.placed {
		if !r.done[id] && len(ids) < n {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return "every call SIPp placed is done"
	}
	logs, _ := os.ReadFile(filepath.Join(r.dir, "calls.log"))
	msgs, _ := os.ReadFile(filepath.Join(r.dir, "messages.log"))
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&b, "--- unfinished call %s: SIPp log ---\n", id)
		for _, line := range strings.Split(string(logs), "\n") {
			if strings.Contains(line, "call_id="+id+" ") || strings.HasSuffix(line, "call_id="+id) {
				fmt.Fprintln(&b, line)
			}
		}
		fmt.Fprintf(&b, "--- unfinished call %s: SIPp messages ---\n", id)
		for _, m := range sippMessages(string(msgs)) {
			if strings.Contains(m, "Call-ID: "+id+"\r") || strings.Contains(m, "Call-ID: "+id+"\n") {
				fmt.Fprintln(&b, strings.TrimSpace(strings.ReplaceAll(m, "\r", "")))
			}
		}
	}
	return b.String()
}

// sippMessages splits a -trace_msg file into its entries, each a header
// line (time, direction, peer) and the message.
func sippMessages(text string) []string {
	const sep = "----------------------------------------------- "
	var out []string
	for _, part := range strings.Split(text, sep) {
		if strings.TrimSpace(part) != "" {
			out = append(out, part)
		}
	}
	return out
}

// readLog reads the scenario's log lines: WORD call_id=ID ...
func (r *lossyRun) readLog(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sipp log: %w", err)
	}
	defer func() { _ = f.Close() }()
	r.lines, r.done = map[string]int{}, map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		word, rest, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if word == "" {
			continue
		}
		r.lines[word]++
		field, _, _ := strings.Cut(rest, " ")
		id, ok := strings.CutPrefix(field, "call_id=")
		switch {
		case !ok:
			r.markers = append(r.markers, sc.Text())
		case word == "PLACED":
			r.placed = append(r.placed, id)
		case word == "ANSWERED":
			r.answered = append(r.answered, id)
		case word == "DONE":
			r.done[id] = true
		case word == "REFER", word == "REFER_EARLY", word == "BATON_BYE":
		default:
			r.markers = append(r.markers, sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("sipp log: %w", err)
	}
	return nil
}

// readSIPpScreen reads the message lines of the last scenario screen in
// SIPp's -trace_screen file:
//
//	INVITE ---------->         100       28        0
//	   200 <----------  E-RTD1 83        5         0         0
func readSIPpScreen(path string) ([]sippMessage, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sipp screen: %w", err)
	}
	text := string(data)
	if i := strings.LastIndex(text, "Scenario Screen"); i >= 0 {
		text = text[i:]
	}
	if i := strings.Index(text, "Statistics Screen"); i >= 0 {
		text = text[:i]
	}
	var out []sippMessage
	for _, line := range strings.Split(text, "\n") {
		fields := strings.Fields(line)
		for i, f := range fields {
			sent, recv := strings.HasPrefix(f, "----"), strings.HasPrefix(f, "<---")
			if i == 0 || (!sent && !recv) {
				continue
			}
			var nums []int
			for _, g := range fields[i+1:] {
				if n, err := strconv.Atoi(g); err == nil {
					nums = append(nums, n)
				}
			}
			if len(nums) >= 2 {
				out = append(out, sippMessage{name: fields[i-1], sent: sent, count: nums[0], retrans: nums[1]})
			}
			break
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("sipp screen %s: no message lines", path)
	}
	return out, nil
}

// readSettled reads every topic once every handoff command has a transfer
// outcome (or limit passed: the checker then reports what is missing).
func readSettled(t *testing.T, brokers string, limit time.Duration) []checker.Record {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		recs, err := checker.Read(t.Context(), brokers)
		require.NoError(t, err)
		commands, answered := map[string]bool{}, map[string]bool{}
		for _, r := range recs {
			switch m := r.Event.Data.(type) {
			case *batonv1.HandoffCommand:
				commands[m.GetCommandId()] = true
			case *batonv1.TransferOutcome:
				answered[m.GetCommandId()] = true
			}
		}
		pending := 0
		for id := range commands {
			if !answered[id] {
				pending++
			}
		}
		if pending == 0 || time.Now().After(deadline) {
			t.Logf("%d handoff commands, %d without a transfer outcome", len(commands), pending)
			return recs
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(time.Second):
		}
	}
}
