package dashboard

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ScreenshotEnv names a path the test copies its screenshot to; the copy
// in docs/img/dashboard.png is made with it.
const ScreenshotEnv = "BATON_DASHBOARD_SCREENSHOT"

// chromiumTimeout bounds one headless Chromium run.
const chromiumTimeout = 90 * time.Second

// chromium finds Debian's chromium; without it the test fails (only -short
// skips it).
func chromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs chromium and clickhouse-server; run without -short")
	}
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("the dashboard page test needs Debian's chromium (apt-get install chromium), or set CHROMIUM; " +
		"`go test -short` skips it")
	return ""
}

// headless runs chromium with args on url and returns its stdout.
func headless(t *testing.T, bin, url string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), chromiumTimeout)
	defer cancel()
	all := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(),
	}, args...)
	cmd := exec.CommandContext(ctx, bin, append(all, url)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "chromium: %s", stderr.String())
	return out
}

var (
	rectRe     = regexp.MustCompile(`<(?:rect|path) [^>]*class="bar ([a-z-]+)"[^>]*>`)
	attrRe     = regexp.MustCompile(`(data-[a-z0-9-]+)="([^"]*)"`)
	rowRe      = regexp.MustCompile(`<tr class="handoff" data-call-id="([^"]*)"`)
	agentRowRe = regexp.MustCompile(`<tr class="(agent-[a-z]+)"[^>]*>`)
)

// agentRows returns the data-* attributes of every row of the agent
// tables, by row class, as "key=value ..." in attribute order.
func agentRows(dom string) map[string][]string {
	out := map[string][]string{}
	for _, m := range agentRowRe.FindAllStringSubmatch(dom, -1) {
		var kv []string
		for _, a := range attrRe.FindAllStringSubmatch(m[0], -1) {
			kv = append(kv, strings.TrimPrefix(a[1], "data-")+"="+a[2])
		}
		out[m[1]] = append(out[m[1]], strings.Join(kv, " "))
	}
	return out
}

// bars returns the data-* attributes of every drawn bar, by bar class.
func bars(dom string) map[string][]map[string]string {
	out := map[string][]map[string]string{}
	for _, m := range rectRe.FindAllStringSubmatch(dom, -1) {
		attrs := map[string]string{}
		for _, a := range attrRe.FindAllStringSubmatch(m[0], -1) {
			attrs[a[1]] = a[2]
		}
		out[m[1]] = append(out[m[1]], attrs)
	}
	return out
}

// The page in headless Chromium draws every panel from the seed with the
// right numbers, and a screenshot shows it.
func TestPageInChromium(t *testing.T) {
	bin := chromium(t)
	conn := seeded(t)
	srv := httptest.NewServer(NewHandler(New(conn), nil, nil, slog.New(slog.DiscardHandler), func() time.Time { return to }))
	defer srv.Close()
	url := srv.URL + "/?from=" + strconv.FormatInt(from.Unix(), 10) + "&to=" + strconv.FormatInt(to.Unix(), 10) + "&limit=3"

	dom := string(headless(t, bin, url, "--dump-dom"))
	require.Contains(t, dom, "<svg", "no chart drawn:\n%s", dom)
	b := bars(dom)

	type reasonBar struct{ hour, reason, count string }
	var reasons []reasonBar
	for _, a := range b["reason-bar"] {
		reasons = append(reasons, reasonBar{a["data-hour"], a["data-reason"], a["data-count"]})
	}
	require.Equal(t, []reasonBar{
		{"2025-06-01T10:00:00Z", "billing", "2"},
		{"2025-06-01T11:00:00Z", "billing", "1"},
		{"2025-06-01T11:00:00Z", "technical", "2"},
		{"2025-06-01T12:00:00Z", "complaint", "2"},
		{"2025-06-01T12:00:00Z", "fraud", "1"},
	}, reasons)

	type rateBar struct{ destination, method, rate, succeeded, failed, pending string }
	var rates []rateBar
	for _, a := range b["success-bar"] {
		rates = append(rates, rateBar{a["data-destination"], a["data-method"], a["data-rate"], a["data-succeeded"], a["data-failed"], a["data-pending"]})
	}
	require.Equal(t, []rateBar{
		{"fraud", "INVITE", "1.0000", "1", "0", "0"},
		{"sales", "INVITE", "1.0000", "1", "0", "1"},
		{"sales", "REFER", "1.0000", "1", "0", "0"},
		{"support", "BYE", "1.0000", "1", "0", "0"},
		{"support", "REFER", "0.6667", "2", "1", "0"},
	}, rates)

	ttt := map[string]string{}
	for _, a := range b["ttt-bar"] {
		ttt[a["data-method"]+" "+a["data-quantile"]] = a["data-ms"]
	}
	require.Equal(t, map[string]string{
		"BYE p50": "50", "BYE p90": "50", "BYE p99": "50",
		"INVITE p50": "2500", "INVITE p90": "2500", "INVITE p99": "2500",
		"REFER p50": "1200", "REFER p90": "2000", "REFER p99": "2000",
	}, ttt)

	var dialed []string
	for _, a := range b["dialed-bar"] {
		dialed = append(dialed, a["data-number"]+"="+a["data-count"])
	}
	require.Equal(t, []string{"+15550100=3", "+15550199=2", "+15550123=1"}, dialed)

	var calls []string
	for _, m := range rowRe.FindAllStringSubmatch(dom, -1) {
		calls = append(calls, m[1])
	}
	require.Equal(t, []string{"call-h10", "call-h7", "call-h6"}, calls, "recent handoffs, newest first")

	var streams []reasonBar
	for _, a := range b["stream-bar"] {
		streams = append(streams, reasonBar{a["data-hour"], a["data-reason"], a["data-count"]})
	}
	require.Equal(t, []reasonBar{
		{"2025-06-01T10:00:00Z", "call_ended", "1"},
		{"2025-06-01T10:00:00Z", "connect_failed", "1"},
		{"2025-06-01T10:00:00Z", "handoff", "1"},
		{"2025-06-01T11:00:00Z", "agent_closed", "1"},
		{"2025-06-01T11:00:00Z", "write_timeout", "1"},
		{"2025-06-01T12:00:00Z", "connect_failed", "1"},
	}, streams, "agent streams by end reason")
	agent := agentRows(dom)
	require.Equal(t, []string{
		"reason=connect_failed action=hangup streams=2 calls=2",
		"reason=agent_closed action=handoff streams=1 calls=1",
		"reason=write_timeout action=play_then_hangup streams=1 calls=1",
	}, agent["agent-failure"])
	require.Equal(t, []string{
		"hour=2025-06-01T10:00:00Z streams=3 late=2 dropped=5 cleared=10 p95=1200 deepest=1200",
		"hour=2025-06-01T11:00:00Z streams=2 late=8 dropped=50 cleared=20 p95=6000 deepest=6000",
		"hour=2025-06-01T12:00:00Z streams=1 late=0 dropped=0 cleared=0 p95=0 deepest=0",
	}, agent["agent-playout"])
	require.Equal(t, []string{
		"name=llm_latency_ms samples=4 avg=400 p95=1000",
		"name=sentiment samples=2 avg=-0.125 p95=0.25",
	}, agent["agent-metric"])

	// The screenshot: 1280x900, and charts drawn in it (the bars' colors).
	shot := filepath.Join(t.TempDir(), "dashboard.png")
	headless(t, bin, url, "--screenshot="+shot, "--window-size=1280,900")
	f, err := os.Open(shot)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	img, err := png.Decode(f)
	require.NoError(t, err)
	require.Equal(t, image.Rect(0, 0, 1280, 900), img.Bounds())
	require.Positive(t, countColor(img, 0x3b, 0x6f, 0xd8), "no pixel of the first series' blue: charts not drawn")
	require.Positive(t, countColor(img, 0xe0, 0x7b, 0x2a), "no pixel of the second series' orange")
	t.Logf("screenshot: %s", shot)
	if dst := os.Getenv(ScreenshotEnv); dst != "" {
		data, err := os.ReadFile(shot)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(dst, data, 0o644))
	}
}

// countColor counts the pixels of img that are r, g, b.
func countColor(img image.Image, r, g, b uint8) int {
	n := 0
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			pr, pg, pb, _ := img.At(x, y).RGBA()
			if uint8(pr>>8) == r && uint8(pg>>8) == g && uint8(pb>>8) == b {
				n++
			}
		}
	}
	return n
}
