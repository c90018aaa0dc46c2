package handoff

import "fmt"

// Reasons a write to a call's state is refused for breaking a per-call
// cap (the reason label of the API's and the router's counters).
const (
	// StateTooManyKeys: the state would hold more than
	// max_state_keys_per_call keys.
	StateTooManyKeys = "state_too_many_keys"
	// StateTooLarge: the state's keys and values would add up to more
	// than max_state_bytes_per_call bytes.
	StateTooLarge = "state_too_large"
)

// Config keys of the per-call state caps, named in refusals.
const (
	MaxStateKeysKey  = "max_state_keys_per_call"
	MaxStateBytesKey = "max_state_bytes_per_call"
)

// StateSize is the size of a call's state: its keys, and the bytes of its
// keys and values together.
type StateSize struct {
	Keys  int
	Bytes int
}

// SizeOf measures a state.
func SizeOf(state map[string]string) StateSize {
	s := StateSize{Keys: len(state)}
	for k, v := range state {
		s.Bytes += len(k) + len(v)
	}
	return s
}

// PatchedSize is the size state would have after a CallStateChanged:
// set written, then removed deleted (as the fold applies it). state is not
// changed.
func PatchedSize(state, set map[string]string, removed []string) StateSize {
	after := SizeOf(state)
	gone := make(map[string]bool, len(removed))
	for _, k := range removed {
		gone[k] = true
	}
	for k, v := range set {
		if gone[k] {
			continue // written, then deleted: only the deletion counts
		}
		if old, ok := state[k]; ok {
			after.Bytes += len(v) - len(old)
		} else {
			after.Keys++
			after.Bytes += len(k) + len(v)
		}
	}
	for k := range gone {
		if old, ok := state[k]; ok {
			after.Keys--
			after.Bytes -= len(k) + len(old)
		}
	}
	return after
}

// StateExcess is a state write that would break a per-call cap.
type StateExcess struct {
	// Reason is StateTooManyKeys or StateTooLarge.
	Reason string
	// Limit is the config key of the cap (MaxStateKeysKey or
	// MaxStateBytesKey), Max its value.
	Limit string
	Max   int
	// Current is the call's size now and After its size with the write,
	// in keys or bytes as Limit says.
	Current int
	After   int
}

func (e *StateExcess) Error() string {
	unit := "keys"
	if e.Limit == MaxStateBytesKey {
		unit = "bytes of keys and values"
	}
	return fmt.Sprintf("the call's state would hold %d %s, over %s %d; it holds %d", e.After, unit, e.Limit, e.Max, e.Current)
}

// CheckState says whether a state write that takes a call's state from
// before to after breaks one of the table's caps (nil: it does not). A
// write that does not grow what is over a cap is allowed, so a call over
// a cap lowered by a reload can still shrink its state.
func (t *Table) CheckState(before, after StateSize) *StateExcess {
	if t.MaxStateKeys > 0 && after.Keys > t.MaxStateKeys && after.Keys > before.Keys {
		return &StateExcess{Reason: StateTooManyKeys, Limit: MaxStateKeysKey, Max: t.MaxStateKeys,
			Current: before.Keys, After: after.Keys}
	}
	if t.MaxStateBytes > 0 && after.Bytes > t.MaxStateBytes && after.Bytes > before.Bytes {
		return &StateExcess{Reason: StateTooLarge, Limit: MaxStateBytesKey, Max: t.MaxStateBytes,
			Current: before.Bytes, After: after.Bytes}
	}
	return nil
}
