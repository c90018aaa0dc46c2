package uac

import (
	"bytes"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/pkg/observability"
)

// Why a datagram on the UDP socket was dropped before sipgo saw it.
const (
	// DropGarbage: not a SIP message (CRLF keep-alives included: transfer
	// registers nowhere, so nobody has a reason to keep a binding alive).
	DropGarbage = "garbage"
	// DropStrayResponse: a response whose top Via branch is not one of the
	// requests transfer sent over UDP lately.
	DropStrayResponse = "stray_response"
	// DropStrayRequest: a request outside the dialogs of transfer's legs
	// that is not a retransmission, ACK or CANCEL of one taken earlier.
	DropStrayRequest = "stray_request"
)

// pendingInviteTTL is how long a UDP INVITE of ours that has no final
// response yet still takes responses after its last send or provisional
// response. INVITE client transactions wait for the answer as long as
// their caller does (the command's answer_timeout, unbounded), so this is
// a backstop for INVITEs nobody answers, not the usual end of an entry: a
// final response ends it one transaction lifetime later.
const pendingInviteTTL = time.Hour

// sweepEvery is how often the guard forgets what has expired; the sweep
// runs on the next datagram read or request sent after that.
const sweepEvery = time.Second

// txLifetime is how long a transaction may still see messages after its
// last one: Timer F (64*T1, the longest a non-INVITE client transaction and
// the Timer J/H of a server one wait) and T4 for what is still in flight.
// Read each time: tests change sipgo's timers.
func txLifetime() time.Duration { return sip.Timer_F + sip.T4 }

// UDPStats counts what the UDP socket took and dropped; safe to read while
// the client runs.
type UDPStats struct {
	Garbage, StrayResponse, StrayRequest atomic.Uint64
	// Passed counts datagrams handed on to sipgo.
	Passed atomic.Uint64
}

// Dropped is the number of datagrams dropped for any reason.
func (s *UDPStats) Dropped() uint64 {
	return s.Garbage.Load() + s.StrayResponse.Load() + s.StrayRequest.Load()
}

// udpGuard decides which datagrams of the UDP socket reach sipgo, and keeps
// sipgo's UDP connection pool from growing with every source that speaks.
//
// Why the pool needs keeping (sipgo v1.7.2, sip/transport_udp.go): the
// reader of a listening socket (readListenerConnection) calls
// pool.Add(source, listener) for every datagram whose source differs from
// the previous datagram's, before it parses it, and records the source in
// a map local to the reader (acceptedAddr); both are released only when
// the socket closes. 10,000 sources of garbage were 10,000 pool entries
// for the process's life, and each parse error was logged at ERROR with
// the datagram. The read filter (sip.WithTransportLayerReadFilter) runs
// before pool.Add, so a dropped datagram leaves nothing behind; a datagram
// that passes adds its source, and the guard deletes a source's entry
// (ConnectionPool.Delete) once the source has been silent for a
// transaction's lifetime (the entry only serves to answer a request just
// received: a server transaction keeps the connection it was created
// with). The entry of the last source that passed is never deleted: the
// reader adds a source again only when it differs from the previous one,
// so a request from it would find no entry and sipgo would answer from a
// new ephemeral socket.
//
// What cannot be bounded from outside: the reader's acceptedAddr map is
// private to its goroutine and is only freed when the socket closes. It
// holds one short string per distinct source that ever passed the filter,
// that is per peer address that answered one of transfer's requests or
// spoke in one of its legs; strangers cannot add to it. Bounding it needs
// sipgo to prune that map (or not to keep it for a listener).
type udpGuard struct {
	parser *sip.Parser
	local  string
	log    *slog.Logger
	lim    *observability.RateLog
	stats  *UDPStats
	// inDialog reports whether a request belongs to a dialog of one of
	// transfer's legs; set before the socket is served.
	inDialog func(*sip.Request) bool
	// pool is sipgo's UDP connection pool (nil before the user agent
	// exists); set before the socket is served.
	pool func() *sip.ConnectionPool

	mu sync.Mutex
	// life and every override txLifetime() and sweepEvery when set (tests).
	life, every time.Duration
	// sent: the top Via branches of requests transfer sent over UDP.
	sent map[string]*sentTx
	// heard: the branches of requests taken, until their transactions
	// are over (retransmissions, the ACK of a non-2xx, a CANCEL).
	heard map[string]time.Time
	// sources: when each source that passed last sent; last: the latest.
	sources   map[string]time.Time
	last      string
	nextSweep time.Time
}

type sentTx struct {
	expires time.Time
	invite  bool // an INVITE still waiting for its final response
}

func newUDPGuard(local string, logger *slog.Logger) *udpGuard {
	return &udpGuard{
		parser:  sip.NewParser(),
		local:   local,
		log:     logger,
		lim:     observability.NewRateLog(logsPerSecond),
		stats:   &UDPStats{},
		sent:    map[string]*sentTx{},
		heard:   map[string]time.Time{},
		sources: map[string]time.Time{},
	}
}

// sending records the branch of a request about to leave the socket, so
// that its responses are let in. Responses (ours to peers) and ACKs (which
// get no response) are not recorded.
func (g *udpGuard) sending(b []byte) {
	if bytes.HasPrefix(b, []byte("SIP/")) {
		return
	}
	msg, err := g.parser.ParseSIP(b)
	if err != nil {
		return
	}
	req, ok := msg.(*sip.Request)
	if !ok || req.IsAck() {
		return
	}
	branch := topBranch(req)
	if branch == "" {
		return
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.sent[branch]
	if e == nil {
		e = &sentTx{invite: req.IsInvite()}
		g.sent[branch] = e
	}
	ttl := g.lifetimeLocked()
	if e.invite {
		// A CANCEL shares its INVITE's branch; either keeps it open.
		ttl = max(ttl, pendingInviteTTL)
	}
	e.expires = now.Add(ttl)
	// Sweep here too: a transfer whose peers never answer still sends.
	g.maybeSweepLocked(now)
}

// lifetimeLocked is txLifetime(), or its override.
func (g *udpGuard) lifetimeLocked() time.Duration {
	if g.life > 0 {
		return g.life
	}
	return txLifetime()
}

// maybeSweepLocked sweeps if the last sweep is sweepEvery old. Sweeps run
// under g.mu, like the filter's updates of sources and last, so a source
// that just passed is never taken for a silent one.
func (g *udpGuard) maybeSweepLocked(now time.Time) {
	if now.Before(g.nextSweep) {
		return
	}
	every := sweepEvery
	if g.every > 0 {
		every = g.every
	}
	g.nextSweep = now.Add(every)
	g.sweepLocked(now)
}

// filter is the sip.TransportReadFilter of the user agent: it passes every
// TCP and TLS read through (those are streams, guarded by connguard) and
// returns nil, which makes sipgo skip the datagram, for a UDP datagram that
// is not a response to a request of ours or a request in one of our
// dialogs. It never returns an error: sipgo stops reading the socket on
// one.
func (g *udpGuard) filter(info sip.TransportReadProps, data []byte) ([]byte, error) {
	if info.Transport != "UDP" {
		return data, nil
	}
	var src string
	if info.RemoteAddr != nil {
		src = info.RemoteAddr.String()
	}
	msg, inDialog, err := g.judge(data)
	now := time.Now()
	g.mu.Lock()
	reason := DropGarbage
	if err == nil {
		reason = g.admitLocked(msg, inDialog, now)
	}
	if reason == "" && info.LocalAddr != nil && info.LocalAddr.String() == g.local {
		g.sources[src] = now
		g.last = src
	}
	g.maybeSweepLocked(now)
	g.mu.Unlock()
	if reason == "" {
		g.stats.Passed.Add(1)
		return data, nil
	}
	switch reason {
	case DropGarbage:
		g.stats.Garbage.Add(1)
	case DropStrayResponse:
		g.stats.StrayResponse.Add(1)
	default:
		g.stats.StrayRequest.Add(1)
	}
	// Never the datagram itself: a stranger chooses those bytes.
	g.lim.Log(g.log, "sip datagram dropped", "source", src, "reason", reason, "bytes", len(data))
	return nil, nil
}

// judge parses data (an error: not SIP) and reports whether a request
// belongs to a dialog of one of our legs. It runs outside the lock.
func (g *udpGuard) judge(data []byte) (sip.Message, bool, error) {
	msg, err := g.parser.ParseSIP(data)
	if err != nil {
		return nil, false, err
	}
	req, ok := msg.(*sip.Request)
	return msg, ok && g.inDialog != nil && g.inDialog(req), nil
}

// admitLocked decides on a parsed message, returning why it is dropped or
// "", and records what it lets in; g.mu is held.
func (g *udpGuard) admitLocked(msg sip.Message, inDialog bool, now time.Time) string {
	switch m := msg.(type) {
	case *sip.Response:
		e := g.sent[topBranch(m)]
		if e == nil || now.After(e.expires) {
			return DropStrayResponse
		}
		if cseq := m.CSeq(); e.invite && m.StatusCode >= 200 && cseq != nil && cseq.MethodName == sip.INVITE {
			// Answered: retransmissions of the answer may follow for a
			// transaction's lifetime, no longer.
			e.invite = false
			e.expires = now.Add(g.lifetimeLocked())
		} else if e.invite {
			e.expires = now.Add(pendingInviteTTL)
		}
		return ""
	case *sip.Request:
		if inDialog {
			g.hearLocked(m, now)
			return ""
		}
		if b := topBranch(m); b != "" {
			if exp, ok := g.heard[b]; ok && now.Before(exp) {
				g.hearLocked(m, now)
				return ""
			}
		}
		return DropStrayRequest
	default:
		return DropGarbage
	}
}

func (g *udpGuard) hearLocked(req *sip.Request, now time.Time) {
	if b := topBranch(req); b != "" {
		g.heard[b] = now.Add(g.lifetimeLocked())
	}
}

// sweepLocked forgets expired branches and deletes the pool entries of
// sources silent for a transaction's lifetime, except the last one's.
func (g *udpGuard) sweepLocked(now time.Time) {
	for b, e := range g.sent {
		if now.After(e.expires) {
			delete(g.sent, b)
		}
	}
	for b, exp := range g.heard {
		if now.After(exp) {
			delete(g.heard, b)
		}
	}
	var pool *sip.ConnectionPool
	if g.pool != nil {
		pool = g.pool()
	}
	idle := g.lifetimeLocked()
	for src, seen := range g.sources {
		if src == g.last || now.Sub(seen) < idle {
			continue
		}
		delete(g.sources, src)
		if pool != nil {
			forget(pool, g.local, src)
		}
	}
}

// forget deletes src from pool if it still names the listening socket (a
// connection sipgo dialled to src is left to sipgo).
func forget(pool *sip.ConnectionPool, local, src string) {
	listener := pool.Get(local)
	if listener == nil {
		return // closing
	}
	defer func() { _, _ = listener.TryClose() }()
	c := pool.Get(src)
	if c == nil {
		return
	}
	_, _ = c.TryClose()
	if c == listener {
		pool.Delete(src)
	}
}

func topBranch(m sip.Message) string {
	via := m.Via()
	if via == nil {
		return ""
	}
	b, _ := via.Params.Get("branch")
	return b
}

// sourceCount is the number of sources the guard tracks (those whose
// pool entries it will delete).
func (g *udpGuard) sourceCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sources)
}

// watchedConn is the UDP socket as sipgo sees it: every request leaving it
// is recorded first, so that its responses get through the filter.
type watchedConn struct {
	net.PacketConn
	g *udpGuard
}

func (w *watchedConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	w.g.sending(b)
	return w.PacketConn.WriteTo(b, addr)
}
