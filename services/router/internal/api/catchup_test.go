package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	"github.com/baton-voice/baton/services/router/internal/config"
)

// laggingView does not know c1 until CatchUp (the view's next poll) has
// run; caughtUp says whether CatchUp succeeds.
type laggingView struct {
	*fakeView
	caughtUp bool
	asked    int
}

func (v *laggingView) CatchUp(context.Context, string) bool {
	v.asked++
	if v.caughtUp {
		v.mu.Lock()
		v.live = true
		v.mu.Unlock()
	}
	return v.caughtUp
}

// A call the view does not know yet is looked up again once the view has
// caught up with the log (never a wrong 404); when it cannot catch up in
// time the answer is 503 with Retry-After; a call unknown after catching
// up is 404.
func TestUnknownCallWaitsForTheView(t *testing.T) {
	c := config.Default("h")
	require.NoError(t, pkgconfig.Parse("router.yaml", []byte(routerYAML), &c))
	table, err := c.Table()
	require.NoError(t, err)
	get := func(v Calls, id string) *httptest.ResponseRecorder {
		a := New(v, table, &recorder{}, []string{"tok"}, slog.New(slog.DiscardHandler), time.Now, NewMetrics(prometheus.NewRegistry()))
		req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v1/calls/"+id, nil)
		req.Header.Set("Authorization", "Bearer tok")
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, req)
		return rec
	}
	behind := &laggingView{fakeView: newFakeView(false), caughtUp: true}
	behind.live = false
	require.Equal(t, http.StatusOK, get(behind, "c1").Code, "found once the view caught up")
	require.Equal(t, 1, behind.asked)

	stuck := &laggingView{fakeView: newFakeView(false)}
	stuck.live = false
	rec := get(stuck, "c1")
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.Equal(t, "1", rec.Header().Get("Retry-After"))

	unknown := &laggingView{fakeView: newFakeView(false), caughtUp: true}
	require.Equal(t, http.StatusNotFound, get(unknown, "nobody").Code, "unknown after catching up")
}
