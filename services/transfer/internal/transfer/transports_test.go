package transfer

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/sdp"
	"github.com/baton-voice/baton/services/transfer/internal/uac"
)

// TestBlindTransferOverTCP: a call that came in over TCP is transferred
// over TCP. The REFER and the BYE that ends the agent leg reach the SBC
// over TCP (RFC 3261 18: a new connection to the remote target), their
// Via names transfer's TCP listener, and the SBC's answers come back on
// that connection.
func TestBlindTransferOverTCP(t *testing.T) {
	t.Parallel()
	h := start(t, 202, func(o *Options) { o.ByeAfterRefer = 200 * time.Millisecond })
	cmd := referCommand(h, "tcp")
	cmd.Dialog.Transport = batonv1.Transport_TRANSPORT_TCP
	cmd.Dialog.NextLocalCseq = 3
	h.command(t, cmd)

	refer := h.sbc.next(t).req
	require.Equal(t, sip.REFER, refer.Method)
	require.Equal(t, "TCP", refer.Transport(), "the REFER came over TCP")
	via := refer.Via()
	require.Equal(t, "TCP", via.Transport)
	require.Equal(t, "127.0.0.1", via.Host)
	require.Equal(t, h.sip.TCPAddr().Port, via.Port, "the Via names the TCP listener")
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)

	h.fact(t, cmd.CallId, &batonv1.NotifyReceived{Event: "refer", SipfragStatus: 200, SipfragReason: "OK"})
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)
	bye := h.sbc.next(t).req
	require.Equal(t, sip.BYE, bye.Method)
	require.Equal(t, "TCP", bye.Transport(), "the agent leg's BYE came over TCP")
	require.Equal(t, uint32(4), bye.CSeq().SeqNo)
	require.Eventually(t, func() bool { return h.in.svc.reg.inFlight() == 0 }, 5*time.Second, time.Millisecond,
		"the execution ends: the BYE's 200 came back over TCP")
	require.Equal(t, 2, h.sbc.count())
}

// TestByeOverTCPWhenTheTargetSaysSo: a remote target with transport=tcp
// is reached over TCP though the call's snapshot says UDP (RFC 3263 4.1),
// and the BYE method carries its headers there.
func TestByeOverTCPWhenTheTargetSaysSo(t *testing.T) {
	t.Parallel()
	h := start(t, 200, nil)
	d := dialogTo(h.sbc.addr, "call-tcp-bye")
	d.RemoteTarget += ";transport=tcp"
	h.command(t, &batonv1.HandoffCommand{
		CommandId: "cmd-tcp-bye", CallId: d.CallId, Method: batonv1.Method_METHOD_BYE, Destination: "sbc",
		Headers: []*batonv1.SipHeader{{Name: "X-Handoff-Reason", Value: "agent_request"}}, Dialog: d, Attempt: 1,
	})
	bye := h.sbc.next(t).req
	require.Equal(t, sip.BYE, bye.Method)
	require.Equal(t, "TCP", bye.Transport())
	require.Equal(t, "agent_request", bye.GetHeader("X-Handoff-Reason").Value())
	requireOutcome(t, h.outcome(t, "cmd-tcp-bye"), batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)
}

// TestWarmTransferOverTCP: a route with transport=tcp gets its INVITE
// over TCP, with SIPp over TCP as the destination; the caller's call came
// in over TCP, so its re-INVITE goes over TCP too. RTP then crosses the
// bridge both ways, and the destination's BYE, sent on the connection we
// opened, ends the call.
func TestWarmTransferOverTCP(t *testing.T) {
	t.Parallel()
	h := start(t, 202, withInvite(nil))
	caller := startCallerSBC(t, 0)
	dest := startSIPp(t, "dest_hangup.xml", "-t", "t1", "-d", "1500")
	cmd := inviteCommand(caller, "warm-tcp", dest.route()+";transport=tcp")
	cmd.Dialog.Transport = batonv1.Transport_TRANSPORT_TCP
	h.command(t, cmd)

	h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
	reinvite := caller.next(t, sip.INVITE)
	require.Equal(t, "TCP", reinvite.Transport(), "the caller's re-INVITE went over TCP")
	require.Equal(t, "TCP", caller.next(t, sip.ACK).Transport())
	offer, err := sdp.Parse(string(reinvite.Body()))
	require.NoError(t, err)
	const packets = 20
	caller.echo(t, offer.Addr, packets)

	bye := caller.next(t, sip.BYE)
	require.Equal(t, "TCP", bye.Transport())
	end := h.outcome(t, cmd.CommandId)
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), end.GetStatus().String(), end.GetDetail())
	require.Equal(t, "destination_hangup", end.GetReason())
	require.Equal(t, uint64(packets), end.GetBridge().GetCallerToDestination().GetPackets())
	require.Equal(t, uint64(packets), end.GetBridge().GetDestinationToCaller().GetPackets(), "every echo crossed back")

	log, err := dest.wait(t)
	require.NoError(t, err, "sipp: %s", log)
	require.Contains(t, log, "x_customer_id=CUST-7", "the X- headers reached the destination")
	require.Contains(t, log, "HANGUP call_id=")
	// SIPp saw the INVITE over TCP, with a Via naming our TCP listener.
	msgs := dest.messages(t)
	require.Contains(t, msgs, "INVITE sip:queue@127.0.0.1:"+strconv.Itoa(dest.port)+";transport=tcp SIP/2.0")
	require.Contains(t, msgs, "Via: SIP/2.0/TCP "+net.JoinHostPort("127.0.0.1", strconv.Itoa(h.sip.TCPAddr().Port)))
}

// messages is SIPp's message trace (-trace_msg): every message it sent
// and received, as on the wire.
func (r *sippRun) messages(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(filepath.Dir(r.logFile), "messages.log"))
	require.NoError(t, err)
	return string(b)
}

// TestBlindTransferOverTLS: a call that came in over TLS is transferred
// over TLS from transfer's TLS transport, verified against the SBC's
// certificate; the REFER's Via names the TLS listener.
func TestBlindTransferOverTLS(t *testing.T) {
	t.Parallel()
	sbcCert, ourCert := newSelfSigned(t, "sbc"), newSelfSigned(t, "baton")
	h := start(t, 202, nil, uac.Options{TLS: &uac.TLS{
		Listen: "127.0.0.1:0",
		Server: &tls.Config{Certificates: []tls.Certificate{ourCert.cert}, MinVersion: tls.VersionTLS12},
		Client: &tls.Config{RootCAs: sbcCert.pool, MinVersion: tls.VersionTLS12},
	}})
	sbc := startSBC(t, 202, &tls.Config{Certificates: []tls.Certificate{sbcCert.cert}, MinVersion: tls.VersionTLS12})
	cmd := referCommand(h, "tls")
	cmd.Dialog = dialogTo(sbc.addr, cmd.CallId)
	cmd.Dialog.Transport = batonv1.Transport_TRANSPORT_TLS
	cmd.Dialog.RemoteTarget = "sip:sbc@127.0.0.1:" + strconv.Itoa(sbc.tlsPort)
	h.command(t, cmd)

	refer := sbc.next(t).req
	require.Equal(t, sip.REFER, refer.Method)
	require.Equal(t, "TLS", refer.Transport(), "the REFER came over TLS")
	require.Equal(t, "TLS", refer.Via().Transport)
	require.Equal(t, h.in.sip.TLSAddr().Port, refer.Via().Port, "the Via names the TLS listener")
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
}

// TestTLSCallWithoutTLSIsRefused: without a TLS transport, a REFER into a
// call that came in over TLS fails; nothing goes out over UDP instead.
func TestTLSCallWithoutTLSIsRefused(t *testing.T) {
	t.Parallel()
	h := start(t, 202, nil)
	cmd := referCommand(h, "tls-none")
	cmd.Dialog.Transport = batonv1.Transport_TRANSPORT_TLS
	h.command(t, cmd)
	o := h.outcome(t, cmd.CommandId)
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED.String(), o.GetStatus().String(), o.GetDetail())
	require.Contains(t, o.GetDetail(), "TLS signalling is not configured")
	require.Zero(t, h.sbc.count(), "nothing reached the SBC")
}

// TestLargeReferMovesToTCP (issue 19, 7): a REFER carrying three 500-byte
// X- headers (each within the 1024-byte line limit) is larger than a UDP
// request may be (RFC 3261 18.1.1); it goes to the SBC over TCP instead of
// failing with "size of packet larger than MTU".
func TestLargeReferMovesToTCP(t *testing.T) {
	t.Parallel()
	h := start(t, 202, nil)
	cmd := referCommand(h, "large")
	for _, name := range []string{"X-Summary-1", "X-Summary-2", "X-Summary-3"} {
		cmd.Headers = append(cmd.Headers, &batonv1.SipHeader{Name: name, Value: strings.Repeat("a", 500)})
	}
	h.command(t, cmd)
	refer := h.sbc.next(t).req
	require.Equal(t, sip.REFER, refer.Method)
	require.Equal(t, "TCP", refer.Transport(), "too large for UDP: sent over TCP")
	require.Greater(t, len(refer.String()), 1300)
	require.Contains(t, refer.GetHeader("Refer-To").Value(), strings.Repeat("a", 500))
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
}
