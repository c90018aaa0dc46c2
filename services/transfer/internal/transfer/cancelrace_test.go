package transfer

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// TestAnswerRacingTheCancelIsTakenDown: the destination rings, the answer
// timeout CANCELs it, and its 200 to the INVITE crosses the CANCEL (RFC
// 3261 9.1). sipgo's WaitAnswer then fails, but the leg holds the 2xx:
// transfer ACKs it and BYEs the leg, so no human is left on an answered
// call nobody is on. Before, only a WaitAnswer without error counted as
// answered, which a cancelled one never is.
func TestAnswerRacingTheCancelIsTakenDown(t *testing.T) {
	t.Parallel()
	h := start(t, 202, withInvite(nil))
	caller := startCallerSBC(t, 0)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	got := make(chan string, 16)
	go func() {
		buf := make([]byte, 65535)
		var invite *sip.Request
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
			if err != nil {
				continue
			}
			req, ok := msg.(*sip.Request)
			if !ok {
				continue
			}
			got <- req.Method.String()
			send := func(res *sip.Response) { _, _ = conn.WriteToUDP([]byte(res.String()), from) }
			switch req.Method {
			case sip.INVITE:
				if invite == nil {
					invite = req
					ringing := sip.NewResponseFromRequest(req, 180, "Ringing", nil)
					ringing.To().Params.Add("tag", "human")
					send(ringing)
				}
			case sip.CANCEL:
				send(sip.NewResponseFromRequest(req, 200, "OK", nil))
				ok := sip.NewResponseFromRequest(invite, 200, "OK", []byte(
					"v=0\r\no=human 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"))
				ok.To().Params.Add("tag", "human")
				ok.AppendHeader(sip.NewHeader("Contact", fmt.Sprintf("<sip:human@%s>", conn.LocalAddr())))
				ok.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
				send(ok)
			case sip.BYE:
				send(sip.NewResponseFromRequest(req, 200, "OK", nil))
			}
		}
	}()
	cmd := inviteCommand(caller, "cancel-race", fmt.Sprintf("sip:human@%s", conn.LocalAddr()))
	cmd.AnswerTimeout = durationpb.New(500 * time.Millisecond)
	h.command(t, cmd)
	h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED)
	var methods []string
	deadline := time.After(10 * time.Second)
	for !strings.Contains(strings.Join(methods, " "), "BYE") {
		select {
		case m := <-got:
			methods = append(methods, m)
		case <-deadline:
			t.Fatalf("the answered leg was not taken down: the destination saw %v", methods)
		}
	}
	require.Contains(t, methods, "ACK", "the 2xx is ACKed before the BYE: %v", methods)
	require.Less(t, strings.Index(strings.Join(methods, " "), "ACK"), strings.Index(strings.Join(methods, " "), "BYE"))
	require.Zero(t, caller.count(sip.INVITE), "the caller's media never moved")
}
