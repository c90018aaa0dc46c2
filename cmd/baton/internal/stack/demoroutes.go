package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DemoRoutes are the far ends of the demo's warm transfers: two SIPp
// destinations (UAS) that `baton dev` runs. With Options.Demo set, the
// router gets the demo's destinations and rules (demoRouter) instead of
// the one catch-all destination.
type DemoRoutes struct {
	// BusyAddr answers every INVITE 486 (deploy/sipp/dest_busy.xml);
	// AnswerAddr answers and echoes the audio (dest_answer_offered.xml,
	// -rtp_echo). host:port, UDP.
	BusyAddr, AnswerAddr string
}

// Demo destination names, as the router config names them.
const (
	demoSupport  = "support"
	demoBilling  = "billing"
	demoTech     = "tech-support"
	demoVIP      = "vip-desk"
	demoSales    = "sales"
	demoFraud    = "fraud-team"
	demoHandback = "sbc-retention"
)

// DemoVIPNumber is the caller number the demo's VIP rule matches.
const DemoVIPNumber = "+4915110000001"

// demoNumberRoute is the route the demo agent asks for when the caller
// named a number; deny_numbers refuses the premium-rate ones.
const demoNumberRoute = "sip:{number}@agents.example.com"

// demoRouter returns the router's destinations, rules and allowlist for
// the demo: what each one is for is in its description, which the
// summary prints.
func demoRouter(r DemoRoutes) map[string]any {
	headers := func(extra map[string]string) map[string]string {
		h := map[string]string{
			"X-Customer-Id":   "{Customer-Id}",
			"X-Intent":        "{Intent}",
			"X-Language":      "{Language}",
			"X-Baton-Call-Id": "$call_id",
		}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	refer := func(name, description, number string) map[string]any {
		return map[string]any{"name": name, "description": description, "method": "REFER",
			"route": "sip:" + number + "@agents.example.com", "headers": headers(nil)}
	}
	support := refer(demoSupport, "the default: the support queue (blind transfer, REFER)", "+4930123456")
	support["default"] = true
	return map[string]any{
		"destinations": []map[string]any{
			support,
			refer(demoBilling, "X-Intent billing_dispute: the billing team (REFER)", "+4930200200"),
			refer(demoTech, "X-Intent technical_support: second-level support (REFER)", "+4930300300"),
			refer(demoVIP, "caller "+DemoVIPNumber+" (VIP by number, whatever the intent): the VIP desk (REFER)", "+4930999999"),
			{
				"name": demoSales, "description": "X-Intent upgrade_plan: sales, a warm transfer (INVITE) that is busy; falls back to support",
				"method": "INVITE", "route": "sip:sales@" + r.BusyAddr, "encryption": "udp_rtp",
				"answer_timeout": "5s", "fallback": []string{demoSupport}, "headers": headers(nil),
			},
			{
				"name": demoFraud, "description": "X-Intent fraud_report: the fraud team, a warm transfer (INVITE) bridged with audio",
				"method": "INVITE", "route": "sip:fraud@" + r.AnswerAddr, "encryption": "udp_rtp",
				"answer_timeout": "5s", "headers": headers(nil),
			},
			{
				"name": demoHandback, "description": "X-Intent cancel_subscription: handed back to the SBC's retention IVR (BYE with X- headers)",
				"method": "BYE", "headers": headers(map[string]string{"X-Handback-Reason": "{Intent}"}),
			},
		},
		// Rules run when the agent asks for a handoff without naming a
		// destination (reason is then set); the first match decides.
		"rules": []map[string]any{
			{"name": "vip-callers", "when": "reason != '' && caller_number == '" + DemoVIPNumber + "'", "handoff": demoVIP},
			{"name": "intent-billing", "when": "reason != '' && variables.intent == 'billing_dispute'", "handoff": demoBilling},
			{"name": "intent-technical", "when": "reason != '' && variables.intent == 'technical_support'", "handoff": demoTech},
			{"name": "intent-upgrade", "when": "reason != '' && variables.intent == 'upgrade_plan'", "handoff": demoSales},
			{"name": "intent-fraud", "when": "reason != '' && variables.intent == 'fraud_report'", "handoff": demoFraud},
			{"name": "intent-cancel", "when": "reason != '' && variables.intent == 'cancel_subscription'", "handoff": demoHandback},
		},
		// The agent may name a route on the demo's host, but never a
		// premium-rate number.
		"allowlist": map[string]any{
			"routes":       []string{"sip:*@agents.example.com"},
			"deny_numbers": []string{"+1900", "+1976"},
		},
	}
}

// demoDest is one SIPp destination process.
type demoDest struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// startDemoDests starts the busy and the answering SIPp destinations on
// free ports, their logs under runDir/sipp.
func startDemoDests(runDir, repoDir string) (DemoRoutes, func(), error) {
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		return DemoRoutes{}, nil, errors.New("sipp not found on PATH: install Debian's sip-tester (make deps)")
	}
	dir := filepath.Join(runDir, "sipp", "destinations")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return DemoRoutes{}, nil, fmt.Errorf("sipp log dir: %w", err)
	}
	var dests []*demoDest
	stop := func() {
		for _, d := range dests {
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	}
	start := func(name string, extra ...string) (string, error) {
		port, err := freePort()
		if err != nil {
			return "", err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		args := append([]string{
			"-sf", filepath.Join(repoDir, "deploy", "sipp", name+".xml"),
			"-i", "127.0.0.1", "-p", strconv.Itoa(port), "-m", "1000",
			"-trace_logs", "-log_file", filepath.Join(dir, name+".log"),
			"-trace_err", "-error_file", filepath.Join(dir, name+".errors.log"),
			"-nostdin",
		}, extra...)
		out, err := os.Create(filepath.Join(dir, name+".out"))
		if err != nil {
			return "", fmt.Errorf("sipp output: %w", err)
		}
		// Killed by stop, not by a context: they serve the whole demo.
		cmd := exec.Command(sipp, args...)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			_ = out.Close()
			return "", fmt.Errorf("start sipp %s: %w", name, err)
		}
		d := &demoDest{cmd: cmd, done: make(chan struct{}), log: filepath.Join(dir, name+".log")}
		go func() {
			_ = cmd.Wait()
			_ = out.Close()
			close(d.done)
		}()
		dests = append(dests, d)
		return addr, waitUDPBound(d, port)
	}
	var r DemoRoutes
	if r.BusyAddr, err = start("dest_busy"); err == nil {
		var media int
		if media, err = freePort(); err == nil {
			r.AnswerAddr, err = start("dest_answer_offered", "-rtp_echo", "-mp", strconv.Itoa(media), "-mi", "127.0.0.1")
		}
	}
	if err != nil {
		stop()
		return DemoRoutes{}, nil, err
	}
	return r, stop, nil
}

// waitUDPBound waits until SIPp holds its UDP port, read from the
// kernel's socket table (binding the port to probe it would race SIPp's
// own bind), or it exits.
func waitUDPBound(d *demoDest, port int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	want := fmt.Sprintf(":%04X", port)
	for {
		select {
		case <-d.done:
			return fmt.Errorf("sipp destination exited; see %s", d.log)
		default:
		}
		if table, err := os.ReadFile("/proc/net/udp"); err != nil {
			return fmt.Errorf("read the socket table: %w", err)
		} else {
			for _, line := range strings.Split(string(table), "\n") {
				if f := strings.Fields(line); len(f) > 1 && strings.HasSuffix(f[1], want) {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sipp destination did not bind udp port %d", port)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
