package transfer

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// stuckBridges is a BridgeLog whose writes wait for their context, as a
// produce does while the broker is down.
type stuckBridges struct{ deadlines []time.Duration }

func (s *stuckBridges) wait(ctx context.Context) error {
	d, ok := ctx.Deadline()
	if !ok {
		return errors.New("no deadline: a broker outage would hold this forever")
	}
	s.deadlines = append(s.deadlines, time.Until(d))
	<-ctx.Done()
	return ctx.Err()
}

func (s *stuckBridges) HoldBridge(ctx context.Context, _ *batonv1.BridgeHeld) error {
	return s.wait(ctx)
}
func (s *stuckBridges) EndBridge(ctx context.Context, _ string) error { return s.wait(ctx) }
func (s *stuckBridges) LostBridges(time.Time) []*batonv1.BridgeHeld   { return nil }
func (s *stuckBridges) ClaimBridge(ctx context.Context, _ *batonv1.BridgeHeld) (bool, error) {
	return false, s.wait(ctx)
}

// A lease renewal during a broker outage gives up after produce_timeout,
// so the bridged loop goes on seeing the call's end and shutdown; the
// bridge is kept (the lease may pass, which the log says).
func TestLeaseRenewalIsBoundedByTheProduceTimeout(t *testing.T) {
	req := sip.NewRequest(sip.INVITE, sip.Uri{User: "agent", Host: "127.0.0.1", Port: 5090})
	req.AppendHeader(sip.NewHeader("Call-ID", "leg-1"))
	from := &sip.FromHeader{Address: sip.Uri{Host: "baton"}, Params: sip.NewParams()}
	from.Params.Add("tag", "b1")
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{User: "agent", Host: "127.0.0.1"}})
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	store := &stuckBridges{}
	w := &warmRun{execution: &execution{
		deps: &deps{bridges: store, bridgeLease: 15 * time.Second, produceTimeout: 50 * time.Millisecond, now: time.Now},
		log:  slog.New(slog.DiscardHandler),
		cmd:  &batonv1.HandoffCommand{CommandId: "cmd-1", Dialog: &batonv1.Dialog{CallId: "call-1"}},
	}}
	w.leg = &sipgo.DialogClientSession{Dialog: sipgo.Dialog{InviteRequest: req, InviteResponse: res}}

	done := make(chan bool, 1)
	go func() { done <- w.holdBridge(t.Context()) }()
	select {
	case kept := <-done:
		require.True(t, kept, "a renewal that failed keeps the bridge")
	case <-time.After(10 * time.Second):
		t.Fatal("the renewal waited for the broker without end")
	}
	require.Len(t, store.deadlines, 1)
	require.LessOrEqual(t, store.deadlines[0], 50*time.Millisecond)
}
