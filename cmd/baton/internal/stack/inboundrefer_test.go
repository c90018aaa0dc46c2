package stack

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/cmd/baton/internal/checker"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// runSBC runs one SIPp call of a deploy/sipp scenario against the
// stack's ingress and requires it to pass (exit 0).
func runSBC(t *testing.T, s *Stack, scenario string, keys ...string) {
	t.Helper()
	port, err := freePort()
	require.NoError(t, err)
	media, err := freePort()
	require.NoError(t, err)
	dir := t.TempDir()
	args := []string{s.IngressAddr,
		"-sf", filepath.Join(s.opts.RepoDir, "deploy", "sipp", scenario),
		"-i", "127.0.0.1", "-p", strconv.Itoa(port), "-mi", "127.0.0.1", "-mp", strconv.Itoa(media &^ 1),
		"-m", "1", "-l", "1", "-timeout", "60s", "-timeout_error",
		"-trace_msg", "-message_file", filepath.Join(dir, "messages.log"),
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log"),
		"-nostdin"}
	for i := 0; i+1 < len(keys); i += 2 {
		args = append(args, "-key", keys[i], keys[i+1])
	}
	cmd := exec.CommandContext(t.Context(), "sipp", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msgs, _ := os.ReadFile(filepath.Join(dir, "messages.log"))
		errs, _ := os.ReadFile(filepath.Join(dir, "errors.log"))
		t.Fatalf("sipp %s: %v\n%s\nmessages:\n%s\nerrors:\n%s", scenario, err, out.String(), msgs, errs)
	}
}

// TestEndToEndInboundRefer: inbound REFER under refer.policy route through
// the whole stack (decision 0019). A REFER to the route of a configured
// destination (the demo's fraud team, a warm transfer to a SIPp UAS) is
// accepted: 202, NOTIFY 100 Trying, the router's command (reason
// inbound_refer, request_id r1) carried out by transfer (INVITE to the
// destination, re-INVITE of the SBC's dialog to the bridge), then NOTIFY
// 200 OK. A REFER to a premium number is refused by the router
// (number_denied) and NOTIFYed 603, with no command; REFERs with Replaces,
// a non-SIP URI or two Refer-To are refused by ingress and never reach the
// router.
func TestEndToEndInboundRefer(t *testing.T) {
	requireTools(t, "sipp")
	routes, stopDests, err := startDemoDests(t.TempDir(), repoRoot(t))
	require.NoError(t, err)
	t.Cleanup(stopDests)
	s := startStackTuned(t, func(o *Options) {
		o.Demo = &routes
		o.Configure = func(instance string, cfg map[string]any) {
			if strings.HasPrefix(instance, "ingress") {
				cfg["refer"] = map[string]any{"policy": "route"}
			}
		}
	})

	runSBC(t, s, "sbc_refer_inbound.xml", "refer_to", "sip:fraud@"+routes.AnswerAddr)
	runSBC(t, s, "ingress_refer_refused.xml")

	recs, err := checker.Read(t.Context(), s.BrokerAddr)
	require.NoError(t, err)
	type call struct {
		refers   []*batonv1.InboundReferReceived
		commands []*batonv1.HandoffCommand
		refused  []*batonv1.HandoffRefused
		outcomes []batonv1.OutcomeStatus
	}
	calls := map[string]*call{}
	var order []string
	for _, r := range recs {
		if r.Aborted {
			continue
		}
		id := r.Event.Subject
		if calls[id] == nil {
			calls[id] = &call{}
			order = append(order, id)
		}
		c := calls[id]
		switch m := r.Event.Data.(type) {
		case *batonv1.InboundReferReceived:
			c.refers = append(c.refers, m)
		case *batonv1.HandoffCommand:
			c.commands = append(c.commands, m)
		case *batonv1.HandoffRefused:
			c.refused = append(c.refused, m)
		case *batonv1.TransferOutcome:
			c.outcomes = append(c.outcomes, m.GetStatus())
		}
	}
	var accepted, refused *call
	for _, id := range order {
		c := calls[id]
		if len(c.refers) == 0 {
			continue
		}
		require.Len(t, c.refers, 1, "call %s: one REFER reached the router", id)
		if strings.HasPrefix(c.refers[0].GetReferTo(), "sip:fraud@") {
			accepted = c
		} else {
			refused = c
		}
	}
	require.NotNil(t, accepted, "the accepted REFER's fact")
	require.NotNil(t, refused, "the refused REFER's fact")

	require.Len(t, accepted.commands, 1)
	cmd := accepted.commands[0]
	require.Equal(t, "fraud-team", cmd.GetDestination())
	require.Equal(t, batonv1.Method_METHOD_INVITE, cmd.GetMethod())
	require.Equal(t, "inbound_refer", cmd.GetReason())
	require.Equal(t, "r1", cmd.GetRequestId())
	require.Equal(t, accepted.refers[0].GetNotifyCseq()+1, cmd.GetDialog().GetNextLocalCseq(),
		"transfer's requests number above ingress's NOTIFY")
	require.Contains(t, accepted.outcomes, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
	require.Empty(t, accepted.refused)

	require.Equal(t, "sip:+19005550199@premium-rate.example", refused.refers[0].GetReferTo())
	require.Empty(t, refused.commands, "no command for a premium number")
	require.Len(t, refused.refused, 1)
	require.Equal(t, "number_denied", refused.refused[0].GetReasonCode())
	require.Equal(t, "r1", refused.refused[0].GetRequestId())
}
