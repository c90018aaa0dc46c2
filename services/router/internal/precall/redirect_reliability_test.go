//go:build reliability

package precall

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/reliabilitytest"
)

// TestReliabilitySecurityWebhookRedirect (issue 14, finding 7): the
// pre-call webhook answers every call with a redirect (301, 302, 303, 307,
// 308) to another host, 127.0.0.2, which would answer with results of its
// own. Before, the fetcher followed it: a 307 handed that host the
// X-Api-Key and the caller's data, and its answer became the call's
// results. Now the other host gets no connection at all, and every call
// takes the failed-fetch path: PreCallData with an error naming the
// status, no data, no Location.
func TestReliabilitySecurityWebhookRedirect(t *testing.T) {
	const perCode = 20
	const apiKey = "k3y-reliability"
	codes := []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect}

	// The other host, on its own loopback address; it counts connections
	// as well as requests, so even a dial that sends nothing shows.
	var other struct {
		sync.Mutex
		conns, requests, keys, bodyBytes int
	}
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	require.NoError(t, err)
	elsewhere := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		other.Lock()
		other.requests++
		if r.Header.Get("X-Api-Key") != "" {
			other.keys++
		}
		other.bodyBytes += len(body)
		other.Unlock()
		_, _ = io.WriteString(w, `{"data":{"account":{"tier":"platinum"},"transfer_to":"+19005550100"}}`)
	}))
	_ = elsewhere.Listener.Close()
	elsewhere.Listener = ln
	elsewhere.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			other.Lock()
			other.conns++
			other.Unlock()
		}
	}
	elsewhere.Start()
	defer elsewhere.Close()

	// The webhook: the status is in the call id, call-<code>-<n>.
	var hook struct {
		sync.Mutex
		byCode    map[int]int
		keys      int
		bodyBytes int
	}
	hook.byCode = map[int]int{}
	webhook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var req struct {
			CallID string `json:"call_id"`
		}
		if err == nil {
			err = json.Unmarshal(body, &req)
		}
		var code, n int
		if err == nil {
			_, err = fmt.Sscanf(req.CallID, "call-%d-%d", &code, &n)
		}
		if err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		hook.Lock()
		hook.byCode[code]++
		if r.Header.Get("X-Api-Key") == apiKey {
			hook.keys++
		}
		hook.bodyBytes += len(body)
		hook.Unlock()
		http.Redirect(w, r, elsewhere.URL+"/steal?call="+req.CallID, code)
	}))
	defer webhook.Close()

	f, pub := runWith(t, Options{URL: webhook.URL + "/hook", Header: http.Header{"X-Api-Key": {apiKey}},
		Timeout: 2 * time.Second, MaxAge: time.Minute, MaxInFlight: 4, FetchedBy: "router-1"}, &calls{})
	calls := len(codes) * perCode
	for i := range calls {
		f.Started(startedEvent(t, fmt.Sprintf("call-%d-%d", codes[i%len(codes)], i), now))
	}
	failed := map[int]int{} // PreCallData with an error, by the status it names
	var withData, withLocation int
	for range calls {
		msg := next(t, pub)
		if msg.GetDataJson() != "" {
			withData++
		}
		if strings.Contains(msg.GetError(), "steal") || strings.Contains(msg.GetError(), "127.0.0.2") {
			withLocation++
		}
		for _, code := range codes {
			if strings.Contains(msg.GetError(), fmt.Sprintf("webhook answered %d", code)) &&
				strings.Contains(msg.GetError(), "redirects are refused") {
				failed[code]++
			}
		}
	}

	hook.Lock()
	defer hook.Unlock()
	other.Lock()
	defer other.Unlock()
	for _, code := range codes {
		require.Equal(t, perCode, hook.byCode[code], "webhook calls answered %d", code)
		require.Equal(t, perCode, failed[code], "calls failed for %d", code)
	}
	require.Equal(t, calls, hook.keys, "the webhook itself gets the key")
	require.Zero(t, withData, "a redirect target's answer became results")
	require.Zero(t, withLocation, "the Location was published")
	require.Zero(t, other.conns, "connections to the other host")
	require.Zero(t, other.requests, "requests to the other host")

	sent := make([]string, 0, len(codes))
	for _, code := range codes {
		sent = append(sent, fmt.Sprintf("%d x%d", code, hook.byCode[code]))
	}
	sort.Strings(sent)
	reliabilitytest.Report(t, reliabilitytest.Row{
		Item: 9, Test: t.Name(),
		Load: fmt.Sprintf("%d calls through the pre-call fetcher (4 in flight), webhook over HTTP on 127.0.0.1 with X-Api-Key", calls),
		Faults: "finding 7: the webhook answers every call with a redirect to another host (127.0.0.2) that would answer " +
			"results of its own (a premium transfer_to)",
		Inputs: fmt.Sprintf("redirects %s; Location http://%s/steal?call=<id>", strings.Join(sent, ", "), ln.Addr()),
		Lost: fmt.Sprintf("before (issue 14): the redirect was followed, a 307 handed the other host X-Api-Key and the caller's data "+
			"and its answer became the call's results; now the webhook got %d requests (%d bytes of caller data, key on %d), "+
			"the other host %d connections, %d requests, X-Api-Key %d times, %d body bytes; %d of %d calls took the failed-fetch path "+
			"(PreCallData error \"webhook answered 3xx: redirects are refused\"), %d with results, %d naming the Location",
			calls, hook.bodyBytes, hook.keys, other.conns, other.requests, other.keys, other.bodyBytes,
			sumCounts(failed), calls, withData, withLocation),
	})
}

func sumCounts(m map[int]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
