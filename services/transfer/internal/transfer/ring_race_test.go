package transfer

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// TestRingingRecordedWhenTheFinalResponseOvertakesIt (issue 19, 6): a
// destination that sends 180 and its final response back to back (as
// linphonec over TLS does, 0.1 ms apart) still gets RINGING recorded
// before the outcome. sipgo hands each message to its own goroutine, so
// the final response can reach the transaction first, which then drops
// the 180; transfer takes it from the transport's read order instead.
// Without that, some of these calls lose their RINGING.
func TestRingingRecordedWhenTheFinalResponseOvertakesIt(t *testing.T) {
	t.Parallel()
	h := start(t, 202, withInvite(nil))
	caller := startCallerSBC(t, 0)
	dest := startRingThenBusy(t)
	const calls = 12
	for i := range calls {
		cmd := inviteCommand(caller, fmt.Sprintf("race-%d", i), dest)
		h.command(t, cmd)
		got := h.statuses(t, cmd.CommandId,
			batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED)
		require.EqualValues(t, 180, got[0].GetSipCode(), "call %d", i)
		require.EqualValues(t, 486, got[1].GetSipCode(), "call %d", i)
	}
}

// startRingThenBusy is a UDP destination that answers each INVITE with a
// 180 and a 486 in two datagrams sent at once, and ignores the rest (the
// ACK of the 486). It returns its route.
func startRingThenBusy(t *testing.T) string {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if !strings.HasPrefix(string(buf[:n]), "INVITE ") {
				continue
			}
			msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
			if err != nil {
				continue
			}
			req := msg.(*sip.Request)
			ringing := sip.NewResponseFromRequest(req, 180, "Ringing", nil)
			busy := sip.NewResponseFromRequest(req, 486, "Busy Here", nil)
			for _, res := range []*sip.Response{ringing, busy} {
				res.To().Params.Add("tag", "busy-dest")
				if _, err := conn.WriteToUDP([]byte(res.String()), from); err != nil {
					return
				}
			}
		}
	}()
	return fmt.Sprintf("sip:agent@%s", conn.LocalAddr())
}
