package transfer

import (
	"sync"

	"google.golang.org/protobuf/proto"
)

// registry routes a call's facts to the executions waiting on them. It is
// bounded: at most max executions at once.
type registry struct {
	mu     sync.Mutex
	max    int
	n      int
	byCall map[string]map[*execution]struct{}
	// commands in flight or recently finished, by command id, so a command
	// redelivered (rebalance, retry) while this process remembers it is not
	// executed twice. recent is a ring of the finished ids to forget.
	seen   map[string]struct{}
	recent []string
	next   int
}

func newRegistry(maxInFlight int) *registry {
	return &registry{
		max:    maxInFlight,
		byCall: map[string]map[*execution]struct{}{},
		seen:   map[string]struct{}{},
		recent: make([]string, 4*maxInFlight),
	}
}

// Why add refused an execution.
const (
	added = iota
	duplicate
	full
)

// known reports whether this process runs or recently ran the command.
func (r *registry) known(id string) bool {
	if id == "" {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.seen[id]
	return ok
}

// add registers e before its request is sent, so no fact is missed.
func (r *registry) add(e *execution) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := e.cmd.GetCommandId()
	if _, dup := r.seen[id]; dup && id != "" {
		return duplicate
	}
	if r.n >= r.max {
		return full
	}
	if id != "" {
		r.seen[id] = struct{}{}
	}
	set := r.byCall[e.callID]
	if set == nil {
		set = map[*execution]struct{}{}
		r.byCall[e.callID] = set
	}
	set[e] = struct{}{}
	r.n++
	return added
}

// remove forgets e; its command id stays known for a while.
func (r *registry) remove(e *execution) {
	r.mu.Lock()
	defer r.mu.Unlock()
	set := r.byCall[e.callID]
	if _, ok := set[e]; !ok {
		return
	}
	delete(set, e)
	if len(set) == 0 {
		delete(r.byCall, e.callID)
	}
	r.n--
	if id := e.cmd.GetCommandId(); id != "" {
		if old := r.recent[r.next]; old != "" {
			delete(r.seen, old)
		}
		r.recent[r.next] = id
		r.next = (r.next + 1) % len(r.recent)
	}
}

// deliver hands a fact to every execution of the call. It never blocks:
// a fact for a full buffer is dropped and counted in the return value.
func (r *registry) deliver(callID string, fact proto.Message) (delivered, dropped int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for e := range r.byCall[callID] {
		select {
		case e.facts <- fact:
			delivered++
		default:
			dropped++
		}
	}
	return delivered, dropped
}

// inFlight is the number of executions registered.
func (r *registry) inFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}
