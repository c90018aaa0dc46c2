package transfer

import (
	"bytes"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/sdp"
)

// releasing configures the destination "queue" to release its bridge
// with a REFER with Replaces, delay after BRIDGED; bridges are held on
// the attempt log with a lease.
func releasing(metrics *Metrics, delay time.Duration) func(*Options) {
	return func(o *Options) {
		withInvite(nil)(o)
		o.Metrics = metrics
		o.Destinations = map[string]Destination{"queue": {ReleaseBridge: ReleaseReplaces, ReleaseDelay: delay}}
		o.BridgeLease = time.Second // held on the log meanwhile, as in production
	}
}

// bridgedToSIPp runs a warm transfer of a new call to dest up to
// BRIDGED, checks that n packets cross the bridge both ways, and returns
// the command and the bridge's caller-side address.
func bridgedToSIPp(t *testing.T, h *harness, caller *callerSBC, id string, dest *sippRun, n int) (*batonv1.HandoffCommand, netip.AddrPort) {
	t.Helper()
	cmd := inviteCommand(caller, id, dest.route())
	h.command(t, cmd)
	h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING, batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED,
		batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
	reinvite := caller.next(t, sip.INVITE)
	offer, err := sdp.Parse(string(reinvite.Body()))
	require.NoError(t, err)
	caller.next(t, sip.ACK)
	caller.echo(t, offer.Addr, n)
	return cmd, offer.Addr
}

// replacesOf reads the Replaces a REFER's Refer-To carries, and the
// target without it.
func replacesOf(t *testing.T, refer *sip.Request) (sip.Uri, string) {
	t.Helper()
	v := strings.TrimSuffix(strings.TrimPrefix(refer.GetHeader("Refer-To").Value(), "<"), ">")
	target, query, ok := strings.Cut(v, "?")
	require.True(t, ok, "Refer-To %q has headers", v)
	name, value, _ := strings.Cut(query, "=")
	require.Equal(t, "Replaces", name)
	rep, err := url.PathUnescape(value)
	require.NoError(t, err)
	var uri sip.Uri
	require.NoError(t, sip.ParseUri(target, &uri))
	return uri, rep
}

// TestAttendedTransferReleasesTheBridge: a warm transfer to a destination
// with release_bridge replaces is bridged (media crosses Baton), then
// Baton sends the caller's SBC a REFER with Replaces naming its dialog
// with the destination (SIPp). The SBC (a sipgo peer: SIPp cannot send to
// a third party) sends the destination the INVITE with Replaces, and its
// NOTIFY 200 reaches transfer as ingress's fact. Baton leaves: it ends
// the replaced leg and the caller's dialog with it, the outcome is ENDED
// bridge_released, the bridge's ports are closed, and media between the
// caller and the destination no longer crosses Baton (the bridge's counts
// are those of before the release).
func TestAttendedTransferReleasesTheBridge(t *testing.T) {
	t.Parallel()
	metrics := NewMetrics(prometheus.NewRegistry())
	h := start(t, 202, releasing(metrics, 300*time.Millisecond))
	caller := startCallerSBC(t, 0)
	caller.mu.Lock()
	caller.referAnswer = sip.StatusAccepted
	caller.mu.Unlock()
	dest := startSIPp(t, "dest_replaces.xml", "-m", "2")

	const before = 10
	cmd, bridgeAt := bridgedToSIPp(t, h, caller, "attended", dest, before)

	refer := caller.next(t, sip.REFER)
	require.Equal(t, cmd.Dialog.CallId, refer.CallID().Value(), "in the caller's dialog")
	require.Equal(t, uint32(5), refer.CSeq().SeqNo, "after the re-INVITE")
	target, rep := replacesOf(t, refer)
	require.Equal(t, strconv.Itoa(dest.port), strconv.Itoa(target.Port), "Refer-To is the destination Baton dialled")
	m := regexp.MustCompile(`^([^;]+);to-tag=([^;]+);from-tag=([^;]+)$`).FindStringSubmatch(rep)
	require.NotNil(t, m, "Replaces %q", rep)
	require.Contains(t, m[2], "SIPpTag01", "to-tag is the destination's tag")

	accepted := h.outcome(t, cmd.CommandId)
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS.String(), accepted.GetStatus().String(), accepted.GetDetail())
	require.Equal(t, int32(202), accepted.GetSipCode())
	require.Equal(t, refer.GetHeader("Refer-To").Value(), accepted.GetRelease().GetReferTo())

	// The SBC carries the REFER out: an INVITE with Replaces to the
	// destination, offering the caller's own media address.
	cl, err := sipgo.NewClient(caller.ua, sipgo.WithClientHostname("127.0.0.1"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	dua := sipgo.DialogUA{Client: cl, ContactHDR: sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "sbc", Host: "127.0.0.1",
		Port: caller.addr.Port}}}
	callerMedia := caller.media.LocalAddr().(*net.UDPAddr).AddrPort()
	offer := sdp.Session{Origin: "sbc 2 1 IN IP4 127.0.0.1", Addr: callerMedia, Formats: []sdp.Format{{PT: 0, Name: "PCMU", ClockRate: 8000}}}
	sess, err := dua.Invite(t.Context(), target, []byte(offer.String()), sip.NewHeader("Replaces", rep), sip.NewHeader("Require", "replaces"),
		sip.NewHeader("Content-Type", "application/sdp"))
	require.NoError(t, err)
	require.NoError(t, sess.WaitAnswer(t.Context(), sipgo.AnswerOptions{}))
	require.NoError(t, sess.Ack(t.Context()))
	ans, err := sdp.Parse(string(sess.InviteResponse.Body()))
	require.NoError(t, err)
	h.fact(t, cmd.CallId, &batonv1.NotifyReceived{CallId: cmd.CallId, Event: "refer;id=" + strconv.Itoa(int(refer.CSeq().SeqNo)),
		SubscriptionState: "terminated;reason=noresource", SipfragStatus: 200, SipfragReason: "OK", Cseq: 1})

	end := h.outcome(t, cmd.CommandId)
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), end.GetStatus().String(), end.GetDetail())
	require.Equal(t, EndBridgeReleased, end.GetReason())
	require.True(t, end.GetRelease().GetReleased())
	require.Equal(t, uint64(before), end.GetBridge().GetCallerToDestination().GetPackets())
	require.Equal(t, uint64(before), end.GetBridge().GetDestinationToCaller().GetPackets())
	bye := caller.next(t, sip.BYE)
	require.Equal(t, cmd.Dialog.CallId, bye.CallID().Value(), "Baton ended its dialog with the caller's side")
	require.Equal(t, uint32(6), bye.CSeq().SeqNo, "after the REFER")

	// The bridge is gone, and the caller's media reaches the destination
	// straight: SIPp echoes it from its own address.
	require.Eventually(t, func() bool { return !bound(t, "udp", int(bridgeAt.Port())) }, 5*time.Second, 10*time.Millisecond,
		"the bridge's caller port is closed")
	const after = 10
	directEcho(t, caller, ans.Addr, after)
	require.Equal(t, float64(before), testutil.ToFloat64(metrics.BridgePackets.WithLabelValues("caller_to_destination")),
		"no packet crossed Baton after the release")
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.BridgeReleases.WithLabelValues(releaseReleased)))

	require.NoError(t, sess.Bye(t.Context()))
	log, err := dest.wait(t)
	require.NoError(t, err, "sipp: %s", log)
	require.Contains(t, log, "replaces="+rep, "the destination got the INVITE with Replaces")
	require.Contains(t, log, "INVITE call_id="+m[1]+" ", "Replaces names Baton's leg to the destination")
	require.Contains(t, log, "BYE call_id="+m[1]+" by=baton", "Baton ended the replaced leg")
}

// directEcho sends n packets from the caller's media socket to to and
// reads each echo, from to itself.
func directEcho(t *testing.T, c *callerSBC, to netip.AddrPort, n int) {
	t.Helper()
	buf := make([]byte, 1500)
	for i := range n {
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(5000 + i),
			Timestamp: uint32(160 * i), SSRC: 0xD1EC7}, Payload: bytes.Repeat([]byte{byte(i)}, 160)}
		b, err := pkt.Marshal()
		require.NoError(t, err)
		_, err = c.media.WriteToUDPAddrPort(b, to)
		require.NoError(t, err)
		require.NoError(t, c.media.SetReadDeadline(time.Now().Add(3*time.Second)))
		m, from, err := c.media.ReadFromUDPAddrPort(buf)
		require.NoError(t, err, "no echo of packet %d", i)
		require.Equal(t, to, from, "the echo comes from the destination itself")
		var back rtp.Packet
		require.NoError(t, back.Unmarshal(buf[:m]))
		require.Equal(t, pkt.Payload, back.Payload)
	}
}

// TestAttendedTransferRefusedKeepsTheBridge: the caller's SBC refuses the
// REFER with Replaces (405), or accepts it and its NOTIFY reports a
// failure (the INVITE with Replaces failed): the bridge stays, a PROGRESS
// outcome says so, media still crosses Baton, and the call ends as any
// bridged call.
func TestAttendedTransferRefusedKeepsTheBridge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		referCode  int
		notifyCode int32
		wantCode   int32
		wantDetail string
	}{
		{name: "REFER 405", referCode: 405, wantCode: 405, wantDetail: "REFER with Replaces refused 405: the bridge stays"},
		{name: "REFER 603", referCode: 603, wantCode: 603, wantDetail: "REFER with Replaces refused 603: the bridge stays"},
		{name: "NOTIFY 503", referCode: 202, notifyCode: 503, wantCode: 503,
			wantDetail: "REFER with Replaces failed: NOTIFY 503: the bridge stays"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			metrics := NewMetrics(prometheus.NewRegistry())
			h := start(t, 202, releasing(metrics, 100*time.Millisecond))
			caller := startCallerSBC(t, 0)
			caller.mu.Lock()
			caller.referAnswer = tc.referCode
			caller.mu.Unlock()
			dest := startSIPp(t, "dest_answer.xml")
			const n = 5
			cmd, bridgeAt := bridgedToSIPp(t, h, caller, "kept-"+strconv.Itoa(tc.referCode), dest, n)
			refer := caller.next(t, sip.REFER)
			_, rep := replacesOf(t, refer)
			require.Contains(t, rep, ";to-tag=")
			o := h.outcome(t, cmd.CommandId)
			if tc.notifyCode != 0 {
				require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS.String(), o.GetStatus().String(), o.GetDetail())
				require.Equal(t, int32(202), o.GetSipCode())
				h.fact(t, cmd.CallId, &batonv1.NotifyReceived{CallId: cmd.CallId, Event: "refer;id=" + strconv.Itoa(int(refer.CSeq().SeqNo)),
					SubscriptionState: "terminated", SipfragStatus: tc.notifyCode, SipfragReason: "Service Unavailable"})
				o = h.outcome(t, cmd.CommandId)
			}
			require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS.String(), o.GetStatus().String(), o.GetDetail())
			require.Equal(t, tc.wantCode, o.GetSipCode())
			require.Equal(t, tc.wantDetail, o.GetDetail())
			require.NotNil(t, o.GetRelease())
			require.False(t, o.GetRelease().GetReleased())

			// The bridge still carries the call.
			caller.echo(t, bridgeAt, n)
			h.fact(t, cmd.CallId, &batonv1.CallEnded{CallId: cmd.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
			end := h.outcome(t, cmd.CommandId)
			require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), end.GetStatus().String(), end.GetDetail())
			require.Equal(t, EndCallerHangup, end.GetReason())
			require.Nil(t, end.GetRelease())
			require.Equal(t, uint64(2*n), end.GetBridge().GetCallerToDestination().GetPackets(), "media crossed Baton before and after")
			require.Equal(t, 1.0, testutil.ToFloat64(metrics.BridgeReleases.WithLabelValues(releaseRefused)))
			log, err := dest.wait(t)
			require.NoError(t, err, "sipp: %s", log)
		})
	}
}
