package server

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/services/ingress/internal/sipcheck"
	"github.com/baton-voice/baton/services/ingress/internal/trunks"
)

// Stats are ingress's counters. They only grow.
type Stats struct {
	// ACLDropped counts messages from addresses no trunk allows (no answer).
	ACLDropped atomic.Uint64
	// Invalid counts requests refused by validation with a 4xx/5xx.
	Invalid atomic.Uint64
	// Dropped counts messages discarded without an answer: unanswerable
	// garbage, malformed responses, invalid ACKs.
	Dropped atomic.Uint64
	// StrayResponses counts responses (ingress sends no requests).
	StrayResponses atomic.Uint64
	// OverloadCalls and OverloadRate count new INVITEs refused with 503
	// because of max_calls or max_cps; Draining those refused at shutdown.
	OverloadCalls atomic.Uint64
	OverloadRate  atomic.Uint64
	// TrunkOverloadCalls and TrunkOverloadRate count those refused by a
	// trunk's own max_calls or max_cps.
	TrunkOverloadCalls atomic.Uint64
	TrunkOverloadRate  atomic.Uint64
	Draining           atomic.Uint64
	// RefusedNumbers counts caller and callee sources whose user part held
	// control characters once decoded; the call goes on without them.
	RefusedNumbers atomic.Uint64
	// ForeignRTP counts RTP datagrams dropped for coming from a source the
	// call was not latched to, nor signalled in its SDP, nor in its trunk
	// (added when the call ends).
	ForeignRTP atomic.Uint64
	// UnackedSource counts new INVITEs refused with 503 because their
	// source had limits.max_unacked_per_source (or max_unacked_unverified)
	// calls between INVITE and ACK.
	UnackedSource atomic.Uint64
	// NextHopToSource counts calls whose Contact or first Record-Route
	// named a destination outside their trunk (or a name, not an IP):
	// their in-dialog requests go to the INVITE's source instead.
	NextHopToSource atomic.Uint64
	// Agent streams (agent.go): opened, failed (the agent could not be
	// reached or dropped: on_agent_failure ran), and, added when each
	// ends, agent audio frames played late, dropped beyond the playout
	// bound, and messages from agents ignored as malformed.
	AgentStreams, AgentFailures, AgentLateFrames, AgentDroppedFrames, AgentBadMessages atomic.Uint64
}

// Snapshot returns the counters by name.
func (s *Stats) Snapshot() map[string]uint64 {
	return map[string]uint64{
		"acl_dropped":          s.ACLDropped.Load(),
		"invalid":              s.Invalid.Load(),
		"dropped":              s.Dropped.Load(),
		"stray_responses":      s.StrayResponses.Load(),
		"overload_calls":       s.OverloadCalls.Load(),
		"overload_rate":        s.OverloadRate.Load(),
		"trunk_overload_calls": s.TrunkOverloadCalls.Load(),
		"trunk_overload_rate":  s.TrunkOverloadRate.Load(),
		"draining":             s.Draining.Load(),
		"refused_numbers":      s.RefusedNumbers.Load(),
		"foreign_rtp":          s.ForeignRTP.Load(),
		"unacked_source":       s.UnackedSource.Load(),
		"next_hop_to_source":   s.NextHopToSource.Load(),
		"agent_streams":        s.AgentStreams.Load(),
		"agent_failures":       s.AgentFailures.Load(),
		"agent_late_frames":    s.AgentLateFrames.Load(),
		"agent_dropped_frames": s.AgentDroppedFrames.Load(),
		"agent_bad_messages":   s.AgentBadMessages.Load(),
	}
}

// errACL closes a TCP or TLS connection from an address no trunk allows.
var errACL = errors.New("source address not allowed by any trunk")

// filter sees every UDP datagram before sipgo parses it (sipgo's
// TransportReadFilter): the ACL, validation and admission of new INVITEs
// happen here, so sipgo builds no transaction for what ingress refuses.
// It answers refusals itself, statelessly, and returns nil to make sipgo
// skip the datagram; it never returns an error (that would stop sipgo's
// reader).
func (s *Server) filter(p sip.TransportReadProps, data []byte) ([]byte, error) {
	if s.stopped.Load() {
		return nil, nil
	}
	src := addrPort(p.RemoteAddr)
	trunk := s.trunks.Lookup(src.Addr().Unmap())
	if trunk == nil {
		s.stats.ACLDropped.Add(1)
		s.rejectLog.Log(s.log, "request from an address no trunk allows", "source", src.String())
		if p.Transport != "UDP" {
			return nil, errACL // sipgo closes the connection
		}
		return nil, nil
	}
	if p.Transport != "UDP" {
		// A stream read is a chunk, not a message: validation runs on the
		// parsed request (checkStream).
		return data, nil
	}
	if len(bytes.Trim(data, "\r\n")) == 0 {
		return data, nil // keepalive; sipgo ignores it
	}
	r := sipcheck.Check(data, s.policy)
	switch {
	case r.Response && r.OK():
		if s.byes.awaitsAnswer(r.Branch) {
			return data, nil // the answer to a BYE ingress sent
		}
		s.stats.StrayResponses.Add(1)
		return nil, nil
	case r.Drop:
		s.stats.Dropped.Add(1)
		s.rejectLog.Log(s.log, "sip message dropped", "source", src.String(), "reason", r.Detail, "call_id", r.CallID)
		return nil, nil
	case !r.OK():
		s.stats.Invalid.Add(1)
		s.rejectLog.Log(s.log, "sip request refused", "source", src.String(), "status", r.Status, "reason", r.Detail, "call_id", r.CallID)
		s.sendRaw(p.LocalAddr, p.RemoteAddr, sipcheck.Reply(data, r, sip.GenerateTagN(16), src))
		return nil, nil
	}
	if r.Method == "INVITE" && !r.ToTag {
		if refused := s.admitInvite(r, trunk, src.Addr().Unmap(), false); refused.Status != 0 {
			s.sendRaw(p.LocalAddr, p.RemoteAddr, sipcheck.Reply(data, refused, sip.GenerateTagN(16), src))
			return nil, nil
		}
	}
	return sipcheck.Canonical(data, r, true), nil
}

// admitInvite decides on a new INVITE before sipgo sees it; a zero result
// admits it. A retransmission gets the decision its first copy got and is
// not counted again.
//
// A source at its cap of calls between INVITE and ACK (handshakes) is
// refused here, statelessly, so the 503 is sent once per INVITE received:
// a 503 from sipgo's transaction would be retransmitted until an ACK that
// a forged source never sends. onInvite counts the call in; this check
// only turns the excess away early. stream says the INVITE came over TCP
// or TLS.
func (s *Server) admitInvite(r sipcheck.Result, t *trunks.Trunk, src netip.Addr, stream bool) sipcheck.Result {
	unavailable := func(detail string) sipcheck.Result {
		return sipcheck.Result{Status: sip.StatusServiceUnavailable, Reason: "Service Unavailable", Detail: detail,
			Extra: []sipcheck.Header{{Name: "Retry-After", Value: s.retryAfter}}}
	}
	if s.draining.Load() {
		s.stats.Draining.Add(1)
		return unavailable("draining")
	}
	key := r.CallID + "\x00" + r.Branch
	now := time.Now()
	if !s.admit.seenBefore(key) && s.handshakes.over(src, stream, now) {
		s.stats.UnackedSource.Add(1)
		s.rejectLog.Log(s.log, "invite refused: too many calls from this source without an ack", "source", src.String(), "call_id", r.CallID)
		return unavailable("unacked calls from the source")
	}
	verdict, fresh := s.admit.decide(key, t, now)
	if !fresh {
		if verdict == admitted {
			return sipcheck.Result{}
		}
		return unavailable("retransmission of a refused invite")
	}
	switch verdict {
	case overCalls:
		s.stats.OverloadCalls.Add(1)
		s.rejectLog.Log(s.log, "invite refused: max_calls reached", "call_id", r.CallID)
		return unavailable("max_calls")
	case overRate:
		s.stats.OverloadRate.Add(1)
		s.rejectLog.Log(s.log, "invite refused: max_cps reached", "call_id", r.CallID)
		return unavailable("max_cps")
	case overTrunkCalls:
		s.stats.TrunkOverloadCalls.Add(1)
		s.rejectLog.Log(s.log, "invite refused: trunk max_calls reached", "trunk", t.Name, "call_id", r.CallID)
		return unavailable("trunk max_calls")
	case overTrunkRate:
		s.stats.TrunkOverloadRate.Add(1)
		s.rejectLog.Log(s.log, "invite refused: trunk max_cps reached", "trunk", t.Name, "call_id", r.CallID)
		return unavailable("trunk max_cps")
	}
	return sipcheck.Result{}
}

func (s *Server) sendRaw(local, to net.Addr, msg []byte) {
	conn := s.udpConn(local)
	if msg == nil || conn == nil {
		return
	}
	if _, err := conn.WriteTo(msg, to); err != nil {
		s.rejectLog.Log(s.log, "send stateless response", "err", err)
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.UDPAddr:
		return v.AddrPort()
	case *net.TCPAddr:
		return v.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

type verdict int

const (
	admitted verdict = iota
	overCalls
	overRate
	overTrunkCalls
	overTrunkRate
)

// bucket is a token bucket with a burst of one second's worth.
type bucket struct {
	rate   float64 // tokens per second
	tokens float64
	last   time.Time
}

func newBucket(perSecond int) bucket {
	return bucket{rate: float64(perSecond), tokens: float64(perSecond)}
}

// refill adds the tokens earned since the last call and reports whether
// one is there to take.
func (b *bucket) refill(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.rate, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	return b.tokens >= 1
}

// trunkLoad is one trunk's share: its calls in the table and its own
// bucket (rate 0: no per-trunk max_cps).
type trunkLoad struct {
	active int64
	bucket bucket
}

// admission is the overload gate for new INVITEs: a concurrency bound
// and a token bucket, globally and per trunk (trunks[].max_calls,
// max_cps), plus a bounded memory of recent decisions keyed by Call-ID
// and branch so retransmissions are recognised.
type admission struct {
	maxCalls int64
	active   *atomic.Int64

	mu     sync.Mutex
	global bucket
	trunks map[string]*trunkLoad // by trunk name; only configured trunks
	seen   map[string]verdict
	ring   []string
	next   int
}

// seenCap bounds the memory of decisions; at max_cps it covers the 32 s
// an INVITE is retransmitted for, and a flood cannot grow it.
func newAdmission(maxCalls, maxCPS int, active *atomic.Int64) *admission {
	ringSize := min(max(64*maxCPS, 1024), 1<<17)
	return &admission{
		maxCalls: int64(maxCalls), active: active, global: newBucket(maxCPS),
		trunks: map[string]*trunkLoad{},
		seen:   make(map[string]verdict, ringSize), ring: make([]string, ringSize),
	}
}

// loadOf returns t's load, creating it on first use; a.mu is held.
func (a *admission) loadOf(t *trunks.Trunk) *trunkLoad {
	l := a.trunks[t.Name]
	if l == nil {
		l = &trunkLoad{bucket: newBucket(t.MaxCPS)}
		a.trunks[t.Name] = l
	}
	return l
}

// decide returns the verdict for key, an INVITE from trunk t, and whether
// it was made now (false for a retransmission).
func (a *admission) decide(key string, t *trunks.Trunk, now time.Time) (verdict, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if v, ok := a.seen[key]; ok {
		return v, false
	}
	load := a.loadOf(t)
	globalToken := a.global.refill(now)
	trunkToken := t.MaxCPS == 0 || load.bucket.refill(now)
	v := admitted
	switch {
	case t.MaxCalls > 0 && load.active >= int64(t.MaxCalls):
		v = overTrunkCalls
	case !trunkToken:
		v = overTrunkRate
	case a.active.Load() >= a.maxCalls:
		v = overCalls
	case !globalToken:
		v = overRate
	default:
		a.global.tokens--
		if t.MaxCPS > 0 {
			load.bucket.tokens--
		}
	}
	if old := a.ring[a.next]; old != "" {
		delete(a.seen, old)
	}
	a.ring[a.next] = key
	a.next = (a.next + 1) % len(a.ring)
	a.seen[key] = v
	return v, true
}

// seenBefore reports whether an INVITE with key was decided on already
// (this one is a retransmission).
func (a *admission) seenBefore(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.seen[key]
	return ok
}

// enter counts a call of trunk t into the table unless the trunk's
// max_calls calls are there already.
func (a *admission) enter(t *trunks.Trunk) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	load := a.loadOf(t)
	if t.MaxCalls > 0 && load.active >= int64(t.MaxCalls) {
		return false
	}
	load.active++
	return true
}

// leave counts a call of trunk t out of the table.
func (a *admission) leave(t *trunks.Trunk) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.loadOf(t).active--
}

func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(int(d / time.Second))
}
