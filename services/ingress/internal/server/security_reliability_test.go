//go:build reliability

package server

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/pkg/reliabilitytest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
)

// drain counts what reaches conn until quiet passes with nothing, and
// hands each SIP message to seen.
func drain(conn *net.UDPConn, quiet time.Duration, seen func([]byte)) (datagrams, bytes int) {
	buf := make([]byte, 65535)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(quiet))
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			return datagrams, bytes
		}
		datagrams++
		bytes += n
		if seen != nil {
			seen(buf[:n])
		}
	}
}

// TestReliabilitySecurityUnackedAmplification: a forger sends INVITEs with
// a victim's address (here: a socket that never ACKs) and ingress answers
// them. Before, each INVITE was answered and its 200 retransmitted for
// 64*T1, then BYEd; now a source that never completed a handshake holds
// at most max_unacked_unverified calls, and the rest get one 503.
func TestReliabilitySecurityUnackedAmplification(t *testing.T) {
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	const t1 = 100 * time.Millisecond
	in := startIngress(t, brokers, nil, withT1(t1))
	maxUnverified := in.cfg.Limits.MaxUnackedUnverified
	victim := newRawSBC(t)
	const invites = 200
	statuses := map[int]int{}
	okBytes := map[string]int{} // reflected bytes per answered Call-ID
	kinds := map[string]int{}   // what the victim received, by method or status
	var byes, datagrams, bytes int
	drained := make(chan struct{})
	go func() { // read while sending: a full socket buffer would hide datagrams
		defer close(drained)
		datagrams, bytes = drain(victim.conn, 64*t1+3*time.Second, func(b []byte) {
			m, err := sip.NewParser().ParseSIP(b)
			if err != nil {
				kinds["unparsed"]++
				return
			}
			switch m := m.(type) {
			case *sip.Response:
				kinds[strconv.Itoa(m.StatusCode)]++
				if m.StatusCode >= 200 && m.CSeq().MethodName == sip.INVITE {
					statuses[m.StatusCode]++
				}
				if m.StatusCode == sip.StatusOK {
					okBytes[m.CallID().Value()] += len(b)
				}
			case *sip.Request:
				kinds[string(m.Method)]++
				if m.Method == sip.BYE {
					byes++
					okBytes[m.CallID().Value()] += len(b)
				}
			}
		})
	}()
	sentBytes := 0
	for i := range invites {
		id := "forged-" + strconv.Itoa(i)
		msg := rawRequest(sip.INVITE, in.port, victim.port, id, "z9hG4bK-"+id, "", offer, 1)
		sentBytes += len(msg)
		victim.send(t, in.srv.Addr(), msg)
		time.Sleep(5 * time.Millisecond) // 200 INVITEs/s
	}
	<-drained
	answered := len(okBytes)
	require.LessOrEqual(t, answered, maxUnverified, "calls answered to a source that never ACKed")
	require.Positive(t, answered)
	require.EqualValues(t, invites-answered, in.srv.Stats().UnackedSource.Load(), "each refusal counted")
	perAnswered := 0
	for _, b := range okBytes {
		perAnswered = max(perAnswered, b)
	}
	ratio := float64(bytes) / float64(sentBytes)
	// A refused INVITE gets one stateless 503, never retransmitted.
	require.Equal(t, invites-answered, statuses[sip.StatusServiceUnavailable], "503s received for %d refused INVITEs", invites-answered)
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 9, Test: t.Name(),
		Load:   fmt.Sprintf("%d INVITEs at 200/s from one UDP source that never ACKs (%d bytes sent); T1 %v", invites, sentBytes, t1),
		Faults: "finding 1: a forged source address (the victim never completes a handshake)",
		Inputs: fmt.Sprintf("limits.max_unacked_unverified %d (default)", maxUnverified),
		Lost: fmt.Sprintf("answered %d, refused 503 %d (counted %d, each sent once, statelessly); the victim received %d datagrams (%v), %d bytes (%.2f bytes per byte sent) including %d BYEs; "+
			"one answered call reflects up to %d bytes (200 OK retransmitted for 64*T1, then a BYE retransmitted for 32 s), so before the cap the %d INVITEs would have reflected about %d bytes (%.1fx)",
			answered, statuses[sip.StatusServiceUnavailable], in.srv.Stats().UnackedSource.Load(), datagrams, kinds, bytes, ratio, byes,
			perAnswered, invites, invites*perAnswered, float64(invites*perAnswered)/float64(sentBytes)),
	})
}

// TestReliabilitySecuritySilentConnections: 300 silent TCP connections
// from a source no trunk lists and 300 from a trunk's address. Before,
// all 600 stayed open (a goroutine each); now strangers are closed at
// accept and the trunk's are capped and closed after the first-read
// timeout.
func TestReliabilitySecuritySilentConnections(t *testing.T) {
	in := startIngress(t, []string{"127.0.0.1:1"}, func(c *config.Config) {
		c.Listeners = []config.Listener{{Transport: config.TCP, Address: "127.0.0.1:0"}}
		c.Trunks = []config.Trunk{{Name: "sbc", Sources: []string{"127.0.0.2"}}}
		c.Limits.Connections.FirstReadTimeout = time.Second
	})
	addr := in.srv.Addrs()[0].String()
	runtime.GC()
	before := runtime.NumGoroutine()
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	dialAll := func(src string, n int) (dialed int) {
		for range n {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				continue
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			dialed++
		}
		return dialed
	}
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	strangers := dialAll("127.0.0.1", 300)
	trunk := dialAll("127.0.0.2", 300)
	time.Sleep(200 * time.Millisecond)
	peak := runtime.NumGoroutine()
	openAtPeak := in.srv.Counters()["connections_open"]
	time.Sleep(2 * time.Second) // past limits.connections.first_read_timeout
	open := func() int {
		n := 0
		for _, c := range conns {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			_, err := c.Read(make([]byte, 1))
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				n++
			}
		}
		return n
	}
	stillOpen := open()
	after := runtime.NumGoroutine()
	m := in.srv.Counters()
	require.Zero(t, stillOpen, "connections open after the first-read timeout")
	require.EqualValues(t, strangers, m["connections_refused_acl"])
	require.LessOrEqual(t, openAtPeak, uint64(in.cfg.Limits.Connections.MaxConnectionsPerSource))
	require.Less(t, peak, before+in.cfg.Limits.Connections.MaxConnectionsPerSource+50, "goroutines at the peak")
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 9, Test: t.Name(),
		Load:   fmt.Sprintf("%d TCP connections from a source no trunk lists, %d from the trunk's address, none sending a byte", strangers, trunk),
		Faults: "finding 4: idle connections (slowloris on SIP over TCP)",
		Inputs: fmt.Sprintf("limits.connections.max_connections_per_source %d, first_read_timeout %v", in.cfg.Limits.Connections.MaxConnectionsPerSource, in.cfg.Limits.Connections.FirstReadTimeout),
		Lost: fmt.Sprintf("strangers closed at accept %d (0 bytes read, ACL drops by the read filter %d); trunk connections over the per-source cap refused %d; open at the peak %d, after %v %d; "+
			"closed for silence %d; goroutines %d before, %d at the peak, %d after (before the fix: 600 connections and a goroutine each held until the peer left)",
			m["connections_refused_acl"], in.srv.Stats().ACLDropped.Load(), m["connections_refused_source"], openAtPeak, 2*time.Second, stillOpen,
			m["connections_timed_out"], before, peak, after),
	})
}

// TestReliabilitySecurityContactElsewhere: calls whose Contact names a
// socket that never spoke to ingress (another host's service, here one on
// loopback). Before, ingress's BYE went there; now in-dialog requests go
// to the INVITE's source.
func TestReliabilitySecurityContactElsewhere(t *testing.T) {
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "sbc", Sources: []string{"127.0.0.2"}}}
		// This SBC never ACKs: let all its calls be answered.
		c.Limits.MaxUnackedUnverified, c.Limits.MaxUnackedPerSource = 50, 50
	}, withT1(20*time.Millisecond))
	victim, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = victim.Close() })
	sbcConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sbcConn.Close() })
	sbcPort := sbcConn.LocalAddr().(*net.UDPAddr).Port
	victimPort := victim.LocalAddr().(*net.UDPAddr).Port
	contacts := []string{
		fmt.Sprintf("<sip:evil@127.0.0.1:%d>", victimPort),
		fmt.Sprintf("<sip:evil@127.0.0.1:%d;transport=tcp>", victimPort),
		"<sip:evil@169.254.169.254:80>",
		"<sip:evil@metadata.internal:5060>",
		"<sip:evil@10.9.9.9>",
	}
	const perKind = 4
	for k, contact := range contacts {
		for i := range perKind {
			id := fmt.Sprintf("contact-%d-%d", k, i)
			invite := fmt.Appendf(nil, "INVITE sip:+15550200@127.0.0.1:%d SIP/2.0\r\n"+
				"Via: SIP/2.0/UDP 127.0.0.2:%d;branch=z9hG4bK-%s\r\n"+
				"From: <sip:+15550100@127.0.0.2>;tag=raw\r\nTo: <sip:+15550200@127.0.0.1>\r\n"+
				"Call-ID: %s\r\nCSeq: 1 INVITE\r\nContact: %s\r\nMax-Forwards: 70\r\n"+
				"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s",
				in.port, sbcPort, id, id, contact, len(offer), offer)
			_, err := sbcConn.WriteToUDP(invite, in.srv.Addr())
			require.NoError(t, err)
		}
	}
	calls := len(contacts) * perKind
	byes := map[string]bool{}
	drain(sbcConn, 64*20*time.Millisecond+2*time.Second, func(b []byte) {
		m, err := sip.NewParser().ParseSIP(b)
		if err != nil {
			return
		}
		if req, ok := m.(*sip.Request); ok && req.Method == sip.BYE {
			byes[req.CallID().Value()] = true
			res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
			_, _ = sbcConn.WriteToUDP([]byte(res.String()), in.srv.Addr())
		}
	})
	victimDatagrams, _ := drain(victim, 200*time.Millisecond, nil)
	require.Len(t, byes, calls, "every call's BYE reached the INVITE's source")
	require.Zero(t, victimDatagrams)
	require.EqualValues(t, calls, in.srv.Stats().NextHopToSource.Load())
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 9, Test: t.Name(),
		Load:   fmt.Sprintf("%d calls from a trunk at 127.0.0.2, ended by ingress (no ACK, 64*T1 = 1.28 s)", calls),
		Faults: "finding 3: the caller's Contact names where ingress sends its BYE",
		Inputs: "Contact at another socket on 127.0.0.1 (UDP and TCP), 169.254.169.254, a host name, 10.9.9.9 (no trunk lists them)",
		Lost: fmt.Sprintf("datagrams at the named socket %d (before: every BYE); BYEs at the INVITE's source %d of %d; counted baton_ingress_next_hop_to_source_total %d; DNS lookups of the host name 0 (names are never resolved)",
			victimDatagrams, len(byes), calls, in.srv.Stats().NextHopToSource.Load()),
	})
}

// TestReliabilitySecurityMediaTakeover: a stranger who can reach a call's
// RTP port (here from 127.0.0.3, which neither the SDP nor the trunk
// names) floods it with audio and forged RFC 4733 digits while the caller
// talks. Before, ingress latched to whoever sent first and published the
// forged digits; now every stranger's packet is dropped and counted.
func TestReliabilitySecurityMediaTakeover(t *testing.T) {
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "sbc", Sources: []string{"127.0.0.1"}}}
		c.Media.Silence = 2 * time.Second // ingress talks back: to whom?
	})
	consumer := newCalls(t, brokers, topics.Calls)
	c := dial(t, in, "takeover", "0 101")
	require.Equal(t, events.TypeCallStarted, consumer.next(t).Type)
	attacker, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 3)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = attacker.Close() })
	dst := c.ingressRTP()
	digit := func(end bool) []byte {
		p := []byte{9, 10, 0, 160}
		if end {
			p[1] |= 0x80
		}
		return p
	}
	const genuine, forgedAudio, forgedDigits = 100, 500, 50
	var heard int
	listened := make(chan struct{})
	go func() {
		defer close(listened)
		heard, _ = drain(attacker, 500*time.Millisecond, nil)
	}()
	for i := range forgedAudio {
		_, err := attacker.WriteToUDP(rtpPacket(0, uint16(1000+i), uint32(i)*160, make([]byte, 160)), dst)
		require.NoError(t, err)
		if i < genuine {
			_, err = c.rtp.WriteToUDP(rtpPacket(0, uint16(i+1), uint32(i+1)*160, make([]byte, 160)), dst)
			require.NoError(t, err)
		}
		if i < forgedDigits {
			_, err = attacker.WriteToUDP(rtpPacket(101, uint16(5000+i), 99999, digit(i%5 >= 2)), dst)
			require.NoError(t, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	<-listened
	require.Equal(t, sip.StatusOK, c.inDialog(sip.BYE, "", "").StatusCode)
	var digits int
	var ended *batonv1.CallEnded
	for ended == nil {
		e := consumer.next(t)
		switch e.Type {
		case events.TypeDtmfReceived:
			digits++
		case events.TypeCallEnded:
			ended = e.Data.(*batonv1.CallEnded)
		}
	}
	foreign := in.srv.Stats().ForeignRTP.Load()
	require.Zero(t, digits, "forged digits published")
	require.EqualValues(t, genuine, ended.GetMedia().GetPackets(), "the caller's packets counted")
	require.EqualValues(t, forgedAudio+forgedDigits, foreign)
	require.Zero(t, heard, "datagrams ingress sent the stranger")
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 9, Test: t.Name(),
		Load:   fmt.Sprintf("1 call over UDP, the caller sending %d RTP packets from its SDP address, ingress playing 2 s of silence back", genuine),
		Faults: "finding 2: a stranger (127.0.0.3; neither the SDP nor the trunk names it) sends to the call's RTP port first and throughout",
		Inputs: fmt.Sprintf("%d PCMU packets and %d RFC 4733 packets of digit 9 (5 digits' worth)", forgedAudio, forgedDigits),
		Lost: fmt.Sprintf("stranger's packets dropped and counted %d of %d; forged digits published %d; caller's packets counted %d of %d; datagrams sent to the stranger %d (before: the first sender was latched, heard the call and its digits were published)",
			foreign, forgedAudio+forgedDigits, digits, ended.GetMedia().GetPackets(), genuine, heard),
	})
}

// TestReliabilitySecurityEdgeContract: INVITEs whose Call-ID the event
// contract cannot carry, and numbers that decode to terminal control
// sequences. Before, a 1,100-byte Call-ID was answered 200 but every
// consumer rejected its records, and an ESC sequence reached CallStarted
// and `baton replay`'s terminal.
func TestReliabilitySecurityEdgeContract(t *testing.T) {
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, nil)
	consumer := newCalls(t, brokers, topics.Calls)
	sbc := newRawSBC(t)
	statuses := map[int]int{}
	// send sends an INVITE and counts its final answer; none within 2 s
	// counts as 0 (the gate drops what it cannot answer safely).
	send := func(msg []byte) {
		_, rest, _ := bytes.Cut(msg, []byte("Call-ID: "))
		idBytes, _, _ := bytes.Cut(rest, []byte("\r\n"))
		id := string(idBytes)
		deadline := time.Now().Add(2 * time.Second)
		sbc.send(t, in.srv.Addr(), msg)
		for time.Now().Before(deadline) {
			res := sbc.read(t, time.Until(deadline))
			if res == nil {
				break
			}
			if res.StatusCode >= 200 && res.CallID().Value() == id {
				statuses[res.StatusCode]++
				return
			}
		}
		statuses[0]++
	}
	lengths := []int{events.MaxSubjectLen + 1, 1100, 4000, 8000}
	for i, n := range lengths {
		id := fmt.Sprintf("%d-%s", i, strings.Repeat("L", n-2))
		send(rawRequest(sip.INVITE, in.port, sbc.port, id, "z9hG4bK-long-"+strconv.Itoa(i), "", offer, 1))
	}
	controls := []string{"%1b%5b2J%1b%5d0%3bowned%07", "%00", "%7f", "%1b", "%0d%0aX-Evil:%201", "%c2%9b2J", "%e2%80%ae"}
	for i, c := range controls {
		msg := rawRequest(sip.INVITE, in.port, sbc.port, "ctl-"+strconv.Itoa(i), "z9hG4bK-ctl-"+strconv.Itoa(i), "", offer, 1)
		msg = bytes.Replace(msg, []byte("From: <sip:+15550100@127.0.0.1>"), []byte("From: <sip:"+c+"@127.0.0.1>"), 1)
		msg = bytes.Replace(msg, []byte("To: <sip:+15550200@127.0.0.1>"), []byte("To: <sip:+1555"+c+"@127.0.0.1>"), 1)
		send(msg)
	}
	// Raw control bytes behind a backslash (a quoted-pair outside quotes).
	raw := rawRequest(sip.INVITE, in.port, sbc.port, "quoted-pair", "z9hG4bK-qp", "", offer, 1)
	send(bytes.Replace(raw, []byte("To: <sip:+15550200@127.0.0.1>"), []byte("To: <sip:\\\x1b%5b2J\\\a@127.0.0.1>"), 1))

	// Every record on the calls topic, until a sentinel's CallStarted.
	records := untilSentinel(t, in, consumer)
	var tooLong, withControls, started int
	for _, e := range records {
		if len(e.Subject) > events.MaxSubjectLen {
			tooLong++
		}
		if s, ok := e.Data.(*batonv1.CallStarted); ok {
			started++
			for _, v := range []string{s.GetCallerNumber(), s.GetCallerNumberRaw(), s.GetCalleeNumber(), s.GetCalleeNumberRaw()} {
				if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || (r >= 0x7f && r < 0xa0) || r == 0x202e }) {
					withControls++
				}
			}
		}
	}
	require.Zero(t, tooLong)
	require.Zero(t, withControls)
	require.Equal(t, len(lengths), statuses[sip.StatusBadRequest], "each long Call-ID refused 400: %v", statuses)
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 9, Test: t.Name(),
		Load:   fmt.Sprintf("%d INVITEs over UDP, then a sentinel call", len(lengths)+len(controls)+1),
		Faults: "findings 9 and 10: Call-IDs the event contract cannot carry; numbers that decode to terminal control sequences",
		Inputs: fmt.Sprintf("Call-IDs of %v bytes (limit %d); From/To users %v percent-encoded, and a raw ESC/BEL behind backslashes", lengths, events.MaxSubjectLen, controls),
		Lost: fmt.Sprintf("final answers by status (0: none) %v; %d records read before the sentinel (%d CallStarted): subjects over the limit 0, numbers holding control characters 0; numbers refused after decoding %d (baton_ingress_numbers_refused_total); "+
			"before: the 1,100-byte Call-ID was a call no consumer could read, and ESC sequences were published and printed",
			statuses, len(records), started, in.srv.Stats().RefusedNumbers.Load()),
	})
}
