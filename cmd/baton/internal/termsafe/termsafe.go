// Package termsafe makes text that came from events, records or ClickHouse
// safe to print on a terminal. Such text is written by whoever sent the
// SIP request; printed raw, an escape sequence in a number or header value
// would drive the operator's terminal (clear it, set its title, rewrite
// what was printed before). Every text output of baton passes such text
// through String, or formats it with Sprintf or Fprintf.
package termsafe

import (
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// String returns s with every rune that is not printable (strconv.IsPrint:
// control characters C0, DEL and C1, TAB and line breaks, format
// characters such as bidirectional overrides, spaces other than U+0020)
// written as Go writes it in a quoted string (\x1b, \a, \t, \u009b,
// \u202e), and every byte that is not UTF-8 as \xNN. Printable text,
// backslashes included, is unchanged, so ordinary values read as before.
func String(s string) string {
	if printable(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case strconv.IsPrint(r):
			b.WriteString(s[i : i+n])
		default:
			q := strconv.QuoteRune(r) // '\x1b'
			b.WriteString(q[1 : len(q)-1])
		}
		i += n
	}
	return b.String()
}

func printable(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f {
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || !strconv.IsPrint(r) {
			return false
		}
		i += n
	}
	return true
}

// Sprintf is fmt.Sprintf with every argument of a string kind, []byte or
// error passed through String first. The format is the program's own and
// is kept as it is (its newlines and tabs too); give values of other types
// with a String method as their String().
func Sprintf(format string, args ...any) string {
	return fmt.Sprintf(format, safeArgs(args)...)
}

// Fprintf is Sprintf written to w.
func Fprintf(w io.Writer, format string, args ...any) (int, error) {
	return fmt.Fprintf(w, format, safeArgs(args)...)
}

func safeArgs(args []any) []any {
	safe := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			safe[i] = String(v)
		case []byte:
			safe[i] = String(string(v))
		case error:
			safe[i] = String(v.Error())
		default:
			if rv := reflect.ValueOf(a); rv.IsValid() && rv.Kind() == reflect.String {
				safe[i] = String(rv.String())
				continue
			}
			safe[i] = a
		}
	}
	return safe
}
