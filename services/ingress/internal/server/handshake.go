package server

import (
	"net/netip"
	"sync"
	"time"
)

// handshakes bounds the calls one source address holds between INVITE and
// ACK: the calls it has in setup or answered and not yet acknowledged.
// Each holds an RTP port and a call slot for up to 64*T1, and each 200 OK
// over UDP is retransmitted up to ten times, so a source that never ACKs
// could otherwise hold the port range with a few INVITEs a second, and
// one that forges another's address could reflect 200s at it.
//
// A source that has completed a handshake (sent an ACK for a 2xx) is
// verified: a forger never sees the 200's To tag, so it cannot ACK. An
// unverified source is held to a much lower cap, which bounds what
// ingress reflects at a forged address: at most maxUnverified calls in
// flight, 11 datagrams each, per 64*T1. Stream transports are verified by
// their connection's handshake.
type handshakes struct {
	maxVerified   int
	maxUnverified int
	verifiedFor   time.Duration
	maxKnown      int

	mu       sync.Mutex
	pending  map[netip.Addr]int
	verified map[netip.Addr]time.Time // when the source last ACKed
}

// Defaults of the verified set: how long an ACK vouches for its source,
// and how many sources are remembered (a full set stops adding, so a
// source beyond it stays unverified, never the reverse).
const (
	verifiedFor      = time.Hour
	maxVerifiedKnown = 4096
)

func newHandshakes(maxVerified, maxUnverified int) *handshakes {
	return &handshakes{
		maxVerified: maxVerified, maxUnverified: maxUnverified,
		verifiedFor: verifiedFor, maxKnown: maxVerifiedKnown,
		pending: map[netip.Addr]int{}, verified: map[netip.Addr]time.Time{},
	}
}

// refusal says why begin refused: the source is over the cap for
// verified sources or for unverified ones.
type refusal int

const (
	notRefused refusal = iota
	overUnackedVerified
	overUnackedUnverified
)

// begin counts a call from src entering setup, unless src is at its cap.
// The returned done must be called once the call is acknowledged or over
// (it is idempotent); stream says the source is proven by a connection.
func (h *handshakes) begin(src netip.Addr, stream bool, now time.Time) (done func(), r refusal) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if limit, why := h.limit(src, stream, now); h.pending[src] >= limit {
		return func() {}, why
	}
	h.pending[src]++
	var once sync.Once
	return func() { once.Do(func() { h.end(src) }) }, notRefused
}

// over reports whether src is at its cap now (begin would refuse).
func (h *handshakes) over(src netip.Addr, stream bool, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	limit, _ := h.limit(src, stream, now)
	return h.pending[src] >= limit
}

// limit is src's cap and the refusal at it; h.mu is held.
func (h *handshakes) limit(src netip.Addr, stream bool, now time.Time) (int, refusal) {
	if stream || h.isVerified(src, now) {
		return h.maxVerified, overUnackedVerified
	}
	return h.maxUnverified, overUnackedUnverified
}

func (h *handshakes) end(src netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pending[src]--; h.pending[src] <= 0 {
		delete(h.pending, src)
	}
}

// acked records that src completed a handshake.
func (h *handshakes) acked(src netip.Addr, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.verified[src]; !ok && len(h.verified) >= h.maxKnown {
		for a, at := range h.verified {
			if now.Sub(at) > h.verifiedFor {
				delete(h.verified, a)
			}
		}
		if len(h.verified) >= h.maxKnown {
			return
		}
	}
	h.verified[src] = now
}

// isVerified reports whether src ACKed within verifiedFor; h.mu is held.
func (h *handshakes) isVerified(src netip.Addr, now time.Time) bool {
	at, ok := h.verified[src]
	return ok && now.Sub(at) <= h.verifiedFor
}
