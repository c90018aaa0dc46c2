package chreplay

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/baton-voice/baton/cmd/baton/internal/clickhousetest"
	"github.com/baton-voice/baton/cmd/baton/internal/replay"
	"github.com/baton-voice/baton/cmd/baton/internal/synthcalls"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/schemas/panels"
)

// rowOf is the events row analytics writes for rec (writer.rows.add).
func rowOf(t *testing.T, rec *kgo.Record) Row {
	t.Helper()
	ev, err := events.Decode(rec)
	require.NoError(t, err)
	h := func(k string) string {
		for _, x := range rec.Headers {
			if x.Key == k {
				return string(x.Value)
			}
		}
		return ""
	}
	return Row{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, EventID: ev.ID, Type: ev.Type, Source: ev.Source,
		CallID: ev.Subject, TimeMS: uint64(ev.Time.UnixMilli()), CETime: h(events.HeaderTime), TraceParent: h(events.HeaderTraceParent),
		Payload: string(rec.Value)}
}

// A row rebuilds its record byte for byte, nanoseconds and traceparent
// included; a row from before migration 0006 (no ce_time) rebuilds the
// time to the millisecond and says it is inexact.
func TestRowRebuildsTheRecord(t *testing.T) {
	at := time.Date(2026, 11, 2, 9, 30, 15, 123456789, time.UTC)
	ev, err := events.New("baton/ingress/h1", "it's a \\ call@sbc", &batonv1.CallEnded{CallId: "c", Method: "BYE"}, at)
	require.NoError(t, err)
	ev.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	rec, err := events.Encode("baton.calls", ev)
	require.NoError(t, err)
	rec.Partition, rec.Offset = 2, 41

	got, exact := rowOf(t, rec).Record()
	require.True(t, exact)
	require.Equal(t, rec.Headers, got.Headers)
	require.Equal(t, rec.Key, got.Key)
	require.Equal(t, rec.Value, got.Value)
	require.Equal(t, []any{rec.Topic, rec.Partition, rec.Offset}, []any{got.Topic, got.Partition, got.Offset})
	require.Equal(t, at.Truncate(time.Millisecond), got.Timestamp, "Kafka keeps milliseconds")
	dec, err := events.Decode(&kgo.Record{Key: got.Key, Value: got.Value, Headers: got.Headers})
	require.NoError(t, err)
	require.True(t, dec.Time.Equal(at))
	require.Equal(t, ev.TraceParent, dec.TraceParent)

	old := rowOf(t, rec)
	old.CETime, old.TraceParent = "", ""
	got, exact = old.Record()
	require.False(t, exact)
	dec, err = events.Decode(&kgo.Record{Key: got.Key, Value: got.Value, Headers: got.Headers})
	require.NoError(t, err)
	require.True(t, dec.Time.Equal(at.Truncate(time.Millisecond)))
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain@sbc":   `'plain@sbc'`,
		`it's`:        `'it\'s'`,
		`back\slash`:  `'back\\slash'`,
		"nul\x00byte": `'nul\0byte'`,
		"":            `''`,
	} {
		require.Equal(t, want, panels.Quote(in), in)
	}
}

func TestWindowValidate(t *testing.T) {
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	require.ErrorContains(t, Window{}.Validate(), "a period needs a start and an end")
	require.ErrorContains(t, Window{From: at, To: at}.Validate(), "is not before its end")
	require.NoError(t, Window{From: at, To: at.Add(time.Second)}.Validate())
}

// On clickhouse-server 18.16: a call whose id holds a quote, a backslash
// and a newline is read back byte for byte, once although its rows were
// inserted twice (a Kafka replay into analytics); other calls' events are
// not read; an unknown call reads nothing.
func TestFetchOnClickHouse(t *testing.T) {
	ch := clickhousetest.Start(t)
	conn := ch.Database(t, "baton")
	clickhousetest.Migrate(t, conn)
	from := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var calls []synthcalls.Call
	require.NoError(t, synthcalls.Generate(t.Context(), synthcalls.Config{Calls: 3, From: from, To: from.Add(time.Hour), Seed: 1}, 3,
		func(_ context.Context, cs []synthcalls.Call) error { calls = cs; return nil }))
	// A hostile call id, as a SIP Call-ID may be.
	odd := "it's \\ a\ncall@sbc"
	ev, err := events.New("baton/ingress/h1", odd, &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: odd}, Trunk: "t"},
		from.Add(time.Minute+time.Nanosecond))
	require.NoError(t, err)
	rec, err := events.Encode("baton.calls", ev)
	require.NoError(t, err)
	calls = append(calls, synthcalls.Call{ID: odd, Records: []replay.Record{{Topic: rec.Topic, Key: rec.Key, Value: rec.Value,
		Headers: rec.Headers, Timestamp: rec.Timestamp.Truncate(time.Millisecond)}}})
	for range 2 {
		require.NoError(t, synthcalls.Load(t.Context(), conn, calls))
	}

	for _, c := range calls {
		got, info, err := Fetch(t.Context(), conn, c.ID, nil)
		require.NoError(t, err)
		require.Equal(t, 2*len(c.Records), info.Rows, "both copies read")
		require.Equal(t, len(c.Records), info.Records)
		require.Zero(t, info.Inexact)
		require.ElementsMatch(t, c.Records, got, c.ID)
	}
	got, _, err := Fetch(t.Context(), conn, calls[0].ID, []string{"baton.transfers"})
	require.NoError(t, err)
	require.NotEmpty(t, got)
	for _, r := range got {
		require.Equal(t, "baton.transfers", r.Topic)
	}
	got, info, err := Fetch(t.Context(), conn, "nobody@sbc", nil)
	require.NoError(t, err)
	require.Empty(t, got)
	require.Zero(t, info.Rows)
	_, _, err = Fetch(t.Context(), conn, "", nil)
	require.ErrorContains(t, err, "a call id is required")
}
