package transfer

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/bridge"
	"github.com/baton-voice/baton/services/transfer/internal/sdp"
)

// TestDestinationHoldAndResume: a destination (SIPp) that puts the
// bridged call on hold and resumes it gets 200 OK answers with the
// mirrored direction (RFC 3264 6.1) in its dialog; media keeps crossing
// the bridge, and its BYE later ends the call as usual.
func TestDestinationHoldAndResume(t *testing.T) {
	t.Parallel()
	h := start(t, 202, withInvite(nil))
	caller := startCallerSBC(t, 0)
	dest := startSIPp(t, "dest_reinvite.xml", "-d", "1500")
	cmd := inviteCommand(caller, "hold", dest.route())
	h.command(t, cmd)

	h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
	reinvite := caller.next(t, sip.INVITE)
	caller.next(t, sip.ACK)
	offer, err := sdp.Parse(string(reinvite.Body()))
	require.NoError(t, err)
	const packets = 20
	caller.echo(t, offer.Addr, packets)

	end := h.outcome(t, cmd.CommandId)
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), end.GetStatus().String(), end.GetDetail())
	require.Equal(t, "destination_hangup", end.GetReason(), "the re-INVITEs did not end the call")
	require.Equal(t, uint64(packets), end.GetBridge().GetDestinationToCaller().GetPackets(), "every echo crossed back")

	log, err := dest.wait(t)
	require.NoError(t, err, "sipp: %s", log)
	require.Contains(t, log, "REINVITE cseq=2 offer=sendonly answer=a=recvonly")
	require.Contains(t, log, "REINVITE cseq=3 offer=sendrecv answer=a=sendrecv")
	require.Contains(t, log, "HANGUP call_id=")
}

// newTestLeg is a destination leg on a real bridge, answered with PCMU
// and telephone-event at answerAddr; keys make it SRTP.
func newTestLeg(t *testing.T, keys bridge.Keys) (*destinationLeg, sdp.Session) {
	t.Helper()
	br, err := bridge.New(&bridge.Ports{Host: loopback})
	require.NoError(t, err)
	t.Cleanup(br.Close)
	ours := sdp.Session{
		Origin: "baton 7 7 IN IP4 127.0.0.1", Addr: netip.AddrPortFrom(loopback, uint16(br.Leg(bridge.Destination).Port())),
		Formats: []sdp.Format{{PT: 0, Name: "PCMU", ClockRate: 8000}, {PT: 8, Name: "PCMA", ClockRate: 8000},
			{PT: 101, Name: "telephone-event", ClockRate: 8000, Fmtp: "0-16"}},
	}
	theirs := sdp.Session{
		Origin: "dest 1 1 IN IP4 127.0.0.1", Addr: netip.MustParseAddrPort("127.0.0.1:40000"),
		Formats: []sdp.Format{{PT: 0, Name: "PCMU", ClockRate: 8000}, {PT: 96, Name: "telephone-event", ClockRate: 8000}},
	}
	if keys.Local.Suite != "" {
		ours.Proto, theirs.Proto = "RTP/SAVP", "RTP/SAVP"
		ours.Crypto, theirs.Crypto = []sdp.Crypto{keys.Local}, []sdp.Crypto{keys.Remote}
	}
	require.NoError(t, br.Leg(bridge.Destination).SetRemote(theirs.Addr, 8000, keys))
	return newDestinationLeg(br, ours, theirs, ours.Formats[0], keys), theirs
}

func reInviteWith(s *sdp.Session) *sip.Request {
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", Host: "127.0.0.1"})
	if s != nil {
		req.SetBody([]byte(s.String()))
	}
	return req
}

func TestDestinationReInviteAnswers(t *testing.T) {
	t.Parallel()
	d, theirs := newTestLeg(t, bridge.Keys{})
	first := d.last.String()

	// A session refresh with the same description: 200, same o= version.
	code, _, body := d.answer(reInviteWith(&theirs))
	require.Equal(t, 200, code)
	ans, err := sdp.Parse(string(body))
	require.NoError(t, err)
	require.Equal(t, "baton 7 7 IN IP4 127.0.0.1", ans.Origin, "unchanged answer keeps its version")
	require.Equal(t, first, string(body))
	require.Equal(t, []sdp.Format{{PT: 0, Name: "PCMU", ClockRate: 8000}, {PT: 96, Name: "telephone-event", ClockRate: 8000}}, ans.Formats,
		"the leg's codec and the peer's telephone-event payload type")

	// Hold: recvonly, a new version, and the leg's silence is expected.
	hold := theirs
	hold.Direction = "sendonly"
	code, _, body = d.answer(reInviteWith(&hold))
	require.Equal(t, 200, code)
	ans, err = sdp.Parse(string(body))
	require.NoError(t, err)
	require.Equal(t, "recvonly", ans.Direction)
	require.Equal(t, "baton 7 8 IN IP4 127.0.0.1", ans.Origin)
	require.True(t, d.onHold())
	held := d.br.Leg(bridge.Destination)
	// While it holds, the bridge sends it nothing (issue 19, 5).
	require.False(t, held.Receiving())

	// Resume at a new address: sendrecv, and the leg sends there.
	moved := theirs
	moved.Addr = netip.MustParseAddrPort("127.0.0.1:40010")
	code, _, body = d.answer(reInviteWith(&moved))
	require.Equal(t, 200, code)
	ans, err = sdp.Parse(string(body))
	require.NoError(t, err)
	require.Equal(t, "sendrecv", ans.Direction)
	require.False(t, d.onHold())
	require.True(t, held.Receiving(), "resumed: the bridge sends to it again")
	remote, ok := d.br.Leg(bridge.Destination).Remote()
	require.True(t, ok)
	require.Equal(t, moved.Addr, remote)

	// An offerless re-INVITE: our description as the offer.
	code, _, body = d.answer(reInviteWith(nil))
	require.Equal(t, 200, code)
	require.Equal(t, d.last.String(), string(body))

	// A codec Baton would have to transcode: 488, nothing changes.
	pcma := theirs
	pcma.Formats = []sdp.Format{{PT: 8, Name: "PCMA", ClockRate: 8000}}
	before := d.last.String()
	code, _, _ = d.answer(reInviteWith(&pcma))
	require.Equal(t, 488, code)
	require.Equal(t, before, d.last.String())

	// RTP to SRTP and unreadable SDP: 488.
	key, err := sdp.NewCrypto(1, "AES_CM_128_HMAC_SHA1_80")
	require.NoError(t, err)
	srtp := theirs
	srtp.Proto, srtp.Crypto = "RTP/SAVP", []sdp.Crypto{key}
	code, _, _ = d.answer(reInviteWith(&srtp))
	require.Equal(t, 488, code)
	bad := reInviteWith(nil)
	bad.SetBody([]byte("v=0\r\nm=video"))
	code, _, _ = d.answer(bad)
	require.Equal(t, 488, code)
}

func TestDestinationReInviteWithNewKeys(t *testing.T) {
	t.Parallel()
	local, err := sdp.NewCrypto(1, "AES_CM_128_HMAC_SHA1_80")
	require.NoError(t, err)
	remote, err := sdp.NewCrypto(1, "AES_CM_128_HMAC_SHA1_80")
	require.NoError(t, err)
	d, theirs := newTestLeg(t, bridge.Keys{Local: local, Remote: remote})

	rekey, err := sdp.NewCrypto(3, "AES_CM_128_HMAC_SHA1_80")
	require.NoError(t, err)
	next := theirs
	next.Crypto = []sdp.Crypto{rekey}
	code, _, body := d.answer(reInviteWith(&next))
	require.Equal(t, 200, code)
	ans, err := sdp.Parse(string(body))
	require.NoError(t, err)
	require.Len(t, ans.Crypto, 1)
	require.Equal(t, 3, ans.Crypto[0].Tag, "answered under the offer's tag")
	require.Equal(t, local.Key, ans.Crypto[0].Key, "with our key")

	gcm, err := sdp.NewCrypto(1, "AEAD_AES_128_GCM")
	require.NoError(t, err)
	next.Crypto = []sdp.Crypto{gcm}
	code, _, _ = d.answer(reInviteWith(&next))
	require.Equal(t, 488, code, "another suite would need new local keys too")

	plain := theirs
	plain.Proto, plain.Crypto = "RTP/AVP", nil
	code, _, _ = d.answer(reInviteWith(&plain))
	require.Equal(t, 488, code, "SRTP to RTP")
}

// TestHeldDestinationIsNotIdle: the idle check skips a held destination
// but still watches the caller.
func TestHeldDestinationIsNotIdle(t *testing.T) {
	t.Parallel()
	br, err := bridge.New(&bridge.Ports{Host: loopback})
	require.NoError(t, err)
	defer br.Close()
	br.Activate()
	later := time.Now().Add(time.Minute)
	side, idle := br.Idle(later, time.Second)
	require.True(t, idle)
	require.Equal(t, bridge.Caller, side)
	_, idle = br.Idle(later, time.Second, bridge.Caller, bridge.Destination)
	require.False(t, idle)
	side, idle = br.Idle(later, time.Second, bridge.Caller)
	require.True(t, idle)
	require.Equal(t, bridge.Destination, side)
	require.True(t, strings.EqualFold(side.String(), "destination"))
}

// TestCallerHoldOnTheBridge (issue 19, session timers and hold on bridged
// calls): the caller's re-INVITE reaches ingress, which answers from the
// bridge and publishes CallUpdated; the bridge then sends the held caller
// nothing, follows a new address, and sends again on resume.
func TestCallerHoldOnTheBridge(t *testing.T) {
	t.Parallel()
	br, err := bridge.New(&bridge.Ports{Host: netip.MustParseAddr("127.0.0.1")})
	require.NoError(t, err)
	t.Cleanup(br.Close)
	leg := br.Leg(bridge.Caller)
	require.NoError(t, leg.SetRemote(netip.MustParseAddrPort("127.0.0.1:40000"), 8000, bridge.Keys{}))

	held := callerUpdate(leg, &batonv1.CallUpdated{Direction: "recvonly", RemoteDirection: "sendonly", Hold: true,
		RemoteRtpAddress: "127.0.0.1:40000"})
	require.True(t, held)
	require.False(t, leg.Receiving(), "Baton answered recvonly: nothing is sent to the caller")

	held = callerUpdate(leg, &batonv1.CallUpdated{Direction: "sendrecv", RemoteDirection: "sendrecv",
		RemoteRtpAddress: "127.0.0.2:40002"})
	require.False(t, held)
	require.True(t, leg.Receiving(), "resumed")
	remote, ok := leg.Remote()
	require.True(t, ok)
	require.Equal(t, netip.MustParseAddrPort("127.0.0.2:40002"), remote, "a new media address is followed")
}
