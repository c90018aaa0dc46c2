// Package reload keeps the router's decision table current: it reloads
// the configuration file on SIGHUP and when the file's content changes.
// An invalid file never replaces a valid table; the reason is logged.
// Decisions load the table once per event (handoff.Source), and a handoff
// keeps the table it started with, so a reload never changes a handoff in
// flight.
package reload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-voice/baton/services/router/internal/handoff"
)

// Load reads and validates the file at path and builds its table; it
// returns the configuration's warnings too.
type Load func(path string) (*handoff.Table, []string, error)

// Holder holds the current table. It is safe for concurrent use.
type Holder struct {
	table  atomic.Pointer[handoff.Table]
	path   string
	load   Load
	logger *slog.Logger
	// mu serialises reloads and guards last.
	mu sync.Mutex
	// last is the hash of the content last tried, valid or not, so a bad
	// file is reported once, not at every poll.
	last [sha256.Size]byte
}

// New returns a holder of initial, which was loaded from path.
func New(initial *handoff.Table, path string, load Load, logger *slog.Logger) (*Holder, error) {
	h := &Holder{path: path, load: load, logger: logger}
	h.table.Store(initial)
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config %s: %w", path, err)
		}
		h.last = sha256.Sum256(data)
	}
	return h, nil
}

// Current returns the newest valid table.
func (h *Holder) Current() *handoff.Table { return h.table.Load() }

// Reload loads the file now. On error the current table stays and the
// error is returned (and logged).
func (h *Holder) Reload(ctx context.Context, why string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if data, err := os.ReadFile(h.path); err == nil {
		h.last = sha256.Sum256(data)
	}
	table, warnings, err := h.load(h.path)
	if err != nil {
		h.logger.ErrorContext(ctx, "config reload rejected; keeping the previous configuration", "path", h.path, "trigger", why, "err", err)
		return err
	}
	for _, w := range warnings {
		h.logger.WarnContext(ctx, "config warning", "path", h.path, "warning", w)
	}
	h.table.Store(table)
	h.logger.InfoContext(ctx, "config reloaded", "path", h.path, "trigger", why,
		"destinations", len(table.Destinations), "rules", len(table.Rules), "default", table.Default)
	return nil
}

// changed reports whether the file's content differs from the last tried.
func (h *Holder) changed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	data, err := os.ReadFile(h.path)
	if err != nil {
		return false // mid-replace by an editor, or deleted: wait for it
	}
	sum := sha256.Sum256(data)
	return !bytes.Equal(sum[:], h.last[:])
}

// Run reloads on every value from hup and, when poll is positive, when
// the file's content changes; it returns when ctx ends. Without a path it
// only waits.
func (h *Holder) Run(ctx context.Context, hup <-chan os.Signal, poll time.Duration) {
	var tick <-chan time.Time
	if poll > 0 && h.path != "" {
		t := time.NewTicker(poll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if h.path == "" {
				h.logger.WarnContext(ctx, "SIGHUP without --config; nothing to reload")
				continue
			}
			_ = h.Reload(ctx, "sighup") // logged
		case <-tick:
			if h.changed() {
				_ = h.Reload(ctx, "file changed") // logged
			}
		}
	}
}
