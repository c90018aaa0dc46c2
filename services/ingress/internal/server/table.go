package server

import (
	"errors"

	"github.com/emiago/sipgo/sip"
)

// The call table: the calls ingress answered (pending ones included), by
// Call-ID, under s.mu. A call enters it (add) before its CallStarted is
// published and leaves it (remove) once, when it ends.

// Reasons add refuses a call.
var (
	errCallExists     = errors.New("a call with this Call-ID exists")
	errOverCalls      = errors.New("max_calls reached")
	errOverTrunkCalls = errors.New("trunk max_calls reached")
)

// add registers c unless a call with its Call-ID exists, max_calls calls
// are up, or its trunk's max_calls are.
func (s *Server) add(c *inboundCall) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.calls[c.id]; ok {
		return errCallExists
	}
	if len(s.calls) >= s.cfg.Limits.MaxCalls {
		return errOverCalls
	}
	if !s.admit.enter(c.trunk) {
		return errOverTrunkCalls
	}
	s.calls[c.id] = c
	s.active.Add(1)
	return nil
}

// remove drops c; only the first caller gets true, so a call ends once.
func (s *Server) remove(c *inboundCall) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls[c.id] != c {
		return false
	}
	delete(s.calls, c.id)
	s.admit.leave(c.trunk)
	if s.active.Add(-1) == 0 && s.draining.Load() {
		select {
		case s.drained <- struct{}{}:
		default:
		}
	}
	return true
}

// callByID is the call with this Call-ID, nil when none.
func (s *Server) callByID(callID string) *inboundCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[callID]
}

// lookup finds the call whose dialog req belongs to (Call-ID, our tag in
// To, theirs in From).
func (s *Server) lookup(req *sip.Request) *inboundCall {
	callID, from, to := req.CallID(), req.From(), req.To()
	if callID == nil || from == nil || to == nil {
		return nil
	}
	c := s.callByID(callID.Value())
	if c == nil {
		return nil
	}
	toTag, _ := to.Params.Get("tag")
	fromTag, _ := from.Params.Get("tag")
	if !c.matches(toTag, fromTag) {
		return nil
	}
	return c
}
