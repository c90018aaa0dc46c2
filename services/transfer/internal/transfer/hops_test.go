package transfer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/hops"
)

// With hops on, a REFER's call is marked when its command was polled and
// when the REFER went to the SIP client, and its NOTIFY fact when polled.
func TestHopsMarkCommandReferAndNotify(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "hops")
	log, err := hops.FromEnv(func(string) string { return path })
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, log.Close()) })
	h := start(t, 202, func(o *Options) { o.Hops = log })
	cmd := referCommand(h, "hops")
	h.command(t, cmd)
	h.sbc.next(t)
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)
	h.fact(t, cmd.CallId, &batonv1.NotifyReceived{CallId: cmd.CallId, Event: "refer",
		SubscriptionState: "terminated;reason=noresource", SipfragStatus: 200, SipfragReason: "OK"})
	requireOutcome(t, h.outcome(t, cmd.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)

	want := []string{hops.TransferConsumed, hops.TransferSending, hops.TransferNotify}
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[1] == cmd.CallId {
				got = append(got, f[0])
			}
		}
		return len(got) >= 3 && got[0] == want[0] && got[1] == want[1] && got[2] == want[2]
	}, 10*time.Second, 10*time.Millisecond, "hops of %s in order %v", cmd.CallId, want)
}
