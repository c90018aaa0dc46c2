// Package hops records when a call's handoff passes a point inside a
// service, for the handoff latency budget (bench/handoff). It is off
// unless the process's environment names a file in Env; off, a Log is nil
// and every method returns at once, so the services call it
// unconditionally.
package hops

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// Env names the file (appended to) that a service writes its hop times
// to; unset or empty leaves recording off.
const Env = "BATON_HOPS_FILE"

// Points a service marks; the bench reads them by these names.
const (
	RouterConsumed   = "router.consumed"   // the poll that returned the trigger
	RouterDecided    = "router.decided"    // the batch's decisions made, before produce
	RouterCommitted  = "router.committed"  // the batch's transaction committed
	TransferConsumed = "transfer.consumed" // the poll that returned a command
	TransferSending  = "transfer.sending"  // the request built, handed to the SIP client
	TransferNotify   = "transfer.notify"   // the poll that returned a NotifyReceived
	AnalyticsPolled  = "analytics.polled"  // the poll that returned an outcome
	AnalyticsWritten = "analytics.written" // the rows' insert and offset commit done
)

// Log appends "point call-id unix-nanoseconds" lines to a file. A nil Log
// records nothing.
type Log struct {
	mu sync.Mutex
	f  *os.File
	b  []byte
}

// FromEnv opens the file getenv(Env) names; nil (off) when it is unset.
func FromEnv(getenv func(string) string) (*Log, error) {
	path := getenv(Env)
	if path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Env, err)
	}
	return &Log{f: f}, nil
}

// On reports whether l records; callers use it to skip gathering what
// they would mark.
func (l *Log) On() bool { return l != nil }

// Mark records that callID passed point at t. A failed write is dropped:
// the measurement is best effort and never affects the call.
func (l *Log) Mark(point, callID string, t time.Time) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b[:0], point...)
	l.b = append(l.b, ' ')
	l.b = append(l.b, callID...)
	l.b = append(l.b, ' ')
	l.b = strconv.AppendInt(l.b, t.UnixNano(), 10)
	l.b = append(l.b, '\n')
	_, _ = l.f.Write(l.b)
}

// Close closes the file; a nil Log has nothing to close.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
