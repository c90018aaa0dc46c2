package transfer

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/services/transfer/internal/sdp"
)

// helperBrokersEnv, set, makes TestLostBridgeHelperProcess a transfer
// instance on those brokers (the process TestKilledInstanceBridgeIsReleased
// SIGKILLs).
const helperBrokersEnv = "BATON_TEST_TRANSFER_HELPER_BROKERS"

// leased holds bridges on the log with a one-second lease.
func leased(o *Options) {
	withInvite(nil)(o)
	o.BridgeLease = time.Second
}

// TestLostBridgeHelperProcess is not a test: run by
// TestKilledInstanceBridgeIsReleased in a process of its own, it is a
// transfer instance that runs until it is killed.
func TestLostBridgeHelperProcess(t *testing.T) {
	brokers := os.Getenv(helperBrokersEnv)
	if brokers == "" {
		t.Skip("run by TestKilledInstanceBridgeIsReleased")
	}
	cfg := kafka.DefaultConfig()
	cfg.Brokers = strings.Split(brokers, ",")
	// A short session: the group does not wait long for it once killed.
	cfg.SessionTimeout, cfg.HeartbeatInterval = 6*time.Second, 2*time.Second
	h := &harness{cfg: cfg, topics: cfg.Topics, logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	in := h.launch(t, leased)
	require.NoError(t, <-in.done)
}

// TestKilledInstanceBridgeIsReleased: a transfer process bridges a warm
// transfer (SIPp destination, media crossing its bridge) and is
// SIGKILLed: nothing ends the call on its own. Another instance, started
// after, finds the bridge's lease passed on the attempt log, claims it,
// sends BYE to the caller's side (in ingress's dialog, the CSeq after the
// re-INVITE) and to the destination (in the dead instance's leg), and
// publishes ENDED bridge_lost naming the dead instance: no caller is left
// in dead air.
func TestKilledInstanceBridgeIsReleased(t *testing.T) {
	t.Parallel()
	h := start(t, 202, leased)
	// The first instance leaves the group: the process to be killed takes
	// the command.
	_, err := h.stop()
	require.NoError(t, err)
	h.in.cl.Close()

	var out bytes.Buffer
	child := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestLostBridgeHelperProcess$", "-test.v")
	child.Env = append(os.Environ(), helperBrokersEnv+"="+strings.Join(h.cfg.Brokers, ","))
	child.Stdout, child.Stderr = &out, &out
	require.NoError(t, child.Start())
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	t.Cleanup(func() {
		_ = child.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("killed instance's output:\n%s", out.String())
		}
	})

	caller := startCallerSBC(t, 0)
	dest := startSIPp(t, "dest_answer.xml")
	cmd := inviteCommand(caller, "lost", dest.route())
	h.command(t, cmd)
	h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING, batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED,
		batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
	reinvite := caller.next(t, sip.INVITE)
	offer, err := sdp.Parse(string(reinvite.Body()))
	require.NoError(t, err)
	caller.next(t, sip.ACK)
	caller.echo(t, offer.Addr, 5)

	require.NoError(t, child.Process.Signal(syscall.SIGKILL))
	err = <-exited
	exited <- err
	require.Error(t, err, "killed")
	require.Zero(t, caller.count(sip.BYE), "the killed process ended nothing")

	next := h.launch(t, leased)
	t.Cleanup(func() {
		next.cancel()
		require.NoError(t, <-next.done)
	})
	end := h.outcome(t, cmd.CommandId)
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), end.GetStatus().String(), end.GetDetail())
	require.Equal(t, EndBridgeLost, end.GetReason())
	require.Contains(t, end.GetDetail(), "transfer instance TestLostBridgeHelperProcess holding the bridge stopped")
	// SIPp answers the BYE where the call's INVITE came from (the killed
	// process), not to its Via (RFC 3261 18.2.2) as a phone does: the
	// destination's 200 never reaches the instance that sent the BYE, so
	// only its arrival at SIPp (below) is checked.
	require.Contains(t, end.GetDetail(), "(BYE: caller 200, destination ")
	bye := caller.next(t, sip.BYE)
	require.Equal(t, cmd.Dialog.CallId, bye.CallID().Value())
	require.Equal(t, uint32(5), bye.CSeq().SeqNo, "the CSeq after the re-INVITE")
	log, err := dest.wait(t)
	require.NoError(t, err, "sipp: %s", log)
	require.Contains(t, log, "by=baton", "the destination leg was ended by the instance that took over")
	require.Equal(t, 1, caller.count(sip.BYE), "one instance released it")
}
