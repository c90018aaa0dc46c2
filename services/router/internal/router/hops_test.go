package router

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/pkg/hops"
)

// With hops on, a committed decision's call is marked polled, decided and
// committed, in that order, once the command is visible.
func TestHopsMarkPolledDecidedCommitted(t *testing.T) {
	h := newHarness(t)
	path := filepath.Join(t.TempDir(), "hops")
	log, err := hops.FromEnv(func(string) string { return path })
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, log.Close()) })
	h.startWith(Options{Kafka: h.kcfg, Group: "baton-router-test", TransactionalID: "router-hops", Hops: log})
	committed := h.consumer(kgo.ReadCommitted())

	h.publish(h.callStarted("call-h"))
	next(t, committed, 1)

	at := map[string]time.Time{}
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			f := strings.Fields(line)
			if len(f) == 3 && f[1] == "call-h" {
				ns, err := strconv.ParseInt(f[2], 10, 64)
				require.NoError(t, err)
				at[f[0]] = time.Unix(0, ns)
			}
		}
		return len(at) == 3
	}, waitTimeout, 10*time.Millisecond, "marks so far: %v", at)
	require.False(t, at[hops.RouterDecided].Before(at[hops.RouterConsumed]), "decided after polled")
	require.False(t, at[hops.RouterCommitted].Before(at[hops.RouterDecided]), "committed after decided")
}
