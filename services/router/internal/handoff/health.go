package handoff

import (
	"context"
	"fmt"
	"strings"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
)

// RefusedDestinationDown: the destination opted in to skip_when_down is
// down (DestinationHealth), and so is every alternative.
const RefusedDestinationDown = "destination_down"

// healthKey is one destination's health as one partition of the
// calls topic saw it: transfer writes a copy of each change to every
// partition, naming the partition and the topic's partition count
// (decision 0016).
type healthKey struct {
	destination   string // lower-cased
	partition, of int32
}

// healthEntry is the last DestinationHealth of a key.
type healthEntry struct {
	up      bool
	eventID string
}

// destinationHealth folds a DestinationHealth copy.
func (f *Fold) destinationHealth(ctx context.Context, ev events.Event, msg *batonv1.DestinationHealth) {
	if msg.GetDestination() == "" || msg.GetPartitions() <= 0 || msg.GetPartition() < 0 || msg.GetPartition() >= msg.GetPartitions() {
		f.logger.WarnContext(ctx, "destination health without destination or partition; skipped", "event_id", ev.ID)
		return
	}
	k := healthKey{destination: strings.ToLower(msg.GetDestination()), partition: msg.GetPartition(), of: msg.GetPartitions()}
	if f.health == nil {
		f.health = map[healthKey]healthEntry{}
		f.healthUndo = map[healthKey]*healthEntry{}
	}
	if _, saved := f.healthUndo[k]; !saved {
		if prev, ok := f.health[k]; ok {
			f.healthUndo[k] = &prev
		} else {
			f.healthUndo[k] = nil
		}
	}
	f.health[k] = healthEntry{up: msg.GetUp(), eventID: ev.ID}
	f.logger.DebugContext(ctx, "destination health", "destination", msg.GetDestination(), "up", msg.GetUp(),
		"partition", msg.GetPartition())
}

// commitHealth keeps the batch's health changes; rollbackHealth undoes
// them.
func (f *Fold) commitHealth() { clear(f.healthUndo) }

func (f *Fold) rollbackHealth() {
	for k, prev := range f.healthUndo {
		if prev == nil {
			delete(f.health, k)
		} else {
			f.health[k] = *prev
		}
	}
	clear(f.healthUndo)
}

// down reports whether destination is down for the call callID: the last
// health of it folded from the call's own partition (found from the call
// id with the producers' key hash and the count the copy names) says
// down. It returns the id of that health event. With copies under several
// partition counts (the topic was repartitioned), the largest count is
// the current one.
func (f *Fold) down(callID, destination string) (bool, string) {
	name := strings.ToLower(destination)
	var best *healthEntry
	var bestOf int32
	for k, e := range f.health {
		if k.destination != name || k.of <= bestOf {
			continue
		}
		if kafka.PartitionFor([]byte(callID), int(k.of)) == k.partition {
			e := e
			best, bestOf = &e, k.of
		}
	}
	if best == nil || best.up {
		return false, ""
	}
	return true, best.eventID
}

// skipDown returns d, or when d opted in to skip_when_down and is down
// for c, the first of its fallbacks and the default that is not (each
// passed over is appended to skipped); ok is false when none is left.
func (f *Fold) skipDown(ctx context.Context, table *Table, c *call, d Destination, skipped []string) (Destination, []string, bool) {
	candidates := append([]string{d.Name}, d.Fallback...)
	candidates = append(candidates, table.Default)
	for _, name := range candidates {
		if containsFold(skipped, name) {
			continue
		}
		next, ok := table.destination(name)
		if !ok {
			continue
		}
		if !next.SkipWhenDown {
			return next, skipped, true
		}
		down, healthID := f.down(c.id, next.Name)
		if !down {
			return next, skipped, true
		}
		f.logger.InfoContext(ctx, "destination down; skipped", "call_id", c.id, "destination", next.Name, "health_event_id", healthID)
		skipped = append(skipped, next.Name)
	}
	return Destination{}, skipped, false
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// downDetail is the refusal detail when every candidate is down.
func downDetail(skipped []string) string {
	return fmt.Sprintf("every candidate is down (skip_when_down): %s", strings.Join(skipped, ", "))
}
