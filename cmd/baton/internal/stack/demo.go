package stack

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/baton-voice/baton/cmd/baton/internal/termsafe"
)

// DemoOptions shape `baton dev`.
type DemoOptions struct {
	// Calls is how many demo calls SIPp places.
	Calls int
	// Rate is new calls per second.
	Rate int
	// Exit stops the stack after the summary instead of waiting for ctx.
	Exit bool
	// Agent puts the demo agent (demoagent) in every call: it greets the
	// caller, listens, and asks for the handoff over the agent API.
	Agent bool
}

func countEndings(es []Ending, kind string) int {
	n := 0
	for _, e := range es {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// printDemoRoutes lists the demo's destinations and what sends a call
// to each.
func printDemoRoutes(out io.Writer, r DemoRoutes) {
	dests, _ := demoRouter(r)["destinations"].([]map[string]any)
	for _, d := range dests {
		fmt.Fprintf(out, "  %-14s %s\n", d["name"], d["description"])
	}
	fmt.Fprintln(out, "  (any route)    a premium-rate number the caller asks for (X-Requested-Number): refused, number_denied")
}

// Demo starts the stack, places the demo calls, prints what happened as
// read back from ClickHouse and how to look further, then runs until ctx
// ends (Ctrl-C) unless d.Exit. It stops everything it started.
func Demo(ctx context.Context, opts Options, d DemoOptions, out io.Writer) (err error) {
	var agent *demoAgent
	if d.Agent {
		if agent, err = listenDemoAgent(opts); err != nil {
			return err
		}
		defer agent.close()
		opts.AgentURL, opts.APIToken = agent.url, agent.token
		// The far ends of the demo's warm transfers, up before the
		// router's config names them.
		routes, stop, err := startDemoDests(opts.RunDir, opts.RepoDir)
		if err != nil {
			return err
		}
		defer stop()
		opts.Demo = &routes
	}
	s, err := Start(ctx, opts)
	if err != nil {
		return err
	}
	if agent != nil {
		agent.serve(s.RouterAPI, demoNumberRoute, opts.Logger)
		fmt.Fprintf(out, "baton dev: the demo agent listens on %s; ingress streams every call's audio to it (Twilio Media Streams)\n", agent.url)
	}
	defer func() {
		fmt.Fprintln(out, "baton dev: stopping the services, the broker and ClickHouse")
		s.Stop(ctx)
	}()

	if d.Calls > 0 {
		fmt.Fprintf(out, "baton dev: SIPp (playing the carrier's SBC) places %d calls with X- headers into udp://%s\n", d.Calls, s.IngressAddr)
		// Only this run's calls: the broker and ClickHouse keep earlier runs.
		since := time.Now().Add(-time.Second)
		// With the agent each call lasts its conversation (about eight
		// seconds): let them overlap.
		limit, scenario, csv := d.Rate, "sbc_refer", "calls.csv"
		if agent != nil {
			// The caller speaks too (a pcap of G.711): the agent hears it.
			// Each line of demo_calls.csv drives another rule.
			limit, scenario, csv = d.Calls, "sbc_demo", "demo_calls.csv"
		}
		res, err := s.PlaceCallsFrom(ctx, scenario, csv, d.Calls, d.Rate, limit)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "baton dev: SIPp exited %d; the SBC received %d REFERs, %d re-INVITEs and %d hand-back BYEs (log: %s)\n",
			res.ExitCode, len(res.Refers), countEndings(res.Endings, "REINVITE"), countEndings(res.Endings, "HANDBACK"), res.LogDir)
		for _, r := range res.Refers {
			fmt.Fprint(out, termsafe.Sprintf("  REFER for %s: Refer-To %s\n", r.CallID, r.ReferTo))
		}
		for _, e := range res.Endings {
			switch e.Kind {
			case "REINVITE":
				fmt.Fprint(out, termsafe.Sprintf("  re-INVITE for %s from %s: the caller's media moves to the bridge (port %s)\n", e.CallID, e.Fields["via"], e.Fields["bridge_port"]))
			case "HANDBACK":
				fmt.Fprint(out, termsafe.Sprintf("  BYE for %s from %s: handed back, X-Handback-Reason %s\n", e.CallID, e.Fields["via"], e.Fields["x_handback_reason"]))
			}
		}
		for _, f := range res.Failures {
			fmt.Fprint(out, termsafe.Sprintf("  SBC scenario failure: %s\n", f))
		}

		conn, err := s.Open()
		if err != nil {
			return err
		}
		defer func() { _ = conn.Close() }()
		rows, err := WaitHandoffs(ctx, conn, since, d.Calls, 30*time.Second)
		if agent != nil {
			agent.print(out)
		}
		fmt.Fprintf(out, "\nWhat happened, read back from ClickHouse (database %s on %s):\n\n", s.Database, s.ClickHouseTCP)
		if perr := PrintHandoffs(out, rows); perr != nil {
			return perr
		}
		if opts.Demo != nil && err == nil {
			stories, serr := WaitStories(ctx, conn, rows, 10*time.Second)
			if serr != nil {
				return serr
			}
			fmt.Fprintln(out, "\nBy what happened (each kind's call opens in bin/baton replay and on the dashboard):")
			PrintStories(out, stories, s.BrokerAddr, s.DashboardAddr)
			fmt.Fprintf(out, "\nThe rules behind them (%s):\n", s.configPath("router"))
			printDemoRoutes(out, *opts.Demo)
		}
		if err != nil {
			return fmt.Errorf("demo calls: %w", err)
		}
		if res.ExitCode != 0 {
			return fmt.Errorf("SIPp reported failed calls (exit %d); see %s and the service logs in %s", res.ExitCode, res.LogDir, s.opts.RunDir+"/logs")
		}
	}

	fmt.Fprintf(out, `
Look further:
  every event of the demo calls (key = call id, CloudEvents headers):
    kcat -b %[1]s -C -e -o beginning -t baton.calls -f '%%k %%h\n'
    kcat -b %[1]s -C -e -o beginning -t baton.handoffs -f '%%k %%h\n'
    kcat -b %[1]s -C -e -o beginning -t baton.transfers -f '%%k %%h\n'
  the handoffs in ClickHouse:
    clickhouse-client --port %[2]d -d %[3]s -q "SELECT call_id, destination, method, reason FROM handoffs FINAL"
    clickhouse-client --port %[2]d -d %[3]s -q "SELECT call_id, status, sip_code, elapsed_ms FROM transfer_outcomes FINAL ORDER BY time_ms"
  place more calls (SIPp as the SBC; each line of demo_calls.csv takes another path):
    sipp %[4]s -sf deploy/sipp/sbc_demo.xml -inf deploy/sipp/demo_calls.csv -i 127.0.0.1 -p 5062 -m 8 -r 2 \
      -default_behaviors all,-bye -trace_logs -log_file /tmp/demo.log
  the dashboard (filters by window, trunk, destination, method and outcome; a call id opens its timeline):
    http://%[6]s/        and in the terminal: bin/baton report --clickhouse %[7]s
  one call's timeline and SIP ladder:
    bin/baton replay --call CALL-ID --brokers %[1]s
  service logs and generated configs: %[5]s/logs, %[5]s/config
`, s.BrokerAddr, s.opts.ClickHouseTCPPort, s.Database, s.IngressAddr, s.opts.RunDir, s.DashboardAddr, s.ClickHouseTCP)

	if d.Exit {
		return nil
	}
	fmt.Fprintln(out, "baton dev: running; press Ctrl-C to stop everything")
	<-ctx.Done()
	return nil
}
