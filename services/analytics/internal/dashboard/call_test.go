package dashboard

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/callview"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// hostileDestination is caller-influenced text that would be markup if
// the page did not escape it.
const hostileDestination = `<img src=x onerror=alert(1)>`

// referCallRecords is a REFER handoff as Kafka holds it: each stage's
// records on its topic, at its partition and offset, the timestamp in
// milliseconds and a traceparent on every record.
func referCallRecords(t *testing.T, callID string, start time.Time) []callview.Record {
	t.Helper()
	msgs := []struct {
		topic string
		msg   proto.Message
		after time.Duration
	}{
		{"baton.calls", &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: callID}, CallerNumber: "+4930555000199", CalleeNumber: "+15550100",
			Trunk: "carrier-a", Variables: map[string]string{"Intent": "billing", "Customer-Id": "CUST-7"}}, 0},
		{"baton.calls", &batonv1.HandoffRequested{CallId: callID, RequestedBy: "agent-api", Reason: "billing"}, 900*time.Millisecond + 123456},
		{"baton.handoffs", &batonv1.HandoffCommand{CommandId: "cmd-r1", CallId: callID, Method: batonv1.Method_METHOD_REFER,
			Destination: hostileDestination, Route: "sip:billing@pbx", Attempt: 1}, 940 * time.Millisecond},
		{"baton.transfers", &batonv1.TransferOutcome{CommandId: "cmd-r1", CallId: callID, Method: batonv1.Method_METHOD_REFER,
			Status: batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, SipCode: 202, SipReason: "Accepted"}, 980 * time.Millisecond},
		{"baton.calls", &batonv1.NotifyReceived{CallId: callID, Event: "refer", SipfragStatus: 200, SipfragReason: "OK"}, 1500 * time.Millisecond},
		{"baton.transfers", &batonv1.TransferOutcome{CommandId: "cmd-r1", CallId: callID, Method: batonv1.Method_METHOD_REFER,
			Status: batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, SipCode: 200}, 1510 * time.Millisecond},
		{"baton.calls", &batonv1.CallEnded{CallId: callID, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"}, 1600 * time.Millisecond},
	}
	offsets := map[string]int64{}
	var out []callview.Record
	for _, m := range msgs {
		ev, err := events.New("baton/test", callID, m.msg, start.Add(m.after))
		require.NoError(t, err)
		ev.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		rec, err := events.Encode(m.topic, ev)
		require.NoError(t, err)
		out = append(out, callview.Record{Topic: rec.Topic, Partition: 2, Offset: 100 + offsets[m.topic], Key: rec.Key, Value: rec.Value,
			Headers: rec.Headers, Timestamp: rec.Timestamp.Truncate(time.Millisecond)})
		offsets[m.topic]++
	}
	return out
}

// insertRecords stores recs in the events table as the analytics writer
// does (its columns from the record's CloudEvents headers), each twice:
// a Kafka replay into analytics inserts a row again.
func insertRecords(t *testing.T, conn driver.Conn, recs []callview.Record) {
	t.Helper()
	for range 2 {
		b, err := conn.PrepareBatch(t.Context(), "INSERT INTO events (event_id, type, call_id, source, time, time_ms, topic, partition, "+
			"offset, payload_proto, ce_time, traceparent)")
		require.NoError(t, err)
		for _, r := range recs {
			ev, err := events.Decode(kafkaRecord(r))
			require.NoError(t, err)
			require.NoError(t, b.Append(ev.ID, ev.Type, ev.Subject, ev.Source, ev.Time, uint64(ev.Time.UnixMilli()), r.Topic, r.Partition,
				r.Offset, string(r.Value), header(r, events.HeaderTime), ev.TraceParent))
		}
		require.NoError(t, b.Send())
	}
}

func header(r callview.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// TestCallPageIsReplaysPage is issue 22's drill-down: the call page draws
// the SVG ladder and the timeline that `baton replay --html` writes for
// the records Kafka held (callview.WriteHTML: LadderSVG then
// TimelineTable), byte for byte, from the rows analytics stored; the JSON
// carries the same ladder and steps; caller-chosen text stays text.
func TestCallPageIsReplaysPage(t *testing.T) {
	conn := seeded(t)
	const callID = "refer-1@sbc"
	recs := referCallRecords(t, callID, at("11:50"))
	insertRecords(t, conn, recs)
	srv := httptest.NewServer(NewHandler(New(conn), nil, nil, slog.New(slog.DiscardHandler), func() time.Time { return to }))
	defer srv.Close()

	// What `baton replay --html` writes for the records read from Kafka.
	steps := callview.Steps(recs)
	arrows := callview.Ladder(steps)
	var replayPage strings.Builder
	require.NoError(t, callview.WriteHTML(&replayPage, callID, steps, arrows))
	svg, table := callview.LadderSVG(arrows), callview.TimelineTable(steps)
	require.Contains(t, replayPage.String(), svg)
	require.Contains(t, replayPage.String(), table)

	res, err := http.Get(srv.URL + "/calls/" + callID)
	require.NoError(t, err)
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	_ = res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	page := string(body)
	require.Contains(t, page, svg, "the ladder is replay's")
	require.Contains(t, page, table, "the timeline is replay's")
	require.Equal(t, 10, strings.Count(page, `class="msg"`), "one SVG arrow per message, the two notes are dots")
	for _, label := range []string{"INVITE (2 X- headers)", "REFER", "202 Accepted", "NOTIFY sipfrag 200", "BYE"} {
		require.Contains(t, page, `text-anchor="middle">`+label+`</text>`, label)
	}
	require.Contains(t, page, "+0.900s", "the handoff request is 0.9 s after the start")
	require.NotContains(t, page, hostileDestination)
	require.Contains(t, page, "REFER -&gt; &lt;img src=x onerror=alert(1)&gt;")
	require.NotContains(t, page, "<!--LADDER-->")
	require.NotContains(t, page, "/*CALL*/null")

	res, err = http.Get(srv.URL + "/api/calls/" + callID)
	require.NoError(t, err)
	var c Call
	require.NoError(t, json.NewDecoder(res.Body).Decode(&c))
	_ = res.Body.Close()
	require.Len(t, c.Events, len(recs), "each event once, although stored twice")
	require.Len(t, c.Timeline, len(steps))
	for i, s := range steps {
		require.Equal(t, s.Summary(), c.Timeline[i].What)
		require.True(t, s.Time().Equal(c.Timeline[i].Time), "nanoseconds kept (ce_time)")
	}
	var ladder []string
	for _, a := range c.Ladder {
		ladder = append(ladder, a.From+">"+a.To+" "+a.Label)
	}
	require.Equal(t, []string{
		"SBC>ingress INVITE (2 X- headers)", "ingress>router CallStarted", "ingress>SBC 200 OK",
		"router>router handoff requested: billing", "router>transfer REFER -> " + hostileDestination,
		"transfer>SBC REFER", "SBC>transfer 202 Accepted", "SBC>ingress NOTIFY sipfrag 200", "ingress>SBC 200 OK",
		"transfer>transfer succeeded (200)", "SBC>ingress BYE", "ingress>SBC 200 OK",
	}, ladder)
}

// The call page reads at most MaxCallEvents events and says it stopped;
// behind a token it shows nothing to a stranger.
func TestCallPageBounds(t *testing.T) {
	conn := seeded(t)
	const callID = "long@sbc"
	start := at("12:00")
	b, err := conn.PrepareBatch(t.Context(), "INSERT INTO events (event_id, type, call_id, source, time, time_ms, topic, partition, offset, payload_proto)")
	require.NoError(t, err)
	for i := range MaxCallEvents + 5 {
		m := &batonv1.DtmfReceived{CallId: callID, Digit: "5", Source: "rfc4733", DurationMs: 80}
		ev, err := events.New("baton/test", callID, m, start.Add(time.Duration(i)*time.Millisecond))
		require.NoError(t, err)
		payload, err := proto.Marshal(m)
		require.NoError(t, err)
		require.NoError(t, b.Append(ev.ID, ev.Type, callID, ev.Source, ev.Time, uint64(ev.Time.UnixMilli()), "baton.calls", int32(0),
			int64(i), string(payload)))
	}
	require.NoError(t, b.Send())
	h := NewHandler(New(conn), nil, nil, slog.New(slog.DiscardHandler), func() time.Time { return to })
	srv := httptest.NewServer(h)
	defer srv.Close()

	res, err := http.Get(srv.URL + "/api/calls/" + callID)
	require.NoError(t, err)
	var c Call
	require.NoError(t, json.NewDecoder(res.Body).Decode(&c))
	_ = res.Body.Close()
	require.True(t, c.Truncated)
	require.Len(t, c.Events, MaxCallEvents)
	require.Len(t, c.Timeline, MaxCallEvents)
	require.Contains(t, c.Timeline[0].What, "digit 5 (rfc4733, 80 ms)")

	h.RequireToken("s3cret")
	for _, path := range []string{"/calls/" + callID, "/api/calls/" + callID} {
		res, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		require.Equal(t, http.StatusUnauthorized, res.StatusCode, path)
		require.NotContains(t, string(body), "long@sbc", path)
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer s3cret")
		res, err = http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		require.Equal(t, http.StatusOK, res.StatusCode, path)
	}
}

func kafkaRecord(r callview.Record) *kgo.Record {
	return &kgo.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Headers: r.Headers,
		Timestamp: r.Timestamp}
}

// fill puts each value at its marker and never looks for a marker in a
// value it put in: a call's text that spells the next marker stays text.
func TestFill(t *testing.T) {
	got := fill([]byte("a<1>b<2>c<2>"), []byte("<1>"), []byte("<2>"), []byte("<2>"), []byte("X"))
	require.Equal(t, "a<2>bXc<2>", string(got))
	require.Equal(t, "a<1>b", string(fill([]byte("a<1>b"), []byte("<9>"), []byte("X"))), "a missing marker changes nothing")
}
