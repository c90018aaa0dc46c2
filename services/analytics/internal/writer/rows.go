package writer

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// ErrUnwritable is wrapped by every reason a decoded event cannot become a
// row; such records go to the dead-letter topic like undecodable ones,
// because inserting them would fail the batch again on every retry.
var ErrUnwritable = errors.New("event cannot be written")

// maxDateTime is the last second a ClickHouse DateTime (UInt32) holds.
const maxDateTime = math.MaxUint32

type eventRow struct {
	EventID, Type, CallID, Source string
	Time                          time.Time
	TimeMS                        uint64
	Topic                         string
	Partition                     int32
	Offset                        int64
	// PayloadProto is the record's value as it came: the Protobuf
	// message that Type names (decision 0008).
	PayloadProto []byte
	// CETime and TraceParent are the record's ce_time and traceparent
	// headers as sent (0006), so a replay from ClickHouse rebuilds the
	// record byte for byte.
	CETime, TraceParent string
}

type callRow struct {
	CallID                                                       string
	StartedAt                                                    time.Time
	StartedMS                                                    uint64
	Trunk, SourceAddress                                         string
	CallerNumber, CallerNumberRaw, CalleeNumber, CalleeNumberRaw string
	RequestURI                                                   string
	VariableKeys, VariableValues                                 []string
	HeaderCount, OversizedHeaders                                uint32
	EventID                                                      string
	Version                                                      uint64
}

type callEndRow struct {
	CallID                  string
	EndedAt                 time.Time
	EndedMS                 uint64
	EndedBy, Method, Reason string
	DurationMS              uint64
	EventID                 string
}

type handoffRow struct {
	CommandID, CallID                             string
	RequestedAt                                   time.Time
	RequestedMS                                   uint64
	Destination, Method, Route, Reason, Utterance string
	Attempt                                       uint32
	HeaderNames, HeaderValues                     []string
	EventID                                       string
	// Rule is the routing rule that chose the destination (migration
	// 0007); empty when none did.
	Rule string
}

type outcomeRow struct {
	EventID, CommandID, CallID          string
	Time                                time.Time
	TimeMS                              uint64
	Status, Method, Destination, Reason string
	SIPCode                             int32
	SIPReason, Detail                   string
	ElapsedMS                           uint64
}

type agentMetricRow struct {
	EventID, CallID    string
	Time               time.Time
	TimeMS             uint64
	Name               string
	Value              float64
	TagKeys, TagValues []string
	RequestID          string
}

// agentStreamRow is one AgentDisconnected: how an agent stream ended and
// its statistics (frames are 20 ms).
type agentStreamRow struct {
	EventID, CallID, StreamSID  string
	EndedAt                     time.Time
	EndedMS                     uint64
	Reason, Action, Detail      string
	FramesOut, FramesIn         uint64
	FramesPlayed, Late, Dropped uint64
	Cleared, MaxQueueMS         uint64
	Marks, BadMessages          uint64
}

// agentConnectRow is one AgentConnected.
type agentConnectRow struct {
	EventID, CallID, StreamSID string
	ConnectedAt                time.Time
	ConnectedMS                uint64
	URL, Format                string
	ConnectMS                  uint64
	Source                     string
}

// rows are one batch's rows, one slice per table.
type rows struct {
	events   []eventRow
	calls    []callRow
	callEnds []callEndRow
	handoffs []handoffRow
	outcomes []outcomeRow
	metrics  []agentMetricRow
	streams  []agentStreamRow
	connects []agentConnectRow
}

func (r *rows) len() int { return len(r.events) }

// deadLetter is a record that cannot be written, and why.
type deadLetter struct {
	rec *kgo.Record
	err error
}

// parallelBuildMin is the number of records per CPU from which build
// splits a batch across CPUs: decoding is most of the writer's own CPU,
// and while it runs ClickHouse waits.
const parallelBuildMin = 8192

// build turns a batch's records into rows; the records it cannot use are
// returned as dead letters, in order. A large batch is built in parts on
// up to GOMAXPROCS goroutines.
func build(records []*kgo.Record) (*rows, []deadLetter) {
	return buildParts(records, min(runtime.GOMAXPROCS(0), len(records)/parallelBuildMin))
}

// buildParts builds records in parts concurrent pieces and joins them in
// order: the result is the same as building them in one piece.
func buildParts(records []*kgo.Record, parts int) (*rows, []deadLetter) {
	if parts <= 1 {
		return buildPiece(records)
	}
	type piece struct {
		r    *rows
		dead []deadLetter
	}
	chunks := slices.Collect(slices.Chunk(records, (len(records)+parts-1)/parts))
	pieces := make([]piece, len(chunks))
	var wg sync.WaitGroup
	for i, chunk := range chunks {
		wg.Go(func() { pieces[i].r, pieces[i].dead = buildPiece(chunk) })
	}
	wg.Wait()
	r, dead := pieces[0].r, pieces[0].dead
	for _, p := range pieces[1:] {
		r.events = append(r.events, p.r.events...)
		r.calls = append(r.calls, p.r.calls...)
		r.callEnds = append(r.callEnds, p.r.callEnds...)
		r.handoffs = append(r.handoffs, p.r.handoffs...)
		r.outcomes = append(r.outcomes, p.r.outcomes...)
		r.metrics = append(r.metrics, p.r.metrics...)
		r.streams = append(r.streams, p.r.streams...)
		r.connects = append(r.connects, p.r.connects...)
		dead = append(dead, p.dead...)
	}
	return r, dead
}

// buildPiece builds records on this goroutine.
func buildPiece(records []*kgo.Record) (*rows, []deadLetter) {
	r := &rows{events: make([]eventRow, 0, len(records))}
	var dead []deadLetter
	for _, rec := range records {
		if err := r.add(rec); err != nil {
			dead = append(dead, deadLetter{rec: rec, err: err})
		}
	}
	return r, dead
}

// add decodes rec and appends its rows; on error nothing is appended.
func (r *rows) add(rec *kgo.Record) error {
	ev, err := events.Decode(rec)
	if err != nil {
		return err
	}
	sec := ev.Time.Unix()
	if sec < 0 || sec > maxDateTime {
		return fmt.Errorf("%w: event %s: time %s outside the DateTime range", ErrUnwritable, ev.ID, ev.Time.Format(time.RFC3339))
	}
	at := ev.Time.UTC()
	ms := uint64(ev.Time.UnixMilli())
	switch m := ev.Data.(type) {
	case *batonv1.CallStarted:
		keys, values := variables(m.GetVariables())
		r.calls = append(r.calls, callRow{
			CallID: ev.Subject, StartedAt: at, StartedMS: ms,
			Trunk: m.GetTrunk(), SourceAddress: m.GetSourceAddress(),
			CallerNumber: m.GetCallerNumber(), CallerNumberRaw: m.GetCallerNumberRaw(),
			CalleeNumber: m.GetCalleeNumber(), CalleeNumberRaw: m.GetCalleeNumberRaw(),
			RequestURI:   m.GetRequestUri(),
			VariableKeys: keys, VariableValues: values,
			HeaderCount: uint32(len(m.GetSipHeaders())), OversizedHeaders: m.GetOversizedHeaders(),
			EventID: ev.ID, Version: ms,
		})
	case *batonv1.CallEnded:
		r.callEnds = append(r.callEnds, callEndRow{
			CallID: ev.Subject, EndedAt: at, EndedMS: ms,
			EndedBy: party(m.GetEndedBy()), Method: m.GetMethod(), Reason: m.GetReason(),
			DurationMS: durationMS(m.GetDuration()), EventID: ev.ID,
		})
	case *batonv1.HandoffCommand:
		if m.GetCommandId() == "" {
			return fmt.Errorf("%w: event %s: handoff command without command_id", ErrUnwritable, ev.ID)
		}
		names := make([]string, len(m.GetHeaders()))
		values := make([]string, len(m.GetHeaders()))
		for i, h := range m.GetHeaders() {
			names[i], values[i] = h.GetName(), h.GetValue()
		}
		r.handoffs = append(r.handoffs, handoffRow{
			CommandID: m.GetCommandId(), CallID: ev.Subject, RequestedAt: at, RequestedMS: ms,
			Destination: m.GetDestination(), Method: method(m.GetMethod()), Route: m.GetRoute(),
			Reason: m.GetReason(), Utterance: m.GetUtterance(), Attempt: m.GetAttempt(),
			HeaderNames: names, HeaderValues: values, EventID: ev.ID, Rule: m.GetRule(),
		})
	case *batonv1.TransferOutcome:
		if m.GetCommandId() == "" {
			return fmt.Errorf("%w: event %s: transfer outcome without command_id", ErrUnwritable, ev.ID)
		}
		r.outcomes = append(r.outcomes, outcomeRow{
			EventID: ev.ID, CommandID: m.GetCommandId(), CallID: ev.Subject, Time: at, TimeMS: ms,
			Status: status(m.GetStatus()), Method: method(m.GetMethod()), Destination: m.GetDestination(),
			Reason: m.GetReason(), SIPCode: m.GetSipCode(), SIPReason: m.GetSipReason(), Detail: m.GetDetail(),
			ElapsedMS: durationMS(m.GetElapsed()),
		})
	case *batonv1.AgentMetric:
		if math.IsNaN(m.GetValue()) || math.IsInf(m.GetValue(), 0) {
			return fmt.Errorf("%w: event %s: metric %q value %v is not a finite number", ErrUnwritable, ev.ID, m.GetName(), m.GetValue())
		}
		keys, values := variables(m.GetTags())
		r.metrics = append(r.metrics, agentMetricRow{
			EventID: ev.ID, CallID: ev.Subject, Time: at, TimeMS: ms,
			Name: m.GetName(), Value: m.GetValue(), TagKeys: keys, TagValues: values, RequestID: m.GetRequestId(),
		})
	case *batonv1.AgentConnected:
		r.connects = append(r.connects, agentConnectRow{
			EventID: ev.ID, CallID: ev.Subject, StreamSID: m.GetStreamSid(), ConnectedAt: at, ConnectedMS: ms,
			URL: m.GetUrl(), Format: m.GetFormat(), ConnectMS: uint64(max(m.GetConnectMs(), 0)), Source: m.GetSource(),
		})
	case *batonv1.AgentDisconnected:
		st := m.GetStats() // nil reads as zeros
		r.streams = append(r.streams, agentStreamRow{
			EventID: ev.ID, CallID: ev.Subject, StreamSID: m.GetStreamSid(), EndedAt: at, EndedMS: ms,
			Reason: m.GetReason(), Action: m.GetAction(), Detail: m.GetDetail(),
			FramesOut: st.GetFramesOut(), FramesIn: st.GetFramesIn(), FramesPlayed: st.GetFramesPlayed(),
			Late: st.GetLate(), Dropped: st.GetDropped(), Cleared: st.GetCleared(), MaxQueueMS: st.GetMaxQueueMs(),
			Marks: st.GetMarks(), BadMessages: st.GetBadMessages(),
		})
	}
	r.events = append(r.events, eventRow{
		EventID: ev.ID, Type: ev.Type, CallID: ev.Subject, Source: ev.Source, Time: at, TimeMS: ms,
		Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, PayloadProto: rec.Value,
		CETime: header(rec, events.HeaderTime), TraceParent: ev.TraceParent,
	})
	return nil
}

// header is the value of rec's header key, "" when absent.
func header(rec *kgo.Record, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// variables flattens a map into Nested arrays, sorted by key.
func variables(m map[string]string) (keys, values []string) {
	keys = make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	values = make([]string, len(keys))
	for i, k := range keys {
		values[i] = m[k]
	}
	return keys, values
}

func durationMS(d *durationpb.Duration) uint64 {
	if d == nil {
		return 0
	}
	return uint64(max(d.AsDuration().Milliseconds(), 0))
}

// party is 'remote', 'baton', or ” when unspecified.
func party(p batonv1.Party) string {
	if p == batonv1.Party_PARTY_UNSPECIFIED {
		return ""
	}
	return enumName(p.String(), "PARTY_")
}

// method is 'REFER', 'INVITE', 'BYE', or ” when unspecified.
func method(m batonv1.Method) string {
	if m == batonv1.Method_METHOD_UNSPECIFIED {
		return ""
	}
	return strings.ToUpper(enumName(m.String(), "METHOD_"))
}

// status is 'accepted', 'progress', 'succeeded', 'failed', or ”.
func status(s batonv1.OutcomeStatus) string {
	if s == batonv1.OutcomeStatus_OUTCOME_STATUS_UNSPECIFIED {
		return ""
	}
	return enumName(s.String(), "OUTCOME_STATUS_")
}

// enumName lowercases a Protobuf enum value name without its prefix; a
// number unknown to this build stays its number.
func enumName(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}
