package attempts

// Bridges held on the log (docs/decisions/0020): a transfer instance
// holding a warm transfer's bridge keeps a BridgeHeld record with a lease
// under bridge/<command id>, renewed while the bridge is up and
// tombstoned when it ends. A record whose lease has passed is a bridge
// whose instance died; any instance may claim it, and the first claim in
// the log's order is the one that releases it.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// bridgeKeyPrefix keys BridgeHeld records.
const bridgeKeyPrefix = "bridge/"

// ErrBridgeClaimed: another instance claimed the bridge (its lease had
// passed); the claimer releases the call.
var ErrBridgeClaimed = errors.New("bridge claimed by another instance")

// heldBridge is the latest heartbeat of a bridge, and its first claimer.
type heldBridge struct {
	held      *batonv1.BridgeHeld
	claimedBy string
}

// readBridge takes a bridge record (true) into the index; other records
// are not its business (false).
func (l *Log) readBridge(ctx context.Context, rec *kgo.Record) bool {
	key := string(rec.Key)
	if !strings.HasPrefix(key, bridgeKeyPrefix) {
		return false
	}
	id := strings.TrimPrefix(key, bridgeKeyPrefix)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next[rec.Partition] = rec.Offset + 1
	if rec.Value == nil {
		delete(l.bridges, id) // the bridge ended
		return true
	}
	ev, err := events.Decode(rec)
	var m *batonv1.BridgeHeld
	if err == nil {
		var ok bool
		if m, ok = ev.Data.(*batonv1.BridgeHeld); !ok {
			err = fmt.Errorf("%s under a bridge key", ev.Type)
		}
	}
	if err != nil {
		l.logger.WarnContext(ctx, "bridge record skipped", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
		return true
	}
	b := l.bridges[id]
	switch {
	case b == nil:
		b = &heldBridge{held: m, claimedBy: m.GetReleasedBy()}
		l.bridges[id] = b
	case b.claimedBy != "":
		// Claimed: later heartbeats and claims change nothing.
	case m.GetReleasedBy() != "":
		b.claimedBy = m.GetReleasedBy()
	default:
		b.held = m
	}
	return true
}

// HoldBridge writes a bridge's heartbeat (one synchronous produce). It
// returns ErrBridgeClaimed, writing nothing, once another instance
// claimed the bridge.
func (l *Log) HoldBridge(ctx context.Context, m *batonv1.BridgeHeld) error {
	l.mu.Lock()
	b := l.bridges[m.GetCommandId()]
	claimed := b != nil && b.claimedBy != "" && b.claimedBy != l.instance
	l.mu.Unlock()
	if claimed {
		return ErrBridgeClaimed
	}
	m = proto.CloneOf(m)
	m.Instance, m.ReleasedBy = l.instance, ""
	return l.writeBridge(ctx, m)
}

// EndBridge tombstones a bridge: it ended, nobody needs to release it.
func (l *Log) EndBridge(ctx context.Context, commandID string) error {
	rec := &kgo.Record{Topic: l.topic, Key: []byte(bridgeKeyPrefix + commandID)}
	if err := l.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("end bridge of command %s: %w", commandID, err)
	}
	return nil
}

// LostBridges returns the bridges whose lease ended before now and that
// nobody claimed.
func (l *Log) LostBridges(now time.Time) []*batonv1.BridgeHeld {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*batonv1.BridgeHeld
	for _, b := range l.bridges {
		if b.claimedBy == "" && b.held.GetLeaseUntil().AsTime().Before(now) {
			out = append(out, b.held)
		}
	}
	return out
}

// ClaimBridge writes this instance's claim on a lost bridge and reads the
// log up to it: it reports whether this instance's claim came first (then
// it releases the bridge).
func (l *Log) ClaimBridge(ctx context.Context, m *batonv1.BridgeHeld) (bool, error) {
	m = proto.CloneOf(m)
	m.ReleasedBy = l.instance
	if err := l.writeBridge(ctx, m); err != nil {
		return false, err
	}
	if err := l.Sync(ctx); err != nil {
		return false, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bridges[m.GetCommandId()]
	return b != nil && b.claimedBy == l.instance, nil
}

func (l *Log) writeBridge(ctx context.Context, m *batonv1.BridgeHeld) error {
	ev, err := events.New(Source, bridgeKeyPrefix+m.GetCommandId(), m, l.now())
	if err != nil {
		return fmt.Errorf("bridge of command %s: %w", m.GetCommandId(), err)
	}
	rec, err := events.Encode(l.topic, ev)
	if err != nil {
		return fmt.Errorf("bridge of command %s: %w", m.GetCommandId(), err)
	}
	if err := l.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("record bridge of command %s: %w", m.GetCommandId(), err)
	}
	return nil
}
