package server

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
	"github.com/baton-voice/baton/services/ingress/internal/trunks"
)

func TestNextHop(t *testing.T) {
	table, err := trunks.New([]config.Trunk{
		{Name: "carrier", Sources: []string{"203.0.113.0/24", "10.1.0.0/16"}},
		{Name: "other", Sources: []string{"198.51.100.0/24"}},
	})
	require.NoError(t, err)
	carrier := table.Lookup(netip.MustParseAddr("203.0.113.5"))
	dialog := func(target string, routes ...string) *batonv1.Dialog {
		return &batonv1.Dialog{RemoteAddress: "203.0.113.5:5060", RemoteTarget: target, RouteSet: routes,
			Transport: batonv1.Transport_TRANSPORT_UDP}
	}
	for _, tc := range []struct {
		name      string
		d         *batonv1.Dialog
		hop       string
		transport batonv1.Transport
		signalled bool
	}{
		{"contact at the source", dialog("<sip:a@203.0.113.5:5070>"), "203.0.113.5:5070", batonv1.Transport_TRANSPORT_UDP, true},
		{"contact elsewhere in the trunk", dialog("sip:a@203.0.113.9"), "203.0.113.9:5060", batonv1.Transport_TRANSPORT_UDP, true},
		{"private range the trunk lists", dialog("sip:a@10.1.2.3:5080;transport=tcp"), "10.1.2.3:5080", batonv1.Transport_TRANSPORT_TCP, true},
		{"first route wins over contact", dialog("sip:a@203.0.113.9", "<sip:203.0.113.7;lr>"), "203.0.113.7:5060", batonv1.Transport_TRANSPORT_UDP, true},
		{"sips route is TLS on 5061", dialog("sip:a@203.0.113.9", "<sips:203.0.113.7;lr>"), "203.0.113.7:5061", batonv1.Transport_TRANSPORT_TLS, true},
		{"loopback contact", dialog("sip:a@127.0.0.1:6000"), "203.0.113.5:5060", batonv1.Transport_TRANSPORT_UDP, false},
		{"link-local contact", dialog("sip:a@169.254.169.254:80"), "203.0.113.5:5060", batonv1.Transport_TRANSPORT_UDP, false},
		{"private range no trunk lists", dialog("sip:a@10.2.0.1"), "203.0.113.5:5060", batonv1.Transport_TRANSPORT_UDP, false},
		{"another trunk's range", dialog("sip:a@198.51.100.1"), "203.0.113.5:5060", batonv1.Transport_TRANSPORT_UDP, false},
		{"host name", dialog("sip:a@sbc.example.com"), "203.0.113.5:5060", batonv1.Transport_TRANSPORT_UDP, false},
		{"host name route", dialog("sip:a@203.0.113.9", "<sip:evil.example;lr;transport=tcp>"), "203.0.113.5:5060", batonv1.Transport_TRANSPORT_UDP, false},
		{"unknown transport", dialog("sip:a@203.0.113.9;transport=sctp"), "203.0.113.5:5060", batonv1.Transport_TRANSPORT_UDP, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hop, transport, signalled := nextHop(tc.d, table, carrier)
			require.Equal(t, tc.hop, hop)
			require.Equal(t, tc.transport, transport)
			require.Equal(t, tc.signalled, signalled)
		})
	}

	// A config without trunks (loopback only) allows every source; its
	// catch-all range vouches for no destination but the source itself.
	open, err := trunks.New(config.Config{Trunk: "default"}.EffectiveTrunks())
	require.NoError(t, err)
	all := open.Lookup(netip.MustParseAddr("203.0.113.5"))
	hop, _, signalled := nextHop(dialog("sip:a@192.0.2.1"), open, all)
	require.Equal(t, "203.0.113.5:5060", hop)
	require.False(t, signalled)
}

// TestByeGoesToTheSourceNotTheContact: a caller at 127.0.0.2 whose
// Contact names a socket at 127.0.0.1 that never spoke to ingress. The
// BYE that ends the call (here for a missing ACK) goes to the INVITE's
// source; before, it went to the Contact's socket.
func TestByeGoesToTheSourceNotTheContact(t *testing.T) {
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "sbc", Sources: []string{"127.0.0.2"}}}
	}, withT1(20*time.Millisecond))
	consumer := newCalls(t, brokers, topics.Calls)

	victim, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = victim.Close() })
	sbcConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	require.NoError(t, err)
	sbc := &rawSBC{conn: sbcConn, port: sbcConn.LocalAddr().(*net.UDPAddr).Port, buf: make([]byte, 65535)}
	t.Cleanup(func() { _ = sbcConn.Close() })

	victimPort := victim.LocalAddr().(*net.UDPAddr).Port
	invite := fmt.Appendf(nil, "INVITE sip:+15550200@127.0.0.1:%d SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP 127.0.0.2:%d;branch=z9hG4bK-contact\r\n"+
		"From: <sip:+15550100@127.0.0.2>;tag=raw\r\nTo: <sip:+15550200@127.0.0.1>\r\n"+
		"Call-ID: contact-elsewhere\r\nCSeq: 1 INVITE\r\n"+
		"Contact: <sip:evil@127.0.0.1:%d>\r\nMax-Forwards: 70\r\n"+
		"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
		in.port, sbc.port, victimPort, len(offer), offer)
	sbc.send(t, in.srv.Addr(), invite)
	require.Equal(t, sip.StatusOK, finalOrProbe(t, sbc).StatusCode)

	e := consumer.next(t)
	require.Equal(t, events.TypeCallStarted, e.Type)
	started := e.Data.(*batonv1.CallStarted)
	require.Equal(t, fmt.Sprintf("127.0.0.2:%d", sbc.port), started.GetDialog().GetNextHop())
	require.EqualValues(t, 1, in.srv.Stats().NextHopToSource.Load())

	bye, _ := sbc.awaitBye(t, 10*time.Second)
	require.NotNil(t, bye, "the BYE reached the caller's source")
	require.Equal(t, fmt.Sprintf("sip:evil@127.0.0.1:%d", victimPort), bye.Recipient.String(), "the Request-URI is still the Contact")
	require.NoError(t, victim.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	n, _, err := victim.ReadFromUDP(make([]byte, 2048))
	require.Error(t, err, "the Contact's socket received %d bytes", n)
}
