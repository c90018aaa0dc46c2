package bridge

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-voice/baton/services/transfer/internal/sdp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var loopback = netip.MustParseAddr("127.0.0.1")

// peer is a media endpoint on loopback, optionally speaking SRTP.
type peer struct {
	conn     *net.UDPConn
	enc, dec *srtp.Context
}

func newPeer(t *testing.T) *peer {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return &peer{conn: conn}
}

func (p *peer) addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (p *peer) send(t *testing.T, to int, ssrc uint32, seq uint16, ts uint32, payload []byte) {
	t.Helper()
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc}, Payload: payload}
	b, err := pkt.Marshal()
	require.NoError(t, err)
	if p.enc != nil {
		b, err = p.enc.EncryptRTP(nil, b, nil)
		require.NoError(t, err)
	}
	_, err = p.conn.WriteToUDPAddrPort(b, netip.AddrPortFrom(loopback, uint16(to)))
	require.NoError(t, err)
}

func (p *peer) recv(t *testing.T) (*rtp.Packet, netip.AddrPort) {
	t.Helper()
	require.NoError(t, p.conn.SetReadDeadline(time.Now().Add(2*time.Second)))
	buf := make([]byte, 1500)
	n, from, err := p.conn.ReadFromUDPAddrPort(buf)
	require.NoError(t, err, "no packet crossed the bridge")
	b := buf[:n]
	if p.dec != nil {
		b, err = p.dec.DecryptRTP(nil, b, nil)
		require.NoError(t, err)
	}
	var pkt rtp.Packet
	require.NoError(t, pkt.Unmarshal(b))
	return &pkt, from
}

// srtpKeys makes an SRTP leg's SDES keys: baton's (it encrypts what the
// bridge sends the leg) and theirs (what the peer sends), and the suite's
// profile.
func srtpKeys(t *testing.T, suite string) (baton, theirs sdp.Crypto, profile srtp.ProtectionProfile) {
	t.Helper()
	baton, err := sdp.NewCrypto(1, suite)
	require.NoError(t, err)
	theirs, err = sdp.NewCrypto(1, suite)
	require.NoError(t, err)
	profile, err = profileOf(suite)
	require.NoError(t, err)
	return baton, theirs, profile
}

// srtpDestinationBridge is an active bridge between a plain caller peer
// and an SRTP destination peer, which encrypts with its key and decrypts
// with Baton's.
func srtpDestinationBridge(t *testing.T, suite string) (b *Bridge, caller, dest *peer) {
	t.Helper()
	b, err := New(&Ports{Host: loopback})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	caller, dest = newPeer(t), newPeer(t)
	baton, theirs, profile := srtpKeys(t, suite)
	dest.enc, err = contextOf(theirs, profile)
	require.NoError(t, err)
	dest.dec, err = contextOf(baton, profile)
	require.NoError(t, err)
	require.NoError(t, b.Leg(Caller).SetRemote(caller.addr(), 8000, Keys{}))
	require.NoError(t, b.Leg(Destination).SetRemote(dest.addr(), 8000, Keys{Local: baton, Remote: theirs}))
	b.Activate()
	return b, caller, dest
}

func TestBridgeKeepsTheStreamContinuousAcrossASourceSwitch(t *testing.T) {
	b, err := New(&Ports{Host: loopback})
	require.NoError(t, err)
	defer b.Close()
	caller, dest := newPeer(t), newPeer(t)
	callerPort, destPort := b.Leg(Caller).Port(), b.Leg(Destination).Port()
	// The SDP addresses are wrong on purpose: the legs latch to where the
	// packets come from.
	wrong := netip.MustParseAddrPort("127.0.0.1:9")
	require.NoError(t, b.Leg(Caller).SetRemote(wrong, 8000, Keys{}))
	require.NoError(t, b.Leg(Destination).SetRemote(wrong, 8000, Keys{}))

	// Before activation: received, latched, dropped.
	dest.send(t, destPort, 7, 100, 1000, []byte("early"))
	require.Eventually(t, func() bool { return b.Stats().GetDestinationToCaller().GetDropped() == 1 }, 2*time.Second, time.Millisecond)
	b.Activate()

	var out []*rtp.Packet
	for i := range 5 {
		caller.send(t, callerPort, 0xA, uint16(65533+i), uint32(160*i), []byte{byte(i)}) // wraps
		p, from := dest.recv(t)
		require.Equal(t, netip.AddrPortFrom(loopback, uint16(destPort)), from, "sent from the destination leg's socket")
		out = append(out, p)
	}
	// A new source: another SSRC, unrelated numbers, a gap of one packet.
	caller.send(t, callerPort, 0xB, 40, 90000, []byte{9})
	caller.send(t, callerPort, 0xB, 42, 90320, []byte{10})
	for range 2 {
		p, _ := dest.recv(t)
		out = append(out, p)
	}
	ssrc := out[0].SSRC
	require.True(t, out[0].Marker, "the first packet of a stream is marked")
	for i := 1; i < len(out); i++ {
		require.Equal(t, ssrc, out[i].SSRC, "one SSRC for the whole stream")
	}
	for i := 1; i < 6; i++ {
		require.Equal(t, out[i-1].SequenceNumber+1, out[i].SequenceNumber, "packet %d continues the sequence", i)
	}
	require.Equal(t, out[5].SequenceNumber+2, out[6].SequenceNumber, "a gap in the source stays a gap")
	require.True(t, out[5].Marker, "the switch is marked")
	require.False(t, out[6].Marker)
	require.Equal(t, uint32(320), out[6].Timestamp-out[5].Timestamp, "timestamps keep the source's spacing")
	require.Positive(t, out[5].Timestamp-out[4].Timestamp, "timestamps move forward across the switch")
	require.Less(t, out[5].Timestamp-out[4].Timestamp, uint32(8000), "by about the time elapsed, not the source's jump")
	require.Equal(t, []byte{9}, out[5].Payload)

	// And back: the destination's packets reach the caller from the caller leg.
	dest.send(t, destPort, 7, 101, 1160, []byte("back"))
	p, from := caller.recv(t)
	require.Equal(t, netip.AddrPortFrom(loopback, uint16(callerPort)), from)
	require.Equal(t, []byte("back"), p.Payload)

	// A stranger cannot inject into a latched leg.
	stranger := newPeer(t)
	stranger.send(t, callerPort, 0xA, 1, 1, []byte("evil"))
	require.Eventually(t, func() bool { return b.Stats().GetCallerToDestination().GetDropped() == 1 }, 2*time.Second, time.Millisecond)

	st := b.Stats()
	require.Equal(t, uint64(7), st.GetCallerToDestination().GetPackets())
	require.Equal(t, uint64(1), st.GetCallerToDestination().GetLost(), "sequence 41 of the second source never came")
	require.Equal(t, uint64(2), st.GetDestinationToCaller().GetPackets())
	require.Equal(t, uint64(1), st.GetDestinationToCaller().GetDropped(), "the packet before activation")
	_, idle := b.Idle(time.Now(), time.Minute)
	require.False(t, idle)
	side, idle := b.Idle(time.Now().Add(2*time.Minute), time.Minute)
	require.True(t, idle)
	require.Equal(t, Caller, side)
}

func TestBridgeSRTPLeg(t *testing.T) {
	for _, suite := range []string{"AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"} {
		t.Run(suite, func(t *testing.T) {
			// SDES: each side's offer/answer carries the key it encrypts with.
			b, caller, dest := srtpDestinationBridge(t, suite)

			caller.send(t, b.Leg(Caller).Port(), 1, 10, 0, []byte("plain in"))
			p, _ := dest.recv(t) // decrypts with Baton's key or fails
			require.Equal(t, []byte("plain in"), p.Payload)
			dest.send(t, b.Leg(Destination).Port(), 2, 20, 0, []byte("secret in"))
			p, _ = caller.recv(t)
			require.Equal(t, []byte("secret in"), p.Payload, "decrypted for the plain leg")

			// A packet under the wrong key is dropped.
			wrongKey, _, profile := srtpKeys(t, suite)
			var err error
			dest.enc, err = contextOf(wrongKey, profile)
			require.NoError(t, err)
			dest.send(t, b.Leg(Destination).Port(), 2, 21, 160, []byte("forged"))
			require.Eventually(t, func() bool { return b.Stats().GetDestinationToCaller().GetDropped() == 1 }, 2*time.Second, time.Millisecond)
			require.Equal(t, suite, b.Stats().GetDestinationSrtp())
			require.Empty(t, b.Stats().GetCallerSrtp())
		})
	}
}

func TestPortRange(t *testing.T) {
	ports := &Ports{Host: loopback, Min: 41001, Max: 41004}
	b, err := New(ports)
	require.NoError(t, err)
	defer b.Close()
	got := []int{b.Leg(Caller).Port(), b.Leg(Destination).Port()}
	require.ElementsMatch(t, []int{41002, 41004}, got, "even ports in the range")
	_, err = New(ports)
	require.ErrorIs(t, err, ErrNoPort)
}

// TestBridgeDropsTamperedAndReplayedSRTP: a flipped payload byte, a
// flipped authentication tag byte and a replayed packet are all dropped
// and counted by cause; the genuine packets all cross, each once.
func TestBridgeDropsTamperedAndReplayedSRTP(t *testing.T) {
	for _, suite := range []string{"AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"} {
		t.Run(suite, func(t *testing.T) {
			b, caller, dest := srtpDestinationBridge(t, suite)
			enc := dest.enc

			to := netip.AddrPortFrom(loopback, uint16(b.Leg(Destination).Port()))
			var sent [][]byte
			for i := range 3 {
				pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(100 + i), Timestamp: uint32(160 * i), SSRC: 2},
					Payload: []byte{'g', byte(i), 0, 0}}
				plain, err := pkt.Marshal()
				require.NoError(t, err)
				wire, err := enc.EncryptRTP(nil, plain, nil)
				require.NoError(t, err)
				sent = append(sent, wire)
			}
			write := func(b []byte) {
				_, err := dest.conn.WriteToUDPAddrPort(b, to)
				require.NoError(t, err)
			}
			flip := func(b []byte, at int) []byte {
				c := append([]byte(nil), b...)
				c[at] ^= 0x01
				return c
			}
			write(sent[0])
			write(flip(sent[1], 12))             // a payload byte
			write(flip(sent[1], len(sent[1])-1)) // the tag's last byte
			write(sent[1])
			write(sent[0]) // a replay
			write(sent[2])
			write(sent[2]) // another
			for i := range 3 {
				p, _ := caller.recv(t)
				require.Equal(t, []byte{'g', byte(i), 0, 0}, p.Payload, "packet %d, once, in order", i)
			}
			require.Eventually(t, func() bool { return b.Stats().GetDestinationToCaller().GetDropped() == 4 }, 2*time.Second, time.Millisecond)
			require.Equal(t, Drops{Unauthentic: 2, Replayed: 2}, b.Leg(Destination).Drops())
			require.Equal(t, uint64(3), b.Stats().GetDestinationToCaller().GetPackets())
			require.NoError(t, caller.conn.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
			_, _, err := caller.conn.ReadFromUDPAddrPort(make([]byte, 1500))
			require.Error(t, err, "nothing else crossed")
		})
	}
}

// A peer that holds (sendonly or inactive: it does not receive) is sent
// nothing until it resumes (issue 19, 5); the other direction flows on.
func TestBridgeSendsNothingToAHeldPeer(t *testing.T) {
	b, err := New(&Ports{Host: loopback})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	caller, dest := newPeer(t), newPeer(t)
	require.NoError(t, b.Leg(Caller).SetRemote(caller.addr(), 8000, Keys{}))
	require.NoError(t, b.Leg(Destination).SetRemote(dest.addr(), 8000, Keys{}))
	b.Activate()
	callerPort, destPort := b.Leg(Caller).Port(), b.Leg(Destination).Port()

	caller.send(t, callerPort, 1, 1, 160, []byte{1})
	dest.recv(t)
	b.Leg(Destination).SetReceiving(false) // the destination holds
	for seq := uint16(2); seq < 7; seq++ {
		caller.send(t, callerPort, 1, seq, uint32(seq)*160, []byte{1})
	}
	dest.send(t, destPort, 2, 1, 160, []byte{2})
	got, _ := caller.recv(t)
	require.Equal(t, []byte{2}, got.Payload, "the held destination still sends to the caller")
	require.Eventually(t, func() bool { return b.Leg(Caller).Held() == 5 }, 2*time.Second, time.Millisecond)
	require.NoError(t, dest.conn.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	_, _, err = dest.conn.ReadFromUDPAddrPort(make([]byte, 1500))
	require.Error(t, err, "nothing reached the held destination")

	b.Leg(Destination).SetReceiving(true) // resume
	caller.send(t, callerPort, 1, 7, 7*160, []byte{3})
	got, _ = dest.recv(t)
	require.Equal(t, []byte{3}, got.Payload)
	require.Zero(t, b.Leg(Caller).Drops().Foreign)
}
