package dashboard

import (
	"bytes"
	"context"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/baton-voice/baton/pkg/opshttp"
)

//go:embed page.html
var pageHTML []byte

//go:embed call.html
var callHTML []byte

// The markers of call.html, in the order they appear: the call's SVG
// ladder and timeline table (pkg/callview, as `baton replay --html` draws
// them), then its events as JSON.
var (
	ladderMarker   = []byte("<!--LADDER-->")
	timelineMarker = []byte("<!--TIMELINE-->")
	callMarker     = []byte("/*CALL*/null")
)

// reportMarker is replaced in page.html by the report as JSON, so the
// first drawing needs no request; the page then refreshes from the API.
var reportMarker = []byte("/*REPORT*/null")

// DefaultSince is the window of a request that names none.
const DefaultSince = 24 * time.Hour

// queryTimeout bounds the panels of one request.
const queryTimeout = 30 * time.Second

// Handler serves the dashboard page, its JSON API and the metrics:
//
//	GET /                  the page, charts drawn from the report inline
//	GET /api/dashboard     the report as JSON
//	GET /calls/{id}        one call's ladder and timeline, as `baton replay
//	                       --html` draws them, from its events in ClickHouse
//	GET /api/calls/{id}    the same as JSON
//	GET /metrics           the writer's metrics (Prometheus)
//	GET /healthz           200: the process is alive
//	GET /readyz            200 when ready says so, else 503 and why
//
// The window is ?from=&to= (RFC 3339 or unix seconds; to defaults to now)
// or ?since=24h (a Go duration back from now); limit=N caps the lists;
// trunk=, destination=, method= and outcome= filter the handoff panels
// (FilterOf).
type Handler struct {
	queries *Queries
	metrics http.Handler
	ready   func(ctx context.Context) error
	logger  *slog.Logger
	now     func() time.Time
	mux     *http.ServeMux
	// token, when set, is what the page and the API require.
	token string
}

// NewHandler returns the handler; metrics (a promhttp handler) and ready
// may be nil, now is the clock.
func NewHandler(queries *Queries, metrics http.Handler, ready func(ctx context.Context) error, logger *slog.Logger,
	now func() time.Time) *Handler {
	h := &Handler{queries: queries, metrics: metrics, ready: ready, logger: logger, now: now, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /{$}", h.authorized(h.page))
	h.mux.HandleFunc("GET /api/dashboard", h.authorized(h.api))
	h.mux.HandleFunc("GET /calls/{id}", h.authorized(h.callPage))
	h.mux.HandleFunc("GET /api/calls/{id}", h.authorized(h.callAPI))
	h.mux.HandleFunc("GET /metrics", h.writeMetrics)
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	h.mux.HandleFunc("GET /readyz", h.readyz)
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// RequireToken makes the page and the API answer 401 unless the request
// carries token: Authorization: Bearer TOKEN, or Basic with TOKEN as the
// password (what a browser's prompt sends). /metrics, /healthz and /readyz
// stay open for scrapers and probes: they carry no call data.
func (h *Handler) RequireToken(token string) { h.token = token }

func (h *Handler) authorized(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.token != "" && !h.hasToken(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="baton dashboard", charset="UTF-8"`)
			http.Error(w, "unauthorized: send the dashboard token (Authorization: Bearer TOKEN)", http.StatusUnauthorized)
			return
		}
		next(w, r)
	}
}

func (h *Handler) hasToken(r *http.Request) bool {
	got := ""
	if _, pass, ok := r.BasicAuth(); ok {
		got = pass
	} else if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		got = v
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(h.token)) == 1
}

// MaxWindow is the longest window one request may ask for: each request
// runs six FINAL queries over it.
const MaxWindow = 31 * 24 * time.Hour

// MaxLimit caps the rows of the list panels.
const MaxLimit = 200

// Window reads the request's window and list limit.
func Window(q url.Values, now time.Time) (from, to time.Time, limit int, err error) {
	to = now
	if s := q.Get("to"); s != "" {
		if to, err = parseTime(s); err != nil {
			return from, to, 0, fmt.Errorf("to: %w", err)
		}
	}
	since := DefaultSince
	if s := q.Get("since"); s != "" {
		if since, err = time.ParseDuration(s); err != nil || since <= 0 {
			return from, to, 0, fmt.Errorf("since %q: want a positive duration such as 24h", s)
		}
	}
	from = to.Add(-since)
	if s := q.Get("from"); s != "" {
		if from, err = parseTime(s); err != nil {
			return from, to, 0, fmt.Errorf("from: %w", err)
		}
	}
	if !from.Before(to) {
		return from, to, 0, errors.New("from must be before to")
	}
	if to.Sub(from) > MaxWindow {
		return from, to, 0, fmt.Errorf("window %v: at most %v", to.Sub(from).Round(time.Hour), MaxWindow)
	}
	limit = DefaultLimit
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > MaxLimit {
			return from, to, 0, fmt.Errorf("limit %q: want 1-%d", s, MaxLimit)
		}
	}
	return from, to, limit, nil
}

// maxFilterLen bounds one filter value.
const maxFilterLen = 128

// FilterOf reads the request's filter: ?trunk=&destination=&method=&outcome=
// (empty or absent: any). method is REFER, INVITE or BYE; outcome
// succeeded, failed or pending; trunk and destination at most 128 bytes
// of printable text.
func FilterOf(q url.Values) (Filter, error) {
	f := Filter{Trunk: q.Get("trunk"), Destination: q.Get("destination"), Method: q.Get("method"), Outcome: q.Get("outcome")}
	for name, v := range map[string]string{"trunk": f.Trunk, "destination": f.Destination} {
		if len(v) > maxFilterLen || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return Filter{}, fmt.Errorf("%s: at most %d bytes, no control characters", name, maxFilterLen)
		}
	}
	switch f.Method {
	case "", "REFER", "INVITE", "BYE":
	default:
		return Filter{}, fmt.Errorf("method %q: want REFER, INVITE or BYE", f.Method)
	}
	switch f.Outcome {
	case "", "succeeded", "failed", "pending":
	default:
		return Filter{}, fmt.Errorf("outcome %q: want succeeded, failed or pending", f.Outcome)
	}
	return f, nil
}

func parseTime(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want RFC 3339 or unix seconds", s)
	}
	return t, nil
}

func (h *Handler) report(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	from, to, limit, err := Window(r.URL.Query(), h.now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	f, err := FilterOf(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil, false
	}
	rep, err := h.queries.ReportFilter(ctx, from, to, limit, f)
	if err != nil {
		// The server's error text names tables and settings: it goes to
		// the log, the client gets a generic answer.
		h.logger.ErrorContext(ctx, "dashboard report", "err", err)
		http.Error(w, "the ClickHouse query failed; the analytics log has the error", http.StatusBadGateway)
		return nil, false
	}
	// json.Marshal escapes <, > and &, so the result is safe inside the
	// page's <script> element.
	data, err := json.Marshal(rep)
	if err != nil {
		h.logger.ErrorContext(ctx, "dashboard report json", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return nil, false
	}
	return data, true
}

func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	data, ok := h.report(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(bytes.Replace(pageHTML, reportMarker, data, 1))
}

func (h *Handler) api(w http.ResponseWriter, r *http.Request) {
	data, ok := h.report(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(data)
}

// call reads the call the path names, answering the error itself.
func (h *Handler) call(w http.ResponseWriter, r *http.Request) (*Call, []byte, bool) {
	id := r.PathValue("id")
	if id == "" || len(id) > MaxCallIDLen {
		http.Error(w, fmt.Sprintf("call id: want 1-%d bytes", MaxCallIDLen), http.StatusBadRequest)
		return nil, nil, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	c, err := h.queries.Call(ctx, id)
	if errors.Is(err, ErrNoCall) {
		http.Error(w, "no events of this call in ClickHouse", http.StatusNotFound)
		return nil, nil, false
	}
	if err != nil {
		h.logger.ErrorContext(ctx, "dashboard call", "err", err)
		http.Error(w, "the ClickHouse query failed; the analytics log has the error", http.StatusBadGateway)
		return nil, nil, false
	}
	data, err := json.Marshal(c) // escapes <, > and &: safe in <script>
	if err != nil {
		h.logger.ErrorContext(ctx, "dashboard call json", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return nil, nil, false
	}
	return c, data, true
}

func (h *Handler) callPage(w http.ResponseWriter, r *http.Request) {
	c, data, ok := h.call(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// callview escapes every value from the records; the JSON escapes <,
	// > and &. fill never looks for a marker in what it put in.
	_, _ = w.Write(fill(callHTML, ladderMarker, []byte(c.LadderSVG()), timelineMarker, []byte(c.TimelineTable()), callMarker, data))
}

func (h *Handler) callAPI(w http.ResponseWriter, r *http.Request) {
	_, data, ok := h.call(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(data)
}

// fill replaces the first of each marker in page, taken in turn from
// where the last one was, with its value: pairs is marker, value, ...
// A marker the page lacks leaves the rest unchanged.
func fill(page []byte, pairs ...[]byte) []byte {
	out := make([]byte, 0, len(page))
	rest := page
	for i := 0; i+1 < len(pairs); i += 2 {
		before, after, ok := bytes.Cut(rest, pairs[i])
		if !ok {
			break
		}
		out = append(append(out, before...), pairs[i+1]...)
		rest = after
	}
	return append(out, rest...)
}

func (h *Handler) writeMetrics(w http.ResponseWriter, r *http.Request) {
	if h.metrics == nil {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		return
	}
	h.metrics.ServeHTTP(w, r)
}

// readyTimeout bounds the readiness checks of one request.
const readyTimeout = 2 * time.Second

func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if h.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := h.ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "not ready: "+err.Error()+"\n")
			return
		}
	}
	_, _ = io.WriteString(w, "ready\n")
}

// shutdownTimeout bounds the wait for requests under way at shutdown.
const shutdownTimeout = 5 * time.Second

// Serve serves h on l until ctx ends, then shuts down gracefully.
func Serve(ctx context.Context, l net.Listener, h http.Handler, logger *slog.Logger) error {
	srv := opshttp.NewHTTPServer(h, opshttp.DefaultLimits())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	select {
	case err := <-done:
		return fmt.Errorf("dashboard http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.WarnContext(ctx, "dashboard http shutdown", "err", err)
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("dashboard http: %w", err)
	}
	return nil
}
