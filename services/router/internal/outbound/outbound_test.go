package outbound

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/router/internal/handoff"
	"github.com/baton-voice/baton/services/router/internal/template"
)

func testTrunk(t *testing.T) Trunk {
	t.Helper()
	var allow []sipx.RoutePattern
	for _, src := range []string{"+1555*", "sip:*@pbx.example.com", `re:\+4420[0-9]{8}`} {
		p, err := sipx.NewRoutePattern(src)
		require.NoError(t, err)
		allow = append(allow, p)
	}
	campaign, err := template.Parse("{campaign}")
	require.NoError(t, err)
	callID, err := template.Parse("baton-$call_id")
	require.NoError(t, err)
	return Trunk{
		Name: "carrier-a", Allow: allow, Deny: []string{"+1555900", "+44209"},
		CallerIDs:     []string{"+15550001111", "+15550002222"},
		Headers:       []handoff.Header{{Name: "X-Baton-Call", Value: callID}, {Name: "X-Campaign", Value: campaign}},
		AnswerTimeout: 30 * time.Second,
	}
}

func TestAdmit(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	strict := testTrunk(t)
	strict.Name, strict.RefuseMissing = "strict", true
	p, err := New([]Trunk{testTrunk(t), strict})
	require.NoError(t, err)
	vars := map[string]string{"campaign": "renewals"}
	for _, tc := range []struct {
		name    string
		req     Request
		code    string
		status  int
		headers map[string]string
		from    string
		timeout time.Duration
	}{
		{name: "number on the allowlist", req: Request{CallID: "c1", Trunk: "carrier-a", To: "+15551234567", Variables: vars},
			headers: map[string]string{"X-Baton-Call": "baton-c1", "X-Campaign": "renewals"}, from: "+15550001111", timeout: 30 * time.Second},
		{name: "uri on the allowlist, second caller id, shorter timeout",
			req:     Request{Trunk: "carrier-a", To: "sip:200@pbx.example.com", From: "+15550002222", AnswerTimeout: 5 * time.Second},
			headers: map[string]string{"X-Baton-Call": "baton-", "X-Campaign": ""}, from: "+15550002222", timeout: 5 * time.Second},
		{name: "regexp pattern", req: Request{Trunk: "carrier-a", To: "+442012345678"}, from: "+15550001111", timeout: 30 * time.Second},
		{name: "unknown trunk", req: Request{Trunk: "nope", To: "+15551234567"}, code: CodeUnknownTrunk, status: 404},
		{name: "not a number or uri", req: Request{Trunk: "carrier-a", To: "hello"}, code: CodeInvalidTo, status: 400},
		{name: "uri with a header", req: Request{Trunk: "carrier-a", To: "sip:200@pbx.example.com?X-A=1"}, code: CodeInvalidTo, status: 400},
		{name: "crlf in to", req: Request{Trunk: "carrier-a", To: "+1555\r\n123"}, code: CodeInvalidTo, status: 400},
		{name: "premium prefix denied though allowlisted", req: Request{Trunk: "carrier-a", To: "+15559001234"}, code: CodeNumberDenied, status: 403},
		{name: "premium prefix denied in a uri", req: Request{Trunk: "carrier-a", To: "sip:+15559001234@pbx.example.com"}, code: CodeNumberDenied, status: 403},
		{name: "denied prefix with the regexp", req: Request{Trunk: "carrier-a", To: "+442091234567"}, code: CodeNumberDenied, status: 403},
		{name: "international not allowlisted", req: Request{Trunk: "carrier-a", To: "+4930123456"}, code: CodeNotAllowed, status: 403},
		{name: "glob smuggled host", req: Request{Trunk: "carrier-a", To: "sip:x@evil.example;a=@pbx.example.com"}, code: CodeInvalidTo, status: 400},
		{name: "other host", req: Request{Trunk: "carrier-a", To: "sip:200@evil.example.com"}, code: CodeNotAllowed, status: 403},
		{name: "caller id not the trunk's", req: Request{Trunk: "carrier-a", To: "+15551234567", From: "+15557777777"}, code: CodeCallerIDNotAllowed, status: 403},
		{name: "timeout over the trunk's", req: Request{Trunk: "carrier-a", To: "+15551234567", AnswerTimeout: 31 * time.Second}, code: CodeInvalidTimeout, status: 400},
		{name: "timeout under the minimum", req: Request{Trunk: "carrier-a", To: "+15551234567", AnswerTimeout: 999 * time.Millisecond}, code: CodeInvalidTimeout, status: 400},
		{name: "header value too long", req: Request{Trunk: "carrier-a", To: "+15551234567", Variables: map[string]string{"campaign": strings.Repeat("a", 1100)}},
			code: CodeInvalidHeader, status: 422},
		{name: "missing variable refused", req: Request{Trunk: "strict", To: "+15551234567"}, code: CodeMissingVariable, status: 422},
		{name: "missing variable present", req: Request{Trunk: "strict", To: "+15551234567", Variables: vars}, from: "+15550001111", timeout: 30 * time.Second,
			headers: map[string]string{"X-Baton-Call": "baton-", "X-Campaign": "renewals"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.Admit(tc.req, now)
			if tc.code != "" {
				r, ok := AsRefusal(err)
				require.True(t, ok, "want a refusal, got %v", err)
				require.Equal(t, tc.code, r.Code, r.Detail)
				require.Equal(t, tc.status, r.Status)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.from, got.From)
			require.Equal(t, tc.timeout, got.AnswerTimeout)
			if tc.headers != nil {
				h := map[string]string{}
				for _, sh := range got.Headers {
					h[sh.GetName()] = sh.GetValue()
				}
				require.Equal(t, tc.headers, h)
			}
		})
	}
}

// TestRateCap: the trunk places Burst calls at once, then one per 1/Rate;
// a call over the cap is refused 429 with the wait, and a refused request
// (denied number) spends nothing.
func TestRateCap(t *testing.T) {
	tr := testTrunk(t)
	tr.Rate, tr.Burst = 2, 3
	p, err := New([]Trunk{tr})
	require.NoError(t, err)
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	ok := Request{Trunk: "carrier-a", To: "+15551234567"}
	for i := range 3 {
		_, err := p.Admit(ok, now)
		require.NoError(t, err, "call %d of the burst", i+1)
	}
	_, err = p.Admit(ok, now)
	r, isRefusal := AsRefusal(err)
	require.True(t, isRefusal)
	require.Equal(t, CodeRateLimited, r.Code)
	require.Equal(t, 429, r.Status)
	require.Equal(t, 500*time.Millisecond, r.RetryAfter)

	// A denied number is refused for that, and takes no token.
	_, err = p.Admit(Request{Trunk: "carrier-a", To: "+15559001234"}, now.Add(500*time.Millisecond))
	r, _ = AsRefusal(err)
	require.Equal(t, CodeNumberDenied, r.Code)
	// Half a second refills one call, and only one.
	_, err = p.Admit(ok, now.Add(500*time.Millisecond))
	require.NoError(t, err)
	_, err = p.Admit(ok, now.Add(500*time.Millisecond))
	r, _ = AsRefusal(err)
	require.Equal(t, CodeRateLimited, r.Code)
}

func TestNewRefusesBadTrunks(t *testing.T) {
	tr := testTrunk(t)
	_, err := New([]Trunk{tr, tr})
	require.ErrorContains(t, err, "listed twice")
	tr.AnswerTimeout = 0
	_, err = New([]Trunk{tr})
	require.ErrorContains(t, err, "answer timeout")
}
