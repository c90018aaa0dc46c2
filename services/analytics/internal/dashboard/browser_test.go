package dashboard

import (
	"bytes"
	"context"
	"image/png"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// ScreenshotsEnv names a directory the click-through test copies its
// screenshots to (docs/img for the README):
// BATON_DASHBOARD_SCREENSHOTS=$PWD/../../../../docs/img go test -run TestClickThrough ./internal/dashboard/
const ScreenshotsEnv = "BATON_DASHBOARD_SCREENSHOTS"

// TestClickThrough drives Debian's headless Chromium over the DevTools
// protocol (chromedp) as a person would: the page loads with every
// handoff, they pick method INVITE and apply (the URL then carries the
// filter, and the recent handoffs are INVITEs only), click a call id (its
// SIP ladder and timeline open, drawn as `baton replay --html` draws them
// from the events read back from ClickHouse, the ladder painted on
// screen), and go back (the filtered page again, the filter still chosen).
func TestClickThrough(t *testing.T) {
	bin := chromium(t)
	conn := seeded(t)
	seedCallEvents(t, conn, "call-h10", at("12:40"),
		&batonv1.CallStarted{CallerNumber: "+4930555000105", CalleeNumber: "+15550100", Trunk: "carrier-a",
			SourceAddress: "192.0.2.10:5060", Variables: map[string]string{"Customer-Id": "CUST-58260", "Intent": "fraud_report"}},
		&batonv1.AgentConnected{CallId: "call-h10", StreamSid: "MZ10", Url: "wss://bot.example.com/media", Format: "audio/x-mulaw", ConnectMs: 14},
		&batonv1.HandoffRequested{CallId: "call-h10", RequestedBy: "agent-api", Reason: "fraud_report", Destination: "fraud",
			Utterance: "someone used my card"},
		&batonv1.HandoffCommand{CallId: "call-h10", CommandId: "h10", Destination: "fraud", Method: batonv1.Method_METHOD_INVITE,
			Route: "sip:fraud@pbx.example.com", Attempt: 1, Reason: "fraud_report"},
		&batonv1.TransferOutcome{CallId: "call-h10", CommandId: "h10", Method: batonv1.Method_METHOD_INVITE,
			Status: batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED, SipCode: 200, SipReason: "OK"},
		&batonv1.CallEnded{CallId: "call-h10", EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
	q, err := New(conn).WithContext([]string{"Customer-Id"})
	require.NoError(t, err)
	srv := httptest.NewServer(NewHandler(q, nil, nil, slog.New(slog.DiscardHandler), func() time.Time { return to }))
	defer srv.Close()

	alloc, cancel := chromedp.NewExecAllocator(t.Context(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1000))...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, chromiumTimeout)
	defer cancel()

	shots := t.TempDir()
	do := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		require.NoError(t, chromedp.Do(ctx, steps...))
	}
	text := func(a chromedp.Action[string]) string {
		t.Helper()
		v, err := chromedp.Run(ctx, a)
		require.NoError(t, err)
		return v
	}
	rows := func() []string {
		t.Helper()
		ids, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("tr.handoff")].map(r => r.dataset.callId)`))
		require.NoError(t, err)
		return ids
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(shots, name), png, 0o644))
	}
	page := srv.URL + "/?from=" + strconv.FormatInt(from.Unix(), 10) + "&to=" + strconv.FormatInt(to.Unix(), 10) + "&limit=10"

	do(chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS("tr.handoff")))
	all := rows()
	// Set a filter: method INVITE, applied.
	do(chromedp.SetValue(chromedp.CSS("#f-method"), "INVITE"), chromedp.Click(chromedp.CSS("#apply")))
	waitFor(t, ctx, `location.search.includes("method=INVITE") && document.querySelectorAll("tr.handoff").length > 0`)
	url := text(chromedp.Location())
	filtered := rows()
	active := text(chromedp.Text(chromedp.CSS("#active")))
	shot("dashboard-filtered.png")
	// Open the newest call's ladder and timeline.
	do(chromedp.Click(chromedp.CSS("a.call-link")))
	waitFor(t, ctx, `document.querySelectorAll("tr.event").length > 0 && document.querySelectorAll("#ladder svg line.msg").length > 0`)
	callID := text(chromedp.Text(chromedp.CSS("#call-id")))
	types, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("tr.event")].map(r => r.dataset.type)`))
	require.NoError(t, err)
	// The arrows' labels, top to bottom (the lane names are bold).
	arrows, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll("#ladder svg text[text-anchor=middle]:not([font-weight])")].map(e => e.textContent)`))
	require.NoError(t, err)
	notes, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll("#ladder svg circle")].map(c => c.nextElementSibling.textContent)`))
	require.NoError(t, err)
	// The ladder is laid out on screen: inside the first screenful, as
	// wide as replay draws it.
	ladderBox, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](
		`(r => [r.top, r.bottom, r.width].map(Math.round))(document.querySelector("#ladder svg").getBoundingClientRect())`))
	require.NoError(t, err)
	steps, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll("#replay-timeline tr")].slice(1).map(r => r.cells[3].textContent)`))
	require.NoError(t, err)
	shot("dashboard-call.png")
	callPNG, err := os.ReadFile(filepath.Join(shots, "dashboard-call.png"))
	require.NoError(t, err)
	callImg, err := png.Decode(bytes.NewReader(callPNG))
	require.NoError(t, err)
	// And back.
	// The browser's back (history.back(); chromedp's NavigateBack waits
	// for a load event a page restored from the back-forward cache never
	// fires). The evaluation may end with the page: waitFor sees it land.
	_, _ = chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`void setTimeout(() => history.back(), 0)`))
	waitFor(t, ctx, `location.pathname === "/" && document.querySelectorAll("tr.handoff").length > 0`)
	// Read with plain evaluations: chromedp's DOM queries wait on frame
	// events a page from the back-forward cache does not send again.
	backURL := text(chromedp.Evaluate[string](`location.href`))
	back := rows()
	method := text(chromedp.Evaluate[string](`document.getElementById("f-method").value`))

	require.Equal(t, []string{"call-h10", "call-h7", "call-h6", "call-h5", "call-h4", "call-h3", "call-h2", "call-h1"}, all)
	require.Contains(t, url, "method=INVITE")
	require.Contains(t, url, "from="+strconv.FormatInt(from.Unix(), 10), "the window stays with the filter")
	require.Equal(t, []string{"call-h10", "call-h7", "call-h5"}, filtered, "INVITE handoffs only, newest first")
	require.Equal(t, "filtered: method=INVITE", active)
	require.Equal(t, "call-h10", callID)
	require.Equal(t, []string{"baton.call.started.v1", "baton.agent.connected.v1", "baton.handoff.requested.v1", "baton.handoff.command.v1",
		"baton.transfer.outcome.v1", "baton.call.ended.v1"}, types)
	require.Equal(t, []string{"INVITE (2 X- headers)", "CallStarted", "200 OK", "INVITE -> fraud", "BYE", "200 OK"}, arrows,
		"the SIP ladder, as baton replay draws it")
	require.Equal(t, []string{"agent stream open", "handoff requested: fraud_report", "bridged"}, notes)
	require.Len(t, steps, 6)
	require.Equal(t, "call started: +4930555000105 -> +15550100 from 192.0.2.10:5060 (trunk carrier-a) vars [Customer-Id=CUST-58260 Intent=fraud_report]", steps[0])
	require.Equal(t, `command h10: INVITE to fraud (sip:fraud@pbx.example.com) attempt 1, reason "fraud_report", headers []`, steps[3])
	require.Less(t, ladderBox[0], 1000, "the ladder starts in the first screenful")
	require.Greater(t, ladderBox[1], ladderBox[0])
	require.Equal(t, 970, ladderBox[2], "replay's ladder width")
	require.Positive(t, countColor(callImg, 0xcc, 0x66, 0x00), "no pixel of the ladder's note dots: the ladder is not painted")
	require.Equal(t, url, backURL)
	require.Equal(t, filtered, back)
	require.Equal(t, "INVITE", method)

	if dst := os.Getenv(ScreenshotsEnv); dst != "" {
		for _, name := range []string{"dashboard-filtered.png", "dashboard-call.png"} {
			data, err := os.ReadFile(filepath.Join(shots, name))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dst, name), data, 0o644))
		}
	}
	t.Logf("screenshots in %s", shots)
}

// waitFor evaluates the JavaScript predicate until it is true, through
// the navigation a click starts (an evaluation then fails and is tried
// again); ctx bounds the wait.
func waitFor(t *testing.T, ctx context.Context, predicate string) {
	t.Helper()
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](predicate))
		if err == nil && ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never held (last error %v)", predicate, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
