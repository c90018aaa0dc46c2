package stack

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDemoTellsEveryStory runs `baton dev --exit` as make run does (the
// demo agent in every call, SIPp as the SBC with demo_calls.csv, SIPp
// destinations for the warm transfers) on free ports, and checks that its
// eight calls took six different paths, each read back from ClickHouse:
// REFERs to the destinations the X-Intent and the caller's number pick,
// a busy warm transfer (486) that fell back to support, a warm transfer
// bridged to a destination that answered, a hand-back BYE that carried
// its X- header to the SBC, and a premium-rate number the router refused
// before the rules handed the call to the default; and that the summary
// prints one replay command per kind.
func TestDemoTellsEveryStory(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: needs sipp and clickhouse-server; run without -short")
	}
	requireTools(t, "sipp", "clickhouse-server")
	repo := repoRoot(t)
	var out bytes.Buffer
	opts := Options{BinDir: binaries(t, repo), RunDir: t.TempDir(), RepoDir: repo, Progress: &out}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range []string{"transfer", "router", "ingress"} {
				t.Logf("--- %s log (tail) ---\n%s", name, tail(filepath.Join(opts.RunDir, "logs", name+".log"), 40))
			}
			for _, name := range []string{"dest_answer_offered", "dest_busy"} {
				for _, ext := range []string{".log", ".errors.log", ".out"} {
					t.Logf("--- sipp %s%s ---\n%s", name, ext, tail(filepath.Join(opts.RunDir, "sipp", "destinations", name+ext), 20))
				}
			}
		}
	})
	start := time.Now()
	err := Demo(ctx, opts, DemoOptions{Calls: 8, Rate: 2, Exit: true, Agent: true}, &out)
	t.Logf("the demo took %v, the stack's start and stop included", time.Since(start).Round(time.Second))
	t.Log(out.String())
	require.NoError(t, err)
	text := out.String()

	// What the SBC saw: six REFERs (billing, tech-support, support, the
	// VIP desk, the busy call's fallback, the refused call's support), the
	// warm transfer's re-INVITE and the hand-back BYE.
	require.Contains(t, text, "the SBC received 6 REFERs, 1 re-INVITEs and 1 hand-back BYEs")
	require.Regexp(t, `REFER for \S+: Refer-To <sip:\+4930200200@agents\.example\.com\?[^>]*X-Intent=billing_dispute`, text)
	require.Regexp(t, `REFER for \S+: Refer-To <sip:\+4930999999@agents\.example\.com\?[^>]*X-Customer-Id=CUST-00007`, text,
		"the VIP caller reached the VIP desk although its intent is billing")
	require.Contains(t, text, "handed back, X-Handback-Reason cancel_subscription")

	// The summary, read back from ClickHouse, groups them.
	require.Contains(t, text, "8 calls, 5 kinds of handoff:")
	referred := storyLines(text, StoryReferred+": 4 calls")
	require.Len(t, referred, 6, "four calls, a replay line and a dashboard link")
	for i, want := range []string{"REFER billing succeeded (200 OK)", "REFER tech-support succeeded", "REFER support succeeded", "REFER vip-desk succeeded"} {
		require.Contains(t, referred[i], want)
	}
	require.Contains(t, referred[3], DemoVIPNumber)
	fallback := storyLines(text, StoryFallback+": 1 call")
	require.Len(t, fallback, 3)
	require.Contains(t, fallback[0], "INVITE sales failed (486 Busy Here), then REFER support succeeded (200 OK)")
	bridged := storyLines(text, StoryBridged+": 1 call")
	require.Len(t, bridged, 3)
	require.Contains(t, bridged[0], "INVITE fraud-team succeeded (200 OK); audio bridged PCMA/8000: ")
	// The caller's pcap crossed the bridge and the destination echoed it.
	m := regexp.MustCompile(`(\d+) packets caller to destination, (\d+) back`).FindStringSubmatch(bridged[0])
	require.NotNil(t, m, bridged[0])
	require.NotEqual(t, "0", m[1], "no caller audio reached the destination")
	require.NotEqual(t, "0", m[2], "no audio came back from the destination")
	handback := storyLines(text, StoryHandback+": 1 call")
	require.Len(t, handback, 3)
	require.Contains(t, handback[0], "BYE sbc-retention succeeded (200 OK)")
	refused := storyLines(text, StoryRefused+": 1 call")
	require.Len(t, refused, 3)
	require.Contains(t, refused[0], "sip:+19005550100@agents.example.com refused (number_denied), then REFER support succeeded (200 OK)")
	require.Len(t, replayLine.FindAllString(text, -1), 5, "one replay command per kind")
	require.Len(t, regexp.MustCompile(`or open it: http://127\.0\.0\.1:\d+/calls/\d+-\d+@127\.0\.0\.1\n`).FindAllString(text, -1), 5,
		"one dashboard link per kind")
}

// storyLines returns the summary's lines under one kind's header line
// ("kind: N calls").
func storyLines(text, header string) []string {
	_, rest, ok := strings.Cut(text, "\n  "+header+"\n")
	if !ok {
		return nil
	}
	block, _, _ := strings.Cut(rest, "\n\n")
	return strings.Split(strings.TrimSpace(block), "\n")
}

var replayLine = regexp.MustCompile(`replay one: bin/baton replay --call \S+ --brokers 127\.0\.0\.1:\d+`)
