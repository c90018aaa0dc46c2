// Package chreplay reads recorded calls back from ClickHouse: the events
// table keeps every event with its payload bytes (payload_proto) and,
// since migration 0006, the two CloudEvents headers the other columns do
// not hold exactly (ce_time, traceparent). Each row becomes the Kafka
// record it was written from, so `baton replay` shows the same timeline,
// ladder and --rules diff as from Kafka, long after Kafka's retention.
package chreplay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/baton-voice/baton/cmd/baton/internal/replay"
	"github.com/baton-voice/baton/pkg/callview"
	"github.com/baton-voice/baton/schemas/panels"
)

// Options say which ClickHouse to read.
type Options struct {
	// Addr is the native TCP host:port.
	Addr     string
	Database string
	Username string
	Password string
}

// Open connects over the native protocol (the HTTP one fails on 18.16,
// schemas/clickhouse/README.md) and checks the server answers.
func Open(ctx context.Context, o Options) (driver.Conn, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:     []string{o.Addr},
		Protocol: clickhouse.Native,
		Auth:     clickhouse.Auth{Database: o.Database, Username: o.Username, Password: o.Password},
		// A month of events is streamed block by block; one query may
		// run long, but never without bound.
		Settings:    clickhouse.Settings{"max_execution_time": 3600},
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", o.Addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("clickhouse %s: %w", o.Addr, err)
	}
	return conn, nil
}

// Columns are the events columns a record is rebuilt from, in the order
// Scan reads them (callview.Columns).
const Columns = callview.Columns

// Row is one events row (callview.Row); Row.Record rebuilds its record.
type Row = callview.Row

// Scan reads one row of Columns (callview.Scan).
func Scan(s callview.Scanner) (Row, error) { return callview.Scan(s) }

// Info says what a read found.
type Info struct {
	// Rows is how many rows were read, duplicates included (a Kafka
	// replay into analytics inserts a row again until ReplacingMergeTree
	// merges it); Records leaves them out.
	Rows, Records int
	// Inexact counts records whose ce_time was rebuilt from time_ms
	// (rows written before migration 0006).
	Inexact int
}

// CallQuery is the SQL that reads one call: the primary key (call_id,
// event_id) leads straight to its granules.
func CallQuery(callID string, topics []string) string {
	q := "SELECT " + Columns + " FROM events WHERE call_id = " + panels.Quote(callID)
	if len(topics) > 0 {
		q += " AND topic IN (" + quoteList(topics) + ")"
	}
	return q + " ORDER BY topic, partition, offset, event_id"
}

// Fetch reads every recorded event of callID on topics (all topics when
// empty), one record per event id, in topic, partition and offset order.
func Fetch(ctx context.Context, conn driver.Conn, callID string, topics []string) ([]replay.Record, Info, error) {
	if callID == "" {
		return nil, Info{}, errors.New("a call id is required")
	}
	rows, err := conn.Query(ctx, CallQuery(callID, topics))
	if err != nil {
		return nil, Info{}, fmt.Errorf("read call %s from clickhouse: %w", callID, err)
	}
	defer func() { _ = rows.Close() }()
	var info Info
	var out []replay.Record
	var seen callview.Dedup
	for rows.Next() {
		r, err := Scan(rows)
		if err != nil {
			return nil, info, fmt.Errorf("read call %s from clickhouse: %w", callID, err)
		}
		info.Rows++
		if !seen.First(r) {
			continue
		}
		rec, exact := r.Record()
		if !exact {
			info.Inexact++
		}
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, info, fmt.Errorf("read call %s from clickhouse: %w", callID, err)
	}
	info.Records = len(out)
	return out, info, nil
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = panels.Quote(s)
	}
	return strings.Join(q, ", ")
}
