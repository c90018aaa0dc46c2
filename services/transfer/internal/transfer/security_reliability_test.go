//go:build reliability

package transfer

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/reliabilitytest"
	"github.com/baton-voice/baton/services/transfer/internal/bridge"
	"github.com/baton-voice/baton/services/transfer/internal/request"
	"github.com/baton-voice/baton/services/transfer/internal/sdp"
)

// TestReliabilitySecurityTransferTargets runs three attacks on where
// transfer sends SIP and media (issue 14, items 2, 3 and 11) and reports
// one row each:
//
//   - hostile route sets: REFER, BYE and INVITE commands in dialogs whose
//     Record-Route or Contact aims at a listener on loopback (TCP and UDP),
//     a name that resolves to it, IPv6 loopback, another port of the
//     INVITE's source, the metadata address and a private address outside
//     the peers. Before, transfer opened TCP to the listener and wrote the
//     REFER there.
//   - hostile commands written straight to Kafka: routes outside transfer's
//     allowlist, one smuggling the allowed host into a parameter. Before,
//     transfer dialled whatever a command named.
//   - a media takeover on a bridged warm transfer: a stranger at another
//     address floods the caller leg's port, a new port of the caller's
//     address bursts while the caller talks, then the caller's NAT
//     rebinds to a new port. Before the latch fix the first packet from
//     anywhere took the leg.
func TestReliabilitySecurityTransferTargets(t *testing.T) {
	t.Run("route_set", reliabilityHostileRouteSets)
	t.Run("commands", reliabilityHostileCommands)
	t.Run("media", reliabilityMediaTakeover)
}

// refusals renders the refused counters of reason by method.
func refusals(m *Metrics, reason string) (string, float64) {
	var parts []string
	total := 0.0
	for _, method := range []string{"refer", "bye", "invite"} {
		if v := testutil.ToFloat64(m.Refused.WithLabelValues(method, reason)); v > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", method, v))
			total += v
		}
	}
	sort.Strings(parts)
	return fmt.Sprintf("%s: %s", reason, strings.Join(parts, ", ")), total
}

func reliabilityHostileRouteSets(t *testing.T) {
	metrics := NewMetrics(prometheus.NewRegistry())
	h := start(t, 202, func(o *Options) {
		withInvite(nil)(o)
		o.Metrics = metrics
		o.Peers = request.Peers{Networks: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")}}
	})
	tr, dest := startTrap(t), startTrap(t)
	began := time.Now()
	n := attackDialogs(t, h, tr, dest, "203.0.113.5:5060")
	took := time.Since(began)
	time.Sleep(500 * time.Millisecond) // anything late would arrive now
	require.Zero(t, tr.reached(), "nothing reached the attacker's listener")
	require.Zero(t, dest.reached(), "no new leg was dialled")
	require.Zero(t, h.sbc.count())
	byReason, total := refusals(metrics, RefusedNextHopNotAllowed)
	require.Equal(t, float64(n), total)

	// Control: the SBC the INVITE came from is reached (loopback, outside
	// the peers): the listener-free outcome is the check, not a dead path.
	cmd := referCommand(h, "from-the-source")
	cmd.Dialog.RemoteAddress = h.sbc.addr.String()
	h.command(t, cmd)
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
	require.Equal(t, 1, h.sbc.count())

	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 9,
		Test: t.Name(),
		Load: fmt.Sprintf("%d commands over Kafka (REFER, BYE, INVITE x %d hostile dialogs) in %v; peers 10.20.0.0/16",
			n, n/3, took.Round(time.Millisecond)),
		Faults: "caller-controlled Record-Route/Contact aimed at a TCP+UDP listener on 127.0.0.1, localhost, [::1], " +
			"another port of the INVITE's source, 169.254.169.254, 10.99.0.1 (before: transfer opened TCP to the listener and wrote the REFER)",
		Inputs: "Dialog.route_set / remote_target / remote_address",
		Lost: fmt.Sprintf("listener: %d connections, %d datagrams, %d bytes; new-leg listener: %d; refused %s; "+
			"control: REFER to the INVITE's exact source delivered 1/1",
			tr.conns.Load(), tr.datagrams.Load(), tr.bytes.Load(), dest.reached(), byReason),
	})
}

func reliabilityHostileCommands(t *testing.T) {
	h, metrics, dest, n := hostileCommands(t)
	byReason, total := refusals(metrics, RefusedRouteNotAllowed)
	require.Equal(t, float64(n), total)

	cmd := referCommand(h, "allowed")
	h.command(t, cmd)
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
	require.Equal(t, 1, h.sbc.count())

	reliabilitytest.Report(t, reliabilitytest.Row{
		Item:   9,
		Test:   t.Name(),
		Load:   fmt.Sprintf("%d commands written straight to the handoffs topic (no router), allowlist sip:*@agents.example.com", n),
		Faults: "anyone who can write to Kafka places calls (before: transfer dialled any route a command named)",
		Inputs: "routes: premium-rate number at another host, look-alike host, tel:, host smuggled after a second '@', live loopback destination over UDP and TCP",
		Lost: fmt.Sprintf("SIP sent: 0 (caller's SBC 0 requests, destination listener %d); refused %s; control: allowed route delivered 1/1",
			dest.reached(), byReason),
	})
}

// sendFrames sends n frames numbered from base from conn to to, one every
// gap.
func sendFrames(ctx context.Context, conn *net.UDPConn, to netip.AddrPort, ssrc, base uint32, n int, gap time.Duration) error {
	tick := time.NewTicker(gap)
	defer tick.Stop()
	for i := range n {
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(i),
			Timestamp: uint32(i) * frameBytes, SSRC: ssrc}, Payload: frame(base + uint32(i))}
		b, err := pkt.Marshal()
		if err != nil {
			return err
		}
		if _, err := conn.WriteToUDPAddrPort(b, to); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// countFrom counts the packets whose index is in [lo, lo+span).
func countFrom(got []receivedRTP, lo, span uint32) int {
	n := 0
	for _, p := range got {
		if p.idx >= lo && p.idx < lo+span {
			n++
		}
	}
	return n
}

func reliabilityMediaTakeover(t *testing.T) {
	const (
		gap      = 20 * time.Millisecond
		talk     = 50  // the caller's frames before its NAT rebinds (1 s)
		flood    = 300 // the stranger's frames, at 10 ms, over both phases
		burst    = 50  // a new port of the caller's address while it talks
		rebound  = 100 // the caller's frames from its new port (2 s)
		destTalk = 175 // the destination's frames, over both phases
		// Frame index ranges per sender.
		callerBase, strangerBase, burstBase, reboundBase = 0, 1_000_000, 2_000_000, 3_000_000
		span                                             = 1_000_000
	)
	metrics := NewMetrics(prometheus.NewRegistry())
	h := start(t, 202, func(o *Options) {
		withInvite(func(io *InviteOptions) {
			io.Ports.RTCPInterval = 0
			io.IdleTimeout = time.Minute
		})(o)
		o.Metrics = metrics
	})
	caller := startCallerSBC(t, 0)
	dest := startMediaDest(t, "", func(media netip.AddrPort) netip.AddrPort { return media })
	cmd := inviteCommand(caller, "takeover", "sip:queue@"+dest.addr.String())
	cmd.Encryption = encUDPRTP
	h.command(t, cmd)
	h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
	destLeg := dest.offer(t).Addr
	callerOffer, err := sdp.Parse(string(caller.next(t, sip.INVITE).Body()))
	require.NoError(t, err)
	callerLeg := callerOffer.Addr

	listen := func(ip string) *net.UDPConn {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ip+":0")))
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	stranger, burster, newPort := listen("127.0.0.2"), listen("127.0.0.1"), listen("127.0.0.1")
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	atDest, atCaller := collect(ctx, dest.media), collect(ctx, caller.media)
	atStranger, atBurster, atNewPort := collect(ctx, stranger), collect(ctx, burster), collect(ctx, newPort)

	var wg sync.WaitGroup
	errs := make([]error, 5)
	wg.Go(func() { errs[0] = sendFrames(ctx, dest.media, destLeg, 0xDE57, 0, destTalk, gap) })
	wg.Go(func() {
		errs[1] = sendFrames(ctx, stranger, callerLeg, 0xBAD, strangerBase, flood, 10*time.Millisecond)
	})
	wg.Go(func() { errs[2] = sendFrames(ctx, burster, callerLeg, 0xB0B, burstBase, burst, gap) })
	// The caller talks for a second, then its NAT rebinds: the same
	// address, a new port.
	wg.Go(func() {
		if errs[3] = sendFrames(ctx, caller.media, callerLeg, 0xCA11, callerBase, talk, gap); errs[3] != nil {
			return
		}
		errs[4] = sendFrames(ctx, newPort, callerLeg, 0xCA11, reboundBase, rebound, gap)
	})
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	toDest, toCaller := atDest(), atCaller()
	toStranger, toBurster, toNewPort := atStranger(), atBurster(), atNewPort()

	h.fact(t, cmd.CallId, &batonv1.CallEnded{CallId: cmd.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
	end := h.outcome(t, cmd.CommandId)
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), end.GetStatus().String(), end.GetDetail())

	fromCaller, fromNewPort := countFrom(toDest, callerBase, span), countFrom(toDest, reboundBase, span)
	require.Equal(t, talk, fromCaller, "every frame the caller sent before the rebinding crossed")
	require.Zero(t, countFrom(toDest, strangerBase, span), "nothing of the stranger's crossed")
	require.Zero(t, countFrom(toDest, burstBase, span), "nothing of the burst crossed")
	require.Positive(t, fromNewPort, "after the re-latch the caller's new port is heard")
	droppedNew := rebound - fromNewPort
	require.GreaterOrEqual(t, droppedNew, bridge.RelatchPackets, "the new port waited for the re-latch")
	require.Less(t, droppedNew, rebound*3/4, "and got the leg about RelatchQuiet after the old port's last packet")
	require.Empty(t, toStranger, "the stranger heard nothing")
	require.Empty(t, toBurster, "the burst's port heard nothing")
	require.Positive(t, len(toCaller), "the destination was heard on the caller's old port before the rebinding")
	require.Positive(t, len(toNewPort), "and on its new port after the re-latch")

	foreign := testutil.ToFloat64(metrics.BridgeForeign.WithLabelValues("caller_to_destination"))
	relatches := testutil.ToFloat64(metrics.BridgeRelatches.WithLabelValues("caller_to_destination"))
	require.Equal(t, float64(flood+burst+droppedNew), foreign, "every packet not taken is counted foreign")
	require.Equal(t, 1.0, relatches)
	require.Zero(t, testutil.ToFloat64(metrics.BridgeRelatches.WithLabelValues("destination_to_caller")))
	st := end.GetBridge().GetCallerToDestination()
	require.Equal(t, uint64(talk+fromNewPort), st.GetPackets())

	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 9,
		Test: t.Name(),
		Load: fmt.Sprintf("1 bridged warm transfer: caller %d frames, then its NAT rebinds to a new port (%d frames); destination %d frames; 20 ms",
			talk, rebound, destTalk),
		Faults: fmt.Sprintf("stranger at 127.0.0.2 floods the caller leg's port (%d packets at 10 ms); a new port of the caller's address bursts %d packets while it talks "+
			"(before: the first packet from anywhere took the leg, the stranger heard the destination)", flood, burst),
		Inputs: "plain RTP over real UDP, frames numbered per sender",
		Lost: fmt.Sprintf("stranger: %d dropped, 0 forwarded, 0 of the destination's packets received; burst: %d dropped, 0 forwarded, 0 received; "+
			"rebinding: 1 re-latch after %d dropped packets from the new port (about %v after the old port's last), %d frames then forwarded, "+
			"destination heard on the new port %d; foreign counted %.0f, re-latches %.0f",
			flood, burst, droppedNew, (gap * time.Duration(droppedNew)).Round(time.Millisecond), fromNewPort, len(toNewPort),
			foreign, relatches),
	})
}
