// Package report prints the dashboard's figures in a terminal: it runs the
// panels of schemas/panels (the analytics page's and Grafana's queries)
// against ClickHouse and writes each as a table.
package report

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/baton-voice/baton/cmd/baton/internal/termsafe"
	"github.com/baton-voice/baton/schemas/panels"
)

// PasswordEnv holds the ClickHouse password, as for the analytics service.
const PasswordEnv = "BATON_CLICKHOUSE_PASSWORD"

// Options are the report's inputs.
type Options struct {
	// Addr is ClickHouse's native TCP host:port.
	Addr     string
	Database string
	Username string
	Password string
	// From and To bound the window.
	From, To time.Time
	// Limit caps the list panels.
	Limit int
}

// Run connects to ClickHouse and prints every panel to out.
func Run(ctx context.Context, o Options, out io.Writer) error {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr: []string{o.Addr},
		// HTTP fails on 18.16 (schemas/clickhouse/README.md).
		Protocol:    clickhouse.Native,
		Auth:        clickhouse.Auth{Database: o.Database, Username: o.Username, Password: o.Password},
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("open clickhouse %s: %w", o.Addr, err)
	}
	defer func() { _ = conn.Close() }()
	return Print(ctx, conn, o, out)
}

// Print runs every panel over conn and writes it to out as a table.
func Print(ctx context.Context, conn driver.Conn, o Options, out io.Writer) error {
	ps := panels.All() // the handoff panels, then the agent's
	var version string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		return fmt.Errorf("clickhouse %s: %w", o.Addr, err)
	}
	if _, err := termsafe.Fprintf(out, "Baton handoffs %s to %s UTC (ClickHouse %s, database %s)\n",
		o.From.UTC().Format("2006-01-02 15:04"), o.To.UTC().Format("2006-01-02 15:04"), version, o.Database); err != nil {
		return err
	}
	for _, p := range ps {
		if err := printPanel(ctx, conn, p, o, out); err != nil {
			return err
		}
	}
	return nil
}

func printPanel(ctx context.Context, conn driver.Conn, p panels.Panel, o Options, out io.Writer) error {
	rows, err := conn.Query(ctx, p.Render(o.From, o.To, max(o.Limit, 1)))
	if err != nil {
		return fmt.Errorf("panel %s: %w", p.Name, err)
	}
	defer func() { _ = rows.Close() }()
	if _, err := termsafe.Fprintf(out, "\n%s\n", p.Title); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	cols := rows.Columns()
	types := rows.ColumnTypes()
	header := make([]string, len(cols))
	for i, c := range cols {
		header[i] = termsafe.String(c)
	}
	if _, err := fmt.Fprintln(tw, "  "+strings.Join(header, "\t")); err != nil {
		return err
	}
	n := 0
	for rows.Next() {
		dest := make([]any, len(types))
		for i, ct := range types {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("panel %s: scan: %w", p.Name, err)
		}
		cells := make([]string, len(dest))
		for i, d := range dest {
			// Cells are call ids, numbers, X- values: text the caller
			// chose, escaped so it cannot drive the terminal or the table.
			cells[i] = termsafe.String(format(cols[i], reflect.ValueOf(d).Elem().Interface()))
		}
		if _, err := fmt.Fprintln(tw, "  "+strings.Join(cells, "\t")); err != nil {
			return err
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("panel %s: %w", p.Name, err)
	}
	if n == 0 {
		if _, err := fmt.Fprintln(tw, "  (none in this window)"); err != nil {
			return err
		}
	}
	return tw.Flush()
}

// format writes one cell: rates as percentages, times in UTC, NULL as -.
func format(col string, v any) string {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return "-"
		}
		v = rv.Elem().Interface()
	}
	switch x := v.(type) {
	case time.Time:
		return x.UTC().Format("2006-01-02 15:04:05")
	case float64:
		if strings.HasSuffix(col, "_rate") {
			return strconv.FormatFloat(x*100, 'f', 1, 64) + "%"
		}
		return strconv.FormatFloat(x, 'f', -1, 64)
	case string:
		if x == "" {
			return `""`
		}
		return x
	}
	return fmt.Sprint(v)
}
