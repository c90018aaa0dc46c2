//go:build reliability

package uac

import (
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/connguard"
	"github.com/baton-voice/baton/pkg/logtest"
	"github.com/baton-voice/baton/pkg/reliabilitytest"
)

// bareSIP is transfer's SIP socket as it was before the guards: a sipgo
// v1.7.2 user agent serving UDP and TCP on raw sockets, its transport
// and transaction layers logging what sipgo logs by default (there
// through slog.Default; here into logs, so the bytes can be counted).
type bareSIP struct {
	ua     *sipgo.UserAgent
	udp    net.PacketConn
	tcp    net.Listener
	logs   *logtest.Buffer
	served sync.WaitGroup
}

func startBareSIP(t *testing.T) *bareSIP {
	t.Helper()
	b := &bareSIP{logs: &logtest.Buffer{}}
	logger := slog.New(slog.NewJSONHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(logger)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(logger),
			// sipgo's default handler, logging here instead of slog.Default.
			sip.WithTransactionLayerUnhandledResponseHandler(func(r *sip.Response) {
				logger.Info("TransactionLayer: Unhandled sip response. Possible retransmissions. Set UnhandledResponseHandler",
					"caller", "transactionLayer", "msg", r.Short())
			})),
	)
	require.NoError(t, err)
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(logger))
	require.NoError(t, err)
	b.ua = ua
	var lc net.ListenConfig
	b.udp, err = lc.ListenPacket(t.Context(), "udp", "127.0.0.1:0")
	require.NoError(t, err)
	b.tcp, err = lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b.served.Go(func() { _ = srv.ServeUDP(b.udp) })
	b.served.Go(func() { _ = srv.ServeTCP(b.tcp) })
	require.Eventually(t, func() bool { return b.pool() >= 1 }, 5*time.Second, time.Millisecond)
	return b
}

func (b *bareSIP) pool() int { return b.ua.TransportLayer().Pool("udp").Size() }

func (b *bareSIP) close() {
	_ = b.ua.Close()
	_ = b.udp.Close()
	_ = b.tcp.Close()
	b.served.Wait()
}

// TestReliabilitySecurityTransferSIPPorts is issue 14's items 4 and 5
// against transfer's SIP socket, measured in one run against the bare
// sipgo socket transfer had before and against uac.Listen with its
// defaults: a UDP flood of 10,000 datagrams from 10,000 source
// address:ports (garbage, stray responses, stray requests, each carrying a
// marker), then 300 silent TCP connections from 10 sources and 65 from one.
func TestReliabilitySecurityTransferSIPPorts(t *testing.T) {
	const addrs, perAddr = 50, 200 // 10,000 sources
	const silent, sources = 300, 10
	const holdFor = 8 * time.Second // the observation time
	const marker = "MARKER-4b7f"
	total := addrs * perAddr

	// Before: the bare socket.
	bare := startBareSIP(t)
	bareHeap := heapInUse()
	bareSent, _ := flood(t, bare.udp.LocalAddr().(*net.UDPAddr), addrs, perAddr, marker,
		func() uint64 { return uint64(max(bare.pool()-1, 0)) })
	require.Equal(t, uint64(total), bareSent[0]+bareSent[1]+bareSent[2])
	barePool := bare.pool()
	bareHeapGrowth := heapInUse() - bareHeap
	time.Sleep(200 * time.Millisecond) // the last records
	bareLogs := bare.logs.String()
	bareMarkers := strings.Count(bareLogs, marker)

	// Now: transfer's client with the default limits.
	logger, logs := infoLogger()
	c, err := Listen(t.Context(), "127.0.0.1:0", "127.0.0.1", logger, Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, c.Close()) }()
	poolBefore := c.Counters().UDPPoolEntries
	goroutinesBefore := runtime.NumGoroutine()
	heapBefore := heapInUse()
	start := time.Now()
	sent, distinct := flood(t, c.Addr(), addrs, perAddr, marker, handled(c))
	took := time.Since(start)
	require.Equal(t, total, distinct)
	cs := c.Counters()
	require.Equal(t, sent, [3]uint64{cs.UDPGarbage, cs.UDPStrayResponse, cs.UDPStrayRequest})
	require.Equal(t, uint64(total), cs.UDPDropped())
	require.Equal(t, poolBefore, cs.UDPPoolEntries)
	heapGrowth := heapInUse() - heapBefore
	require.Less(t, heapGrowth, int64(8<<20))
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= goroutinesBefore+2 }, 5*time.Second, 10*time.Millisecond)
	udpGoroutinesAfter := runtime.NumGoroutine()
	out := logs.String()
	require.NotContains(t, out, marker)
	logLines, logBytes := strings.Count(out, "\n"), len(out)
	require.LessOrEqual(t, logLines, logsPerSecond*(int(took/time.Second)+2))
	legit := answerOptions(t, c, newRawPeer(t)).StatusCode
	require.Equal(t, 200, legit)

	// TCP: silent connections, held for the 8 s, to transfer's
	// listener, then to the bare one.
	tcpBefore := runtime.NumGoroutine()
	opened := time.Now()
	conns := silentConns(t, c.TCPAddr().String(), silent, sources)
	require.Eventually(t, func() bool { return c.Counters().ConnsOpen == silent }, 5*time.Second, 10*time.Millisecond)
	peak := runtime.NumGoroutine()
	var closedAt []time.Duration
	for _, conn := range conns {
		if closedBy(conn, time.Until(opened.Add(holdFor))) {
			closedAt = append(closedAt, time.Since(opened))
		}
	}
	time.Sleep(time.Until(opened.Add(holdFor)))
	stillOpen := silent - len(closedAt)
	require.Equal(t, silent, len(closedAt), "every silent connection closed within %v", holdFor)
	require.GreaterOrEqual(t, closedAt[0], connguard.DefaultFirstRead)
	require.Eventually(t, func() bool { cs := c.Counters(); return cs.ConnsOpen == 0 && cs.ConnsTimedOut == silent },
		5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= tcpBefore+2 }, 5*time.Second, 10*time.Millisecond)
	tcpAfter := runtime.NumGoroutine()

	bareTCPBefore := runtime.NumGoroutine()
	bareOpened := time.Now()
	bareConns := silentConns(t, bare.tcp.Addr().String(), silent, sources)
	require.Eventually(t, func() bool { return runtime.NumGoroutine() >= bareTCPBefore+silent }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(time.Until(bareOpened.Add(holdFor)))
	bareTCPHeld := runtime.NumGoroutine()
	bareOpen := 0
	for _, conn := range bareConns {
		if !closedBy(conn, time.Millisecond) {
			bareOpen++
		}
		_ = conn.Close()
	}

	// One source over its cap.
	held := silentConns(t, c.TCPAddr().String(), connguard.DefaultMaxPerSource, 1)
	require.Eventually(t, func() bool { return c.Counters().ConnsOpen == connguard.DefaultMaxPerSource }, 5*time.Second, 10*time.Millisecond)
	over, err := dialFrom(t.Context(), net.IPv4(127, 0, 0, 10), c.TCPAddr().String())
	require.NoError(t, err)
	refusedAtOnce := closedBy(over, time.Second)
	_ = over.Close()
	require.True(t, refusedAtOnce)
	require.Equal(t, uint64(1), c.Counters().ConnsRefusedPerSource)
	for _, conn := range held {
		_ = conn.Close()
	}
	bare.close()

	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 9,
		Test: t.Name(),
		Load: "transfer's SIP socket (uac.Listen, default limits: 1024 connections, 64 per source, first read 5 s, idle 3 min), " +
			"against the bare sipgo v1.7.2 socket it had before, same traffic, same run",
		Faults: fmt.Sprintf("UDP: %d datagrams from %d distinct source address:ports (%d loopback IPs): %d garbage, %d stray responses, "+
			"%d stray requests, each carrying a marker; TCP: %d silent connections from %d sources held %v, then %d+1 from one source",
			total, distinct, addrs, sent[0], sent[1], sent[2], silent, sources, holdFor, connguard.DefaultMaxPerSource),
		Inputs: "raw UDP and TCP sockets over loopback",
		Lost: fmt.Sprintf("before: UDP pool %d entries, logs %d lines / %d bytes with the marker %d times, heap +%d KiB; "+
			"TCP %d/%d silent connections open after %v (goroutines %d -> %d). "+
			"Now: UDP %d/%d dropped and counted (garbage %d, stray_response %d, stray_request %d), pool %d -> %d entries, "+
			"logs %d lines / %d bytes with the marker 0 times, heap +%d KiB, goroutines %d -> %d; "+
			"an OPTIONS of transfer's after the flood: %d. TCP: %d opened, %d closed by transfer after %v to %v, %d open after %v, "+
			"timed_out %d, goroutines %d before / %d peak / %d after; source over its cap: refused at accept (per_source %d)",
			barePool, strings.Count(bareLogs, "\n"), len(bareLogs), bareMarkers, bareHeapGrowth>>10,
			bareOpen, silent, holdFor, bareTCPBefore, bareTCPHeld,
			cs.UDPDropped(), total, cs.UDPGarbage, cs.UDPStrayResponse, cs.UDPStrayRequest, poolBefore, cs.UDPPoolEntries,
			logLines, logBytes, heapGrowth>>10, goroutinesBefore, udpGoroutinesAfter,
			legit, silent, len(closedAt), closedAt[0].Round(10*time.Millisecond), closedAt[len(closedAt)-1].Round(10*time.Millisecond),
			stillOpen, holdFor, c.Counters().ConnsTimedOut, tcpBefore, peak, tcpAfter,
			c.Counters().ConnsRefusedPerSource),
	})
}
