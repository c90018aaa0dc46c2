// Package chconn opens connections to ClickHouse over the native protocol
// with the options that work on both 18.16 and current servers, and waits
// for a server that is not up yet.
package chconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/baton-voice/baton/services/analytics/internal/config"
)

// Backoff bounds of Open's retries.
const (
	firstBackoff = 100 * time.Millisecond
	maxBackoff   = 5 * time.Second
)

// maxExecutionTime bounds every query on the server (seconds).
const maxExecutionTime = 60

// Options returns the client options for c, connected to database.
func Options(c config.ClickHouse, database string) *clickhouse.Options {
	settings := clickhouse.Settings{"max_execution_time": maxExecutionTime}
	if c.Cluster != "" {
		// An INSERT into a Distributed table returns only once every shard
		// has its rows, not when the initiator queued them on its disk:
		// the writer commits Kafka offsets after the INSERT, so a queued
		// batch lost with its node would otherwise be lost for good. The
		// 18.16 name; current servers keep it as an alias of
		// distributed_foreground_insert.
		settings["insert_distributed_sync"] = 1
	}
	return &clickhouse.Options{
		Addr: []string{c.Addr},
		// HTTP fails on 18.16 (schemas/clickhouse/README.md).
		Protocol: clickhouse.Native,
		Auth:     clickhouse.Auth{Database: database, Username: c.Username, Password: c.Password},
		// Settings with string values are rejected by 18.16: ints only.
		Settings:    settings,
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
		DialTimeout: c.DialTimeout,
	}
}

// Open connects with opts and pings the server, retrying with a growing
// pause while it does not answer; every failed attempt is logged. It gives
// up only when ctx ends.
func Open(ctx context.Context, opts *clickhouse.Options, logger *slog.Logger) (driver.Conn, error) {
	backoff := firstBackoff
	for attempt := 1; ; attempt++ {
		conn, err := open(ctx, opts)
		if err == nil {
			if attempt > 1 {
				logger.InfoContext(ctx, "clickhouse is up", "addr", opts.Addr, "attempts", attempt)
			}
			return conn, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to clickhouse %v: %w", opts.Addr, errors.Join(ctx.Err(), err))
		}
		logger.WarnContext(ctx, "waiting for clickhouse", "addr", opts.Addr, "attempt", attempt, "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to clickhouse %v: %w", opts.Addr, errors.Join(ctx.Err(), err))
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// open makes one attempt.
func open(ctx context.Context, opts *clickhouse.Options) (driver.Conn, error) {
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if err := conn.Ping(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("ping: %w", err), conn.Close())
	}
	return conn, nil
}
