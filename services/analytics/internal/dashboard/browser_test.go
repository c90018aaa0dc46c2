package dashboard

import (
	"context"
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
// timeline opens with the events read back from ClickHouse), and go back
// (the filtered page again, the filter still chosen).
func TestClickThrough(t *testing.T) {
	bin := chromium(t)
	conn := seeded(t)
	seedCallEvents(t, conn, "call-h10", at("12:40"),
		&batonv1.CallStarted{CallerNumber: "+4930555000105", Variables: map[string]string{"Customer-Id": "CUST-58260", "Intent": "fraud_report"}},
		&batonv1.HandoffCommand{CallId: "call-h10", CommandId: "h10", Destination: "fraud", Method: batonv1.Method_METHOD_INVITE},
		&batonv1.TransferOutcome{CallId: "call-h10", CommandId: "h10", Status: batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED, SipCode: 200, SipReason: "OK"})
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
	// Open the newest call's timeline.
	do(chromedp.Click(chromedp.CSS("a.call-link")))
	waitFor(t, ctx, `document.querySelectorAll("tr.event").length > 0`)
	callID := text(chromedp.Text(chromedp.CSS("#call-id")))
	types, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("tr.event")].map(r => r.dataset.type)`))
	require.NoError(t, err)
	shot("dashboard-call.png")
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
	require.Equal(t, []string{"baton.call.started.v1", "baton.handoff.command.v1", "baton.transfer.outcome.v1"}, types)
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
