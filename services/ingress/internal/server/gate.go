package server

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/services/ingress/internal/sipcheck"
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
	Draining      atomic.Uint64
}

// Snapshot returns the counters by name.
func (s *Stats) Snapshot() map[string]uint64 {
	return map[string]uint64{
		"acl_dropped":     s.ACLDropped.Load(),
		"invalid":         s.Invalid.Load(),
		"dropped":         s.Dropped.Load(),
		"stray_responses": s.StrayResponses.Load(),
		"overload_calls":  s.OverloadCalls.Load(),
		"overload_rate":   s.OverloadRate.Load(),
		"draining":        s.Draining.Load(),
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
	if s.trunks.Lookup(src.Addr().Unmap()) == nil {
		s.stats.ACLDropped.Add(1)
		s.rejectLog.log(s.log, "request from an address no trunk allows", "source", src.String())
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
		s.stats.StrayResponses.Add(1)
		return nil, nil
	case r.Drop:
		s.stats.Dropped.Add(1)
		s.rejectLog.log(s.log, "sip message dropped", "source", src.String(), "reason", r.Detail, "call_id", r.CallID)
		return nil, nil
	case !r.OK():
		s.stats.Invalid.Add(1)
		s.rejectLog.log(s.log, "sip request refused", "source", src.String(), "status", r.Status, "reason", r.Detail, "call_id", r.CallID)
		s.sendRaw(p.LocalAddr, p.RemoteAddr, sipcheck.Reply(data, r, sip.GenerateTagN(16), src))
		return nil, nil
	}
	if r.Method == "INVITE" && !r.ToTag {
		if refused := s.admitInvite(r); refused.Status != 0 {
			s.sendRaw(p.LocalAddr, p.RemoteAddr, sipcheck.Reply(data, refused, sip.GenerateTagN(16), src))
			return nil, nil
		}
	}
	return sipcheck.Canonical(data, r, true), nil
}

// admitInvite decides on a new INVITE before sipgo sees it; a zero result
// admits it. A retransmission gets the decision its first copy got and is
// not counted again.
func (s *Server) admitInvite(r sipcheck.Result) sipcheck.Result {
	unavailable := func(detail string) sipcheck.Result {
		return sipcheck.Result{Status: sip.StatusServiceUnavailable, Reason: "Service Unavailable", Detail: detail,
			Extra: []sipcheck.Header{{Name: "Retry-After", Value: s.retryAfter}}}
	}
	if s.draining.Load() {
		s.stats.Draining.Add(1)
		return unavailable("draining")
	}
	verdict, fresh := s.admit.decide(r.CallID+"\x00"+r.Branch, time.Now())
	if !fresh {
		if verdict == admitted {
			return sipcheck.Result{}
		}
		return unavailable("retransmission of a refused invite")
	}
	switch verdict {
	case overCalls:
		s.stats.OverloadCalls.Add(1)
		s.rejectLog.log(s.log, "invite refused: max_calls reached", "call_id", r.CallID)
		return unavailable("max_calls")
	case overRate:
		s.stats.OverloadRate.Add(1)
		s.rejectLog.log(s.log, "invite refused: max_cps reached", "call_id", r.CallID)
		return unavailable("max_cps")
	}
	return sipcheck.Result{}
}

func (s *Server) sendRaw(local, to net.Addr, msg []byte) {
	conn := s.udpConn(local)
	if msg == nil || conn == nil {
		return
	}
	if _, err := conn.WriteTo(msg, to); err != nil {
		s.rejectLog.log(s.log, "send stateless response", "err", err)
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
)

// admission is the overload gate for new INVITEs: a concurrency bound
// and a token bucket, plus a bounded memory of recent decisions keyed by
// Call-ID and branch so retransmissions are recognised.
type admission struct {
	maxCalls int64
	rate     float64 // tokens per second
	active   *atomic.Int64

	mu     sync.Mutex
	tokens float64
	last   time.Time
	seen   map[string]verdict
	ring   []string
	next   int
}

// seenCap bounds the memory of decisions; at max_cps it covers the 32 s
// an INVITE is retransmitted for, and a flood cannot grow it.
func newAdmission(maxCalls, maxCPS int, active *atomic.Int64) *admission {
	ringSize := min(max(64*maxCPS, 1024), 1<<17)
	return &admission{
		maxCalls: int64(maxCalls), rate: float64(maxCPS), active: active,
		tokens: float64(maxCPS), seen: make(map[string]verdict, ringSize), ring: make([]string, ringSize),
	}
}

// decide returns the verdict for key and whether it was made now (false
// for a retransmission).
func (a *admission) decide(key string, now time.Time) (verdict, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if v, ok := a.seen[key]; ok {
		return v, false
	}
	if !a.last.IsZero() {
		a.tokens = min(a.rate, a.tokens+now.Sub(a.last).Seconds()*a.rate)
	}
	a.last = now
	v := admitted
	switch {
	case a.active.Load() >= a.maxCalls:
		v = overCalls
	case a.tokens < 1:
		v = overRate
	default:
		a.tokens--
	}
	if old := a.ring[a.next]; old != "" {
		delete(a.seen, old)
	}
	a.ring[a.next] = key
	a.next = (a.next + 1) % len(a.ring)
	a.seen[key] = v
	return v, true
}

// rateLog lets at most perSecond records through each second and reports
// how many it held back, so a flood of bad packets cannot flood the log.
type rateLog struct {
	perSecond int

	mu         sync.Mutex
	window     time.Time
	n          int
	suppressed int
}

func (l *rateLog) allow() (bool, int) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= time.Second {
		l.window, l.n = now, 0
	}
	if l.n >= l.perSecond {
		l.suppressed++
		return false, 0
	}
	l.n++
	s := l.suppressed
	l.suppressed = 0
	return true, s
}

func (l *rateLog) log(logger *slog.Logger, msg string, args ...any) {
	ok, suppressed := l.allow()
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	logger.Info(msg, args...)
}

// quietHandler wraps the logger given to sipgo: it removes the raw packet
// sipgo attaches to parse errors ("data") and rate-limits those records.
type quietHandler struct {
	next slog.Handler
	lim  *rateLog
}

func (h quietHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	dropped := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "data" {
			dropped = true
			return true
		}
		out.AddAttrs(a)
		return true
	})
	if dropped || r.Level >= slog.LevelError {
		ok, suppressed := h.lim.allow()
		if !ok {
			return nil
		}
		if suppressed > 0 {
			out.AddAttrs(slog.Int("suppressed", suppressed))
		}
	}
	return h.next.Handle(ctx, out)
}

func (h quietHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return quietHandler{next: h.next.WithAttrs(as), lim: h.lim}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{next: h.next.WithGroup(name), lim: h.lim}
}

func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(int(d / time.Second))
}
