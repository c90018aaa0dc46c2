package bridge

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/services/transfer/internal/sdp"
)

// rtcpPeer is a peer's RTCP socket, optionally SRTCP.
type rtcpPeer struct {
	conn     *net.UDPConn
	enc, dec *srtp.Context
}

func newRTCPPeer(t *testing.T) *rtcpPeer {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return &rtcpPeer{conn: conn}
}

func (p *rtcpPeer) addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// next reads compound packets until one holds a report that ok accepts.
func (p *rtcpPeer) next(t *testing.T, ok func(rtcp.Packet) bool) []rtcp.Packet {
	t.Helper()
	buf := make([]byte, 1500)
	deadline := time.Now().Add(3 * time.Second)
	for {
		require.NoError(t, p.conn.SetReadDeadline(deadline))
		n, _, err := p.conn.ReadFromUDPAddrPort(buf)
		require.NoError(t, err, "no matching RTCP report")
		b := buf[:n]
		if p.dec != nil {
			b, err = p.dec.DecryptRTCP(nil, b, nil)
			require.NoError(t, err, "SRTCP under Baton's key")
		}
		pkts, err := rtcp.Unmarshal(b)
		require.NoError(t, err)
		if ok(pkts[0]) {
			return pkts
		}
	}
}

func (p *rtcpPeer) send(t *testing.T, to int, pkts ...rtcp.Packet) {
	t.Helper()
	b, err := rtcp.Marshal(pkts)
	require.NoError(t, err)
	if p.enc != nil {
		b, err = p.enc.EncryptRTCP(nil, b, nil)
		require.NoError(t, err)
	}
	_, err = p.conn.WriteToUDPAddrPort(b, netip.AddrPortFrom(loopback, uint16(to)))
	require.NoError(t, err)
}

// TestRTCPReportsPerLeg: each leg gets sender reports about the stream the
// bridge sends it (its SSRC, counts) with a reception block about what it
// sent, LSR/DLSR follow the peer's SR, the peer's reports give the RTT,
// and no report crosses to the other leg.
func TestRTCPReportsPerLeg(t *testing.T) {
	for _, suite := range []string{"", "AES_CM_128_HMAC_SHA1_80"} {
		t.Run("srtp="+suite, func(t *testing.T) {
			b, err := New(&Ports{Host: loopback, RTCPInterval: 40 * time.Millisecond})
			require.NoError(t, err)
			defer b.Close()
			for _, s := range []Side{Caller, Destination} {
				require.Equal(t, b.Leg(s).Port()+1, b.Leg(s).RTCPPort(), "RTCP on RTP + 1")
				require.Zero(t, b.Leg(s).Port()%2, "RTP on an even port")
			}
			caller, dest := newPeer(t), newPeer(t)
			callerRTCP, destRTCP := newRTCPPeer(t), newRTCPPeer(t)
			keys := Keys{}
			if suite != "" {
				baton, theirs, profile := srtpKeys(t, suite)
				var err error
				for _, c := range []struct {
					ctx **srtp.Context
					key sdp.Crypto
				}{{&dest.enc, theirs}, {&dest.dec, baton}, {&destRTCP.enc, theirs}, {&destRTCP.dec, baton}} {
					*c.ctx, err = contextOf(c.key, profile)
					require.NoError(t, err)
				}
				keys = Keys{Local: baton, Remote: theirs}
			}
			require.NoError(t, b.Leg(Caller).SetRemote(caller.addr(), 8000, Keys{}))
			require.NoError(t, b.Leg(Destination).SetRemote(dest.addr(), 8000, keys))
			b.Leg(Caller).SetRTCP(callerRTCP.addr())
			b.Leg(Destination).SetRTCP(destRTCP.addr())
			b.Activate()

			var toDest uint32
			for i := range 10 {
				caller.send(t, b.Leg(Caller).Port(), 0xAAAA, uint16(500+i), uint32(160*i), make([]byte, 160))
				p, _ := dest.recv(t)
				toDest = p.SSRC
			}
			for i := range 5 {
				dest.send(t, b.Leg(Destination).Port(), 0xBBBB, uint16(100+i), uint32(160*i), make([]byte, 160))
				caller.recv(t)
			}

			// The destination's report: about the stream it received from
			// the bridge and the one it sent.
			pkts := destRTCP.next(t, func(p rtcp.Packet) bool {
				sr, ok := p.(*rtcp.SenderReport)
				return ok && sr.PacketCount == 10 && len(sr.Reports) == 1 && sr.Reports[0].LastSequenceNumber == 104
			})
			sr := pkts[0].(*rtcp.SenderReport)
			require.Equal(t, toDest, sr.SSRC, "the SSRC of the stream the bridge sends it")
			require.Equal(t, uint32(10*160), sr.OctetCount)
			require.Equal(t, uint32(0xBBBB), sr.Reports[0].SSRC)
			require.Zero(t, sr.Reports[0].TotalLost)
			require.Zero(t, sr.Reports[0].LastSenderReport, "no SR from the destination yet")
			require.Len(t, pkts, 2)
			sdes, ok := pkts[1].(*rtcp.SourceDescription)
			require.True(t, ok, "SDES CNAME in every compound packet")
			require.Equal(t, rtcp.SDESCNAME, sdes.Chunks[0].Items[0].Type)

			// The destination reports back: its SR, and a block about the
			// bridge's stream.
			mySR := &rtcp.SenderReport{SSRC: 0xBBBB, NTPTime: ntp(time.Now()), PacketCount: 5, OctetCount: 800,
				Reports: []rtcp.ReceptionReport{{SSRC: toDest, LastSequenceNumber: 1, LastSenderReport: uint32(sr.NTPTime >> 16), Delay: 0}}}
			destRTCP.send(t, b.Leg(Destination).RTCPPort(), mySR)
			require.Eventually(t, func() bool { return b.Leg(Destination).RTT() > 0 }, 3*time.Second, time.Millisecond)
			require.Less(t, b.Leg(Destination).RTT(), time.Second)
			next := destRTCP.next(t, func(p rtcp.Packet) bool {
				sr, ok := p.(*rtcp.SenderReport)
				return ok && len(sr.Reports) == 1 && sr.Reports[0].LastSenderReport != 0
			})
			require.Equal(t, uint32(mySR.NTPTime>>16), next[0].(*rtcp.SenderReport).Reports[0].LastSenderReport, "LSR of its SR")

			// The caller's reports are about its own session only.
			var toCaller uint32
			callerPkts := callerRTCP.next(t, func(p rtcp.Packet) bool {
				sr, ok := p.(*rtcp.SenderReport)
				return ok && sr.PacketCount == 5 && len(sr.Reports) == 1 && sr.Reports[0].LastSequenceNumber == 509
			})
			toCaller = callerPkts[0].(*rtcp.SenderReport).SSRC
			require.NotEqual(t, uint32(0xBBBB), toCaller, "the destination's report did not cross")
			require.Equal(t, uint32(0xAAAA), callerPkts[0].(*rtcp.SenderReport).Reports[0].SSRC)
			require.Zero(t, callerPkts[0].(*rtcp.SenderReport).Reports[0].LastSenderReport, "the destination's SR is not the caller's")
			sent, received := b.Leg(Destination).RTCPCounts()
			require.Positive(t, sent)
			require.Equal(t, uint64(1), received)
		})
	}
}
