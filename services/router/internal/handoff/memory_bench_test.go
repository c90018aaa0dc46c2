package handoff

import (
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// BenchmarkHeapPerCall measures the heap one live call holds in a fold
// after a typical REFER handoff (start, two marks, request, command,
// accepted, progress, succeeded), without a transition history (the
// owner's fold) and with the call view's (32). It reports bytes/call.
func BenchmarkHeapPerCall(b *testing.B) {
	for _, history := range []int{0, 32} {
		b.Run(fmt.Sprintf("history=%d", history), func(b *testing.B) {
			const calls = 10_000
			var perCall float64
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				f := New(testTable(b), slog.New(slog.DiscardHandler)).WithHistory(history)
				at := time.Unix(1_800_000_000, 0)
				for i := range calls {
					id := fmt.Sprintf("call-%06d", i)
					apply := func(msg proto.Message) []Decision {
						ev, err := events.New("baton/bench", id, msg, at)
						if err != nil {
							b.Fatal(err)
						}
						return f.Apply(b.Context(), ev)
					}
					apply(started(id, map[string]string{"Customer-Id": "C-1", "Intent": "billing"}))
					apply(&batonv1.AgentConnected{CallId: id, StreamSid: "MZ1"})
					apply(&batonv1.AgentMarkPlayed{CallId: id, Name: "greeting"})
					apply(&batonv1.AgentMarkPlayed{CallId: id, Name: "goodbye"})
					ds := apply(&batonv1.HandoffRequested{RequestId: "r-" + id, Destination: "support", AfterMark: "goodbye", MarkWait: "played"})
					cmd := ds[0].Msg.(*batonv1.HandoffCommand)
					for _, st := range []batonv1.OutcomeStatus{batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED,
						batonv1.OutcomeStatus_OUTCOME_STATUS_PROGRESS, batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED} {
						apply(&batonv1.TransferOutcome{CommandId: cmd.GetCommandId(), CallId: id, Status: st, SipCode: 200})
					}
					f.Commit()
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perCall = float64(after.HeapAlloc-before.HeapAlloc) / calls
				runtime.KeepAlive(f)
			}
			b.ReportMetric(perCall, "bytes/call")
		})
	}
}
