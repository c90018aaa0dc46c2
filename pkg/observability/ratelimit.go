package observability

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// RateLog lets through at most perSecond records a second and counts the
// ones it held back, so the next record that passes can say how many: a
// flood of bad packets from a stranger cannot flood the log.
type RateLog struct {
	perSecond int

	mu         sync.Mutex
	window     time.Time
	n          int
	suppressed int
}

// NewRateLog lets perSecond records a second through.
func NewRateLog(perSecond int) *RateLog { return &RateLog{perSecond: perSecond} }

// Allow reports whether a record may be written now and, if so, how many
// were held back since the last one written.
func (l *RateLog) Allow() (bool, int) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= time.Second {
		l.window, l.n = now, 0
	}
	if l.n >= l.perSecond {
		l.suppressed++
		return false, 0
	}
	l.n++
	s := l.suppressed
	l.suppressed = 0
	return true, s
}

// Log writes msg at INFO if the rate allows, with "suppressed" when
// records were held back before it. It takes no context: it is called
// where a packet is judged, before any request context exists.
func (l *RateLog) Log(logger *slog.Logger, msg string, args ...any) {
	ok, suppressed := l.Allow()
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	logger.Info(msg, args...)
}

// QuietSIP is the handler of the logger given to sipgo. sipgo attaches the
// whole packet ("data") to parse errors and logs them at ERROR, and the
// parse error itself quotes the packet's first line, so a stranger could
// write what it likes into the logs, as fast as it can send: the packet is
// replaced by its length (data_bytes), the error is cut before its first
// quote, and records that carried a packet, like every ERROR record, go
// through lim.
func QuietSIP(next slog.Handler, lim *RateLog) slog.Handler {
	return quietSIP{next: next, lim: lim}
}

type quietSIP struct {
	next slog.Handler
	lim  *RateLog
}

func (h quietSIP) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h quietSIP) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	packet := false
	r.Attrs(func(a slog.Attr) bool {
		packet = packet || a.Key == "data"
		return true
	})
	r.Attrs(func(a slog.Attr) bool {
		switch {
		case a.Key == "data":
			out.AddAttrs(slog.Int("data_bytes", len(a.Value.String())))
		case packet && a.Key == "error":
			out.AddAttrs(slog.String("error", unquoted(a.Value.String())))
		default:
			out.AddAttrs(a)
		}
		return true
	})
	if packet || r.Level >= slog.LevelError {
		ok, suppressed := h.lim.Allow()
		if !ok {
			return nil
		}
		if suppressed > 0 {
			out.AddAttrs(slog.Int("suppressed", suppressed))
		}
	}
	return h.next.Handle(ctx, out)
}

func (h quietSIP) WithAttrs(as []slog.Attr) slog.Handler {
	return quietSIP{next: h.next.WithAttrs(as), lim: h.lim}
}

func (h quietSIP) WithGroup(name string) slog.Handler {
	return quietSIP{next: h.next.WithGroup(name), lim: h.lim}
}

// unquoted is s up to its first quote: sipgo's parse errors quote the
// packet ("transmission beginning '...' is not a SIP message").
func unquoted(s string) string {
	if i := strings.IndexAny(s, "'\"`"); i >= 0 {
		return s[:i] + "(packet text removed)"
	}
	return s
}
