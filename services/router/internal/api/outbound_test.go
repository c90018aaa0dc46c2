package api

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/router/internal/config"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

const outboundYAML = routerYAML + `
outbound:
  trunks:
    - name: carrier-a
      allow: ["+1555*", "sip:*@pbx.example.com"]
      deny_numbers: ["+1555900"]
      caller_ids: ["+15550001111", "+15550002222"]
      headers:
        X-Campaign: "{campaign}"
        X-Baton-Call: "$call_id"
      answer_timeout: 20s
      max_calls_per_second: 1
      burst: 2
`

// newOutboundFixture is newFixture's API with the outbound policy of
// outboundYAML.
func newOutboundFixture(t *testing.T) *fixture {
	t.Helper()
	c := config.Default("h")
	require.NoError(t, pkgconfig.Parse("router.yaml", []byte(outboundYAML), &c))
	table, err := c.Table()
	require.NoError(t, err)
	policy, err := c.OutboundPolicy()
	require.NoError(t, err)
	logger := slog.New(slog.DiscardHandler)
	fold := handoff.New(table, logger)
	pub := &foldPublisher{fold: fold}
	metrics := NewMetrics(prometheus.NewRegistry())
	a := New(fold, table, pub, []string{"tok-1"}, logger, func() time.Time { return at }, metrics).WithOutbound(policy)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, api: a, pub: pub, fold: fold, metrics: metrics}
}

// TestPostOutboundPublishesTheRequest: an admitted call is published as an
// OutboundCallRequested keyed by the new call id, with the rendered
// headers, the default caller id and the trunk's answer timeout.
func TestPostOutboundPublishesTheRequest(t *testing.T) {
	f := newOutboundFixture(t)
	resp, body := f.do(t, "POST", "/v1/calls", "tok-1",
		`{"trunk":"carrier-a","to":"+15551234567","agent":"sales-bot","variables":{"campaign":"renewals"}}`)
	require.Equal(t, 202, resp.StatusCode, body)
	callID, _ := body["call_id"].(string)
	require.NotEmpty(t, callID)
	require.Equal(t, "/v1/calls/"+callID, resp.Header.Get("Location"))
	require.Equal(t, "+15550001111", body["from"])
	require.EqualValues(t, 20000, body["answer_timeout_ms"])

	ev := f.pub.last()
	require.Equal(t, callID, ev.Subject)
	msg, ok := ev.Data.(*batonv1.OutboundCallRequested)
	require.True(t, ok, "%T", ev.Data)
	require.Equal(t, body["request_id"], msg.GetRequestId())
	require.Equal(t, "+15551234567", msg.GetTo())
	require.Equal(t, "sales-bot", msg.GetAgent())
	require.Equal(t, 20*time.Second, msg.GetAnswerTimeout().AsDuration())
	headers := map[string]string{}
	for _, h := range msg.GetHeaders() {
		headers[h.GetName()] = h.GetValue()
	}
	require.Equal(t, map[string]string{"X-Campaign": "renewals", "X-Baton-Call": callID}, headers)
	require.Equal(t, map[string]string{"campaign": "renewals"}, msg.GetVariables())
}

// TestPostOutboundRefusals: every refusal answers a problem with its code
// and publishes nothing.
func TestPostOutboundRefusals(t *testing.T) {
	f := newOutboundFixture(t)
	for _, tc := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"premium number", `{"trunk":"carrier-a","to":"+15559001234"}`, 403, "number_denied"},
		{"global deny list", `{"trunk":"carrier-a","to":"sip:+19761234567@pbx.example.com"}`, 403, "number_denied"},
		{"international", `{"trunk":"carrier-a","to":"+442071234567"}`, 403, "number_not_allowed"},
		{"caller id", `{"trunk":"carrier-a","to":"+15551234567","from":"+15550003333"}`, 403, "caller_id_not_allowed"},
		{"unknown trunk", `{"trunk":"other","to":"+15551234567"}`, 404, "unknown_trunk"},
		{"header smuggling", `{"trunk":"carrier-a","to":"+15551234567","variables":{"campaign":"a\r\nX-Evil: 1"}}`, 400, ""},
		{"bad to", `{"trunk":"carrier-a","to":"sip:1@pbx.example.com;maddr=evil.example"}`, 400, "invalid_to"},
		{"timeout over the trunk's", `{"trunk":"carrier-a","to":"+15551234567","answer_timeout_ms":20001}`, 400, "invalid_answer_timeout"},
		{"bad agent", `{"trunk":"carrier-a","to":"+15551234567","agent":"a b"}`, 400, ""},
		{"unknown field", `{"trunk":"carrier-a","to":"+15551234567","ring":1}`, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.pub.events)
			resp, body := f.do(t, "POST", "/v1/calls", "tok-1", tc.body)
			require.Equal(t, tc.status, resp.StatusCode, body)
			require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
			if tc.code != "" {
				require.Equal(t, tc.code, body["code"], body)
			}
			require.NotEmpty(t, body["detail"])
			require.Len(t, f.pub.events, before, "a refused request publishes nothing")
		})
	}
	require.InDelta(t, 1, testutil.ToFloat64(f.metrics.Rejected.WithLabelValues(opOutbound, "number_not_allowed")), 0)
}

// TestPostOutboundRateCap: burst 2 at one instant, the third is 429 with
// Retry-After; a second later (the API's clock) one more goes.
func TestPostOutboundRateCap(t *testing.T) {
	c := config.Default("h")
	require.NoError(t, pkgconfig.Parse("router.yaml", []byte(outboundYAML), &c))
	table, err := c.Table()
	require.NoError(t, err)
	policy, err := c.OutboundPolicy()
	require.NoError(t, err)
	now := at
	logger := slog.New(slog.DiscardHandler)
	fold := handoff.New(table, logger)
	a := New(fold, table, &foldPublisher{fold: fold}, []string{"tok-1"}, logger, func() time.Time { return now }, nil).WithOutbound(policy)
	post := func() *httptest.ResponseRecorder {
		req := httptest.NewRequestWithContext(t.Context(), "POST", "/v1/calls",
			strings.NewReader(`{"trunk":"carrier-a","to":"+15551234567"}`))
		req.Header.Set("Authorization", "Bearer tok-1")
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, req)
		return rec
	}
	require.Equal(t, 202, post().Code)
	require.Equal(t, 202, post().Code)
	rec := post()
	require.Equal(t, 429, rec.Code, rec.Body.String())
	require.Equal(t, "1", rec.Header().Get("Retry-After"))
	require.Contains(t, rec.Body.String(), `"code":"rate_limited"`)
	now = now.Add(time.Second)
	require.Equal(t, 202, post().Code)
	require.Equal(t, 429, post().Code)
}

// TestPostOutboundNeedsAToken: the same bearer authentication as every
// operation.
func TestPostOutboundNeedsAToken(t *testing.T) {
	f := newOutboundFixture(t)
	resp, _ := f.do(t, "POST", "/v1/calls", "", `{"trunk":"carrier-a","to":"+15551234567"}`)
	require.Equal(t, 401, resp.StatusCode)
	resp, _ = f.do(t, "POST", "/v1/calls", "wrong", `{"trunk":"carrier-a","to":"+15551234567"}`)
	require.Equal(t, 401, resp.StatusCode)
	resp, _ = f.do(t, "GET", "/v1/calls", "tok-1", "")
	require.Equal(t, 405, resp.StatusCode)
	require.Empty(t, f.pub.events)
}
