package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/events/eventscan"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/router/internal/config"
	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// TestHostileWritesAreRejectedAndCounted: every way of smuggling a CR,
// LF or NUL (or a header name with ':' or spaces) into a header, a
// variable or the state is refused with 400 before anything is
// published, and counted by operation and reason.
func TestHostileWritesAreRejectedAndCounted(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, method, path, body, op, reason string
	}{
		{"header value CRLF", "POST", "/v1/calls/c1/handoff", `{"headers":{"X-Intent":"a\r\nRefer-To: sip:evil@x"}}`, opHandoff, RejectInvalidHeader},
		{"header value LF", "POST", "/v1/calls/c1/handoff", `{"headers":{"X-Intent":"a\nRefer-To: sip:evil@x"}}`, opHandoff, RejectInvalidHeader},
		{"header value CR", "POST", "/v1/calls/c1/handoff", `{"headers":{"X-Intent":"a\rb"}}`, opHandoff, RejectInvalidHeader},
		{"header value NUL", "POST", "/v1/calls/c1/handoff", `{"headers":{"X-Intent":"a\u0000b"}}`, opHandoff, RejectInvalidHeader},
		{"header name with colon", "POST", "/v1/calls/c1/handoff", `{"headers":{"X-Intent: x":"a"}}`, opHandoff, RejectInvalidHeader},
		{"header name with space", "POST", "/v1/calls/c1/handoff", `{"headers":{"X Intent":"a"}}`, opHandoff, RejectInvalidHeader},
		{"header name with CRLF", "POST", "/v1/calls/c1/handoff", `{"headers":{"X-A\r\nRefer-To":"sip:evil@x"}}`, opHandoff, RejectInvalidHeader},
		{"variable CRLF", "POST", "/v1/calls/c1/handoff", `{"variables":{"intent":"a\r\nRefer-To: sip:evil@x"}}`, opHandoff, RejectInvalidVariable},
		{"variable key NUL", "POST", "/v1/calls/c1/handoff", `{"variables":{"a\u0000":"b"}}`, opHandoff, RejectInvalidVariable},
		{"destination CRLF", "POST", "/v1/calls/c1/handoff", `{"destination":"sip:a@pbx.example.com\r\nRefer-To: sip:evil@x"}`, opHandoff, RejectInvalidDestination},
		{"utterance NUL", "POST", "/v1/calls/c1/handoff", `{"utterance":"a\u0000b"}`, opHandoff, RejectInvalidUtterance},
		{"reason with LF", "POST", "/v1/calls/c1/handoff", `{"reason":"a\nb"}`, opHandoff, RejectInvalidReason},
		{"bad JSON", "POST", "/v1/calls/c1/handoff", `{"headers":`, opHandoff, RejectInvalidJSON},
		{"state value CRLF", "PATCH", "/v1/calls/c1/state", `{"tier":"a\r\nRefer-To: sip:evil@x"}`, opState, RejectInvalidState},
		{"state key LF", "PATCH", "/v1/calls/c1/state", `{"a\nb":"c"}`, opState, RejectInvalidState},
		{"state removed key NUL", "PATCH", "/v1/calls/c1/state", `{"a\u0000":null}`, opState, RejectInvalidState},
		{"metric tag CR", "POST", "/v1/calls/c1/metrics", `{"name":"m","value":1,"tags":{"a":"b\rc"}}`, opMetrics, RejectInvalidMetric},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.pub.events)
			counted := testutil.ToFloat64(f.metrics.Rejected.WithLabelValues(tc.op, tc.reason))
			resp, body := f.do(t, tc.method, tc.path, "tok-1", tc.body)
			require.Equal(t, 400, resp.StatusCode, "body %v", body)
			require.Len(t, f.pub.events, before, "nothing published")
			require.Equal(t, counted+1, testutil.ToFloat64(f.metrics.Rejected.WithLabelValues(tc.op, tc.reason)))
		})
	}
}

func TestUtteranceLineBreaksBecomeSpaces(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do(t, "POST", "/v1/calls/c1/handoff", "tok-1", `{"utterance":"I want\r\nto dispute\n\tmy bill"}`)
	require.Equal(t, 202, resp.StatusCode, "%v", body)
	req := f.pub.last().Data.(*batonv1.HandoffRequested)
	require.Equal(t, "I want to dispute my bill", req.GetUtterance())
}

func TestTooManyHandoffsIs403(t *testing.T) {
	f := newFixture(t)
	for i := range 2 {
		resp, body := f.do(t, "POST", "/v1/calls/c1/handoff", "tok-1", `{"destination":"support"}`)
		require.Equal(t, 202, resp.StatusCode, "handoff %d: %v", i, body)
		// The transfer fails: the call is the agent's again.
		v, _, _ := f.fold.View("c1")
		ev, err := events.New("baton/transfer", "c1", &batonv1.TransferOutcome{CommandId: v.Handoff.CommandID, CallId: "c1",
			Status: batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, SipCode: 603}, at)
		require.NoError(t, err)
		f.fold.Apply(t.Context(), ev)
		f.fold.Commit()
	}
	resp, body := f.do(t, "POST", "/v1/calls/c1/handoff", "tok-1", `{"destination":"support"}`)
	require.Equal(t, 403, resp.StatusCode, "%v", body)
	require.Equal(t, handoff.RefusedTooManyHandoffs, body["code"])
	_, h := f.do(t, "GET", "/v1/calls/c1/handoff", "tok-1", "")
	require.Equal(t, "refused", h["status"], "the fold refused it too")
	require.Equal(t, handoff.RefusedTooManyHandoffs, h["refused_code"])

	resp, body = f.do(t, "POST", "/v1/calls/c1/handoff", "tok-1", `{"destination":"sip:+19765550100@pbx.example.com"}`)
	require.Equal(t, 403, resp.StatusCode, "%v", body)
	require.Equal(t, handoff.RefusedNumberDenied, body["code"], "a denied number is named as such")
}

// FuzzAPIWrites posts arbitrary bodies to the three write operations; a
// write that is accepted publishes an event without CR, LF or NUL in any
// field, and the headers it carries pass as SIP headers.
func FuzzAPIWrites(f *testing.F) {
	f.Add(uint8(0), `{"headers":{"X-Intent":"a\r\nRefer-To: sip:evil@x"}}`)
	f.Add(uint8(0), `{"destination":"support","utterance":"line\nbreak","variables":{"a":"b"}}`)
	f.Add(uint8(1), `{"tier":"gold","x":null}`)
	f.Add(uint8(2), `{"name":"m","value":1,"tags":{"a":"b"}}`)
	c := config.Default("h")
	if err := pkgconfig.Parse("router.yaml", []byte(routerYAML), &c); err != nil {
		f.Fatal(err)
	}
	table, err := c.Table()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, op uint8, body string) {
		fx := newFuzzFixture(t, table)
		method, path := "POST", "/v1/calls/c1/handoff"
		switch op % 3 {
		case 1:
			method, path = "PATCH", "/v1/calls/c1/state"
		case 2:
			path = "/v1/calls/c1/metrics"
		}
		req := httptest.NewRequestWithContext(context.Background(), method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer tok-1")
		rec := httptest.NewRecorder()
		fx.api.ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted && rec.Code != http.StatusForbidden {
			if len(fx.pub.events) != 0 {
				t.Fatalf("%d but published", rec.Code)
			}
			return
		}
		for _, ev := range fx.pub.events {
			if field, ok := eventscan.Find(ev.Data); !ok {
				t.Fatalf("published %s with a control character: %s", ev.Type, field)
			}
			if m, ok := ev.Data.(*batonv1.HandoffRequested); ok {
				for name, v := range m.GetHeaders() {
					if err := sipx.ValidateCustom(name, v); err != nil {
						t.Fatalf("header %q accepted: %v", name, err)
					}
				}
			}
		}
	})
}

// newFuzzFixture is a Server over a fresh fold with call c1 live, without
// an HTTP listener.
func newFuzzFixture(t *testing.T, table *handoff.Table) *fixture {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	fold := handoff.New(table, logger)
	ev, err := events.New("baton/ingress", "c1", &batonv1.CallStarted{CallerNumber: "+15551230001"}, at)
	if err != nil {
		t.Fatal(err)
	}
	fold.Apply(t.Context(), ev)
	fold.Commit()
	pub := &foldPublisher{fold: fold}
	return &fixture{api: New(fold, table, pub, []string{"tok-1"}, logger, func() time.Time { return at }, nil), pub: pub, fold: fold}
}
