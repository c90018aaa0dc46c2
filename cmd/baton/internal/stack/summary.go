package stack

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/baton-voice/baton/cmd/baton/internal/termsafe"
	"github.com/baton-voice/baton/schemas/panels"
)

// HandoffRow is one call and what became of its handoff, read back from
// ClickHouse.
type HandoffRow struct {
	CallID       string
	CallerNumber string
	CalleeNumber string
	CustomerID   string
	Intent       string
	Destination  string
	Method       string
	Status       string
	SIPCode      int32
}

// Open connects to the stack's ClickHouse database.
func (s *Stack) Open() (clickhouse.Conn, error) {
	return OpenClickHouse(s.ClickHouseTCP, s.Database)
}

// OpenClickHouse connects over the native protocol, the one that works on
// every server version Baton supports (18.16 has no usable HTTP for the driver).
func OpenClickHouse(addr, database string) (clickhouse.Conn, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{addr},
		Protocol:    clickhouse.Native,
		Auth:        clickhouse.Auth{Database: database, Username: "default"},
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", addr, err)
	}
	return conn, nil
}

// Handoffs reads every call that started at or after since and its
// handoff outcome: schemas/panels/summary.sql, which the analytics tests
// run on ClickHouse 18.16 and on a current engine.
func Handoffs(ctx context.Context, conn clickhouse.Conn, since time.Time) ([]HandoffRow, error) {
	rows, err := conn.Query(ctx, panels.Summary(since))
	if err != nil {
		return nil, fmt.Errorf("query handoffs: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []HandoffRow
	for rows.Next() {
		var r HandoffRow
		if err := rows.Scan(&r.CallID, &r.CallerNumber, &r.CalleeNumber, &r.CustomerID, &r.Intent,
			&r.Destination, &r.Method, &r.Status, &r.SIPCode); err != nil {
			return nil, fmt.Errorf("scan handoff row: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// WaitHandoffs polls until want calls started since have a final handoff
// outcome (succeeded or failed) or the limit passes; it returns what it saw
// last.
func WaitHandoffs(ctx context.Context, conn clickhouse.Conn, since time.Time, want int, limit time.Duration) ([]HandoffRow, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		rows, err := Handoffs(ctx, conn, since)
		final := 0
		for _, r := range rows {
			if r.Status == "succeeded" || r.Status == "failed" {
				final++
			}
		}
		if err == nil && final >= want {
			return rows, nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return rows, err
			}
			return rows, fmt.Errorf("%d of %d calls have a final handoff outcome in ClickHouse after %v", final, want, limit)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// PrintHandoffs writes rows as a table.
func PrintHandoffs(w io.Writer, rows []HandoffRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CALL ID\tCALLER\tCALLEE\tX-CUSTOMER-ID\tX-INTENT\tDESTINATION\tMETHOD\tOUTCOME\tSIP")
	for _, r := range rows {
		status := r.Status
		if status == "" {
			status = "(none yet)"
		}
		fmt.Fprint(tw, termsafe.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", r.CallID, r.CallerNumber, r.CalleeNumber,
			r.CustomerID, r.Intent, orDash(r.Destination), orDash(r.Method), status, r.SIPCode))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}
