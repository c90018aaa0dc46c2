package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/config"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const routerYAML = `
destinations:
  - name: support
    route: sip:support@pbx.example.com
    headers:
      X-Intent: "{intent}"
allowlist:
  routes: ["sip:*@pbx.example.com"]
  deny_numbers: ["+1976"]
max_handoffs_per_call: 2
`

var at = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// foldPublisher stands in for Kafka and the router: every published event
// is recorded, then folded and committed, as the router would.
type foldPublisher struct {
	mu     sync.Mutex
	fold   *handoff.Fold
	events []events.Event
	fail   bool
}

func (p *foldPublisher) Publish(ctx context.Context, ev events.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail {
		return errors.New("broker down")
	}
	p.events = append(p.events, ev)
	p.fold.Apply(ctx, ev)
	p.fold.Commit()
	return nil
}

func (p *foldPublisher) last() events.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.events[len(p.events)-1]
}

type fixture struct {
	srv     *httptest.Server
	api     *Server
	pub     *foldPublisher
	fold    *handoff.Fold
	metrics *Metrics
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	c := config.Default("h")
	require.NoError(t, pkgconfig.Parse("router.yaml", []byte(routerYAML), &c))
	table, err := c.Table()
	require.NoError(t, err)
	logger := slog.New(slog.DiscardHandler)
	fold := handoff.New(table, logger)
	pub := &foldPublisher{fold: fold}
	metrics := NewMetrics(prometheus.NewRegistry())
	a := New(fold, table, pub, []string{"tok-1", " tok-2 ", ""}, logger, func() time.Time { return at }, metrics)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)

	// A live call and an ended one.
	start := func(id string) {
		ev, err := events.New("baton/ingress", id, &batonv1.CallStarted{
			CallerNumber: "+15551230001", CalleeNumber: "+15559870002",
			SipHeaders: []*batonv1.SipHeader{{Name: "X-Intent", Value: "billing"}, {Name: "Via", Value: "v1"}},
			Variables:  map[string]string{"Intent": "billing"},
		}, at)
		require.NoError(t, err)
		fold.Apply(t.Context(), ev)
	}
	start("c1")
	start("gone")
	ev, err := events.New("baton/ingress", "gone", &batonv1.CallEnded{CallId: "gone"}, at)
	require.NoError(t, err)
	fold.Commit()
	fold.Apply(t.Context(), ev)
	fold.Commit()
	return &fixture{srv: srv, api: a, pub: pub, fold: fold, metrics: metrics}
}

// reply is what a request got back; the body is read and closed.
type reply struct {
	StatusCode int
	Header     http.Header
}

func (f *fixture) do(t *testing.T, method, path, token, body string) (reply, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, f.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := f.srv.Client().Do(req)
	require.NoError(t, err)
	defer func() { require.NoError(t, resp.Body.Close()) }()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out map[string]any
	if len(data) > 0 {
		require.NoError(t, json.Unmarshal(data, &out), "body %s", data)
	}
	return reply{StatusCode: resp.StatusCode, Header: resp.Header}, out
}

func TestErrorsAreProblems(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
	}{
		{"no token", "GET", "/v1/calls/c1", "", "", 401},
		{"bad token", "GET", "/v1/calls/c1", "tok-3", "", 401},
		{"empty token is not a token", "GET", "/v1/calls/c1", " ", "", 401},
		{"unknown call", "GET", "/v1/calls/nope", "tok-1", "", 404},
		{"unknown call on write", "POST", "/v1/calls/nope/handoff", "tok-1", `{}`, 404},
		{"ended call", "GET", "/v1/calls/gone", "tok-1", "", 409},
		{"ended call on write", "PATCH", "/v1/calls/gone/state", "tok-1", `{"a":"b"}`, 409},
		{"ended call handoff status", "GET", "/v1/calls/gone/handoff", "tok-2", "", 409},
		{"bad JSON", "POST", "/v1/calls/c1/handoff", "tok-1", `{"destination":`, 400},
		{"unknown field", "POST", "/v1/calls/c1/handoff", "tok-1", `{"destnation":"support"}`, 400},
		{"trailing data", "POST", "/v1/calls/c1/metrics", "tok-1", `{"name":"a","value":1} {}`, 400},
		{"header injection", "POST", "/v1/calls/c1/handoff", "tok-1", `{"headers":{"X-Intent":"a\r\nVia: x"}}`, 400},
		{"not an X- header", "POST", "/v1/calls/c1/handoff", "tok-1", `{"headers":{"Contact":"<sip:evil@x>"}}`, 400},
		{"bad reason code", "POST", "/v1/calls/c1/handoff", "tok-1", `{"reason":"two words"}`, 400},
		{"metric without value", "POST", "/v1/calls/c1/metrics", "tok-1", `{"name":"sentiment"}`, 400},
		{"metric bad name", "POST", "/v1/calls/c1/metrics", "tok-1", `{"name":"9x","value":1}`, 400},
		{"state value with CRLF", "PATCH", "/v1/calls/c1/state", "tok-1", `{"a":"b\r\nc"}`, 400},
		{"empty state patch", "PATCH", "/v1/calls/c1/state", "tok-1", `{}`, 400},
		{"no such operation", "GET", "/v1/nothing", "tok-1", "", 404},
		{"wrong method", "DELETE", "/v1/calls/c1", "tok-1", "", 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.pub.events)
			resp, body := f.do(t, tc.method, tc.path, tc.token, tc.body)
			require.Equal(t, tc.status, resp.StatusCode, "body %v", body)
			require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
			require.Equal(t, float64(tc.status), body["status"])
			require.NotEmpty(t, body["title"])
			require.Len(t, f.pub.events, before, "nothing published")
			if tc.status == 401 {
				require.Equal(t, `Bearer realm="baton"`, resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
}

func TestReadTheCall(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do(t, "GET", "/v1/calls/c1", "tok-2", "")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	require.Equal(t, map[string]any{
		"call_id":       "c1",
		"caller_number": "+15551230001",
		"callee_number": "+15559870002",
		"sip_headers":   map[string]any{"x-intent": []any{"billing"}, "via": []any{"v1"}},
		"variables":     map[string]any{"Intent": "billing"},
		"state":         map[string]any{},
		"handoff":       map[string]any{"status": "none"},
	}, body)
}

func TestReadThePreCallData(t *testing.T) {
	f := newFixture(t)
	for id, msg := range map[string]*batonv1.PreCallData{
		"c1": {DataJson: `{"data":{"account":{"tier":"gold","open":2}}}`},
	} {
		ev, err := events.New("baton/router", id, msg, at)
		require.NoError(t, err)
		f.fold.Apply(t.Context(), ev)
	}
	f.fold.Commit()
	_, body := f.do(t, "GET", "/v1/calls/c1", "tok-1", "")
	require.Equal(t, map[string]any{"data": map[string]any{"account": map[string]any{"tier": "gold", "open": float64(2)}}}, body["results"])
	require.NotContains(t, body, "precall_error")
}

func TestWritesAreEventsTheFoldApplies(t *testing.T) {
	f := newFixture(t)

	resp, body := f.do(t, "PATCH", "/v1/calls/c1/state", "tok-1", `{"tier":"gold","draft":"x"}`)
	require.Equal(t, 202, resp.StatusCode, "%v", body)
	resp, _ = f.do(t, "PATCH", "/v1/calls/c1/state", "tok-1", `{"draft":null}`)
	require.Equal(t, 202, resp.StatusCode)
	ev := f.pub.last()
	require.Equal(t, events.TypeCallStateChanged, ev.Type)
	require.Equal(t, "c1", ev.Subject)
	require.Equal(t, Source, ev.Source)
	require.True(t, ev.Time.Equal(at))
	require.Equal(t, []string{"draft"}, ev.Data.(*batonv1.CallStateChanged).GetRemoved())
	_, call := f.do(t, "GET", "/v1/calls/c1", "tok-1", "")
	require.Equal(t, map[string]any{"tier": "gold"}, call["state"])

	resp, body = f.do(t, "POST", "/v1/calls/c1/metrics", "tok-1", `{"name":"sentiment","value":-0.5,"tags":{"model":"m1"}}`)
	require.Equal(t, 202, resp.StatusCode, "%v", body)
	m := f.pub.last().Data.(*batonv1.AgentMetric)
	require.Equal(t, "sentiment", m.GetName())
	require.InDelta(t, -0.5, m.GetValue(), 0)
	require.Equal(t, map[string]string{"model": "m1"}, m.GetTags())
	require.Equal(t, body["request_id"], m.GetRequestId())

	resp, body = f.do(t, "POST", "/v1/calls/c1/handoff", "tok-1",
		`{"destination":"support","reason":"billing_dispute","utterance":"a human please","variables":{"intent":"refund"},"headers":{"X-Intent":"agent"}}`)
	require.Equal(t, 202, resp.StatusCode, "%v", body)
	require.Equal(t, "/v1/calls/c1/handoff", resp.Header.Get("Location"))
	req := f.pub.last().Data.(*batonv1.HandoffRequested)
	require.Equal(t, body["request_id"], req.GetRequestId())
	require.Equal(t, "support", req.GetDestination())
	require.Equal(t, "billing_dispute", req.GetReason())
	require.Equal(t, "a human please", req.GetUtterance())
	require.Equal(t, RequestedBy, req.GetRequestedBy())

	_, h := f.do(t, "GET", "/v1/calls/c1/handoff", "tok-1", "")
	require.Equal(t, "requested", h["status"])
	require.Equal(t, "support", h["destination"])
	require.Equal(t, "REFER", h["method"])
	require.Equal(t, float64(1), h["attempt"])
	require.Equal(t, body["request_id"], h["request_id"])
	require.NotEmpty(t, h["command_id"])
}

func TestTargetsOutsideTheAllowlistAreRefusedAndRecorded(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do(t, "POST", "/v1/calls/c1/handoff", "tok-1", `{"destination":"sip:+19005550100@premium.example"}`)
	require.Equal(t, 403, resp.StatusCode)
	require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	require.Equal(t, handoff.RefusedRouteNotAllowed, body["code"])
	require.NotEmpty(t, body["request_id"])
	// The request is in the log; the fold refused it.
	require.Equal(t, events.TypeHandoffRequested, f.pub.last().Type)
	_, h := f.do(t, "GET", "/v1/calls/c1/handoff", "tok-1", "")
	require.Equal(t, "refused", h["status"])
	require.Equal(t, handoff.RefusedRouteNotAllowed, h["refused_code"])

	resp, body = f.do(t, "POST", "/v1/calls/c1/handoff", "tok-1", `{"destination":"sip:bob@pbx.example.com"}`)
	require.Equal(t, 202, resp.StatusCode, "%v", body)
	_, h = f.do(t, "GET", "/v1/calls/c1/handoff", "tok-1", "")
	require.Equal(t, "requested", h["status"])
	require.Equal(t, "sip:bob@pbx.example.com", h["route"])
}

func TestPublishFailureIs503(t *testing.T) {
	f := newFixture(t)
	f.pub.fail = true
	resp, body := f.do(t, "POST", "/v1/calls/c1/metrics", "tok-1", `{"name":"a","value":1}`)
	require.Equal(t, 503, resp.StatusCode)
	require.Equal(t, "unavailable", body["title"])
}

// TestOpenAPIDocumentMatchesTheRoutes: every operation the server routes
// is in api/openapi.yaml and every operation there is routed.
func TestOpenAPIDocumentMatchesTheRoutes(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "api", "openapi.yaml"))
	require.NoError(t, err)
	var doc struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	require.NoError(t, yaml.Unmarshal(data, &doc))
	require.True(t, strings.HasPrefix(doc.OpenAPI, "3."))
	var inDoc []string
	for path, ops := range doc.Paths {
		for method, op := range ops {
			if method == "parameters" {
				continue
			}
			inDoc = append(inDoc, strings.ToUpper(method)+" "+path)
			require.Contains(t, op, "responses", "%s %s", method, path)
		}
	}
	f := newFixture(t)
	var routed []string
	for _, r := range f.api.Routes() {
		routed = append(routed, r.Method+" "+r.Pattern)
		// The route is really in the mux: it answers something other than
		// the 404/405 of an unrouted operation.
		path := strings.ReplaceAll(r.Pattern, "{id}", "c1")
		req := httptest.NewRequestWithContext(t.Context(), r.Method, path, bytes.NewReader([]byte("{")))
		req.Header.Set("Authorization", "Bearer tok-1")
		rec := httptest.NewRecorder()
		f.api.ServeHTTP(rec, req)
		require.NotContains(t, []int{404, 405}, rec.Code, "%s %s", r.Method, r.Pattern)
	}
	sort.Strings(inDoc)
	sort.Strings(routed)
	require.Equal(t, inDoc, routed)
}
