// Package synthcalls generates a recorded period of synthetic traffic for
// the what-if (bench/replay/month.sh and its tests): each call's facts
// (start, a handoff request, transfer outcomes, end) as Baton's services
// encode them, the router's recorded decisions made by `router replay`
// with the configuration the traffic is "recorded with", and a loader
// that writes them to ClickHouse rows as analytics does (events with
// payload bytes, calls, handoffs).
package synthcalls

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/cmd/baton/internal/replay"
	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
)

// Kind is what a synthetic caller asks for.
type Kind string

// Kinds of calls, with their share of the traffic in Generate.
const (
	Billing   Kind = "billing"   // reason billing: a rule picks the destination
	Sales     Kind = "sales"     // reason sales
	Support   Kind = "support"   // any other reason: the default destination
	AdHocPBX  Kind = "adhoc-pbx" // the agent names a route on the PBX
	AdHocPrem Kind = "adhoc-premium"
)

// Trunks the calls arrive on, in turn.
var Trunks = []string{"sbc-east", "sbc-west"}

// Config says what to generate.
type Config struct {
	Calls    int
	From, To time.Time
	Seed     uint64
	// Partitions of each topic, for the records' partition numbers.
	Partitions int
}

// Call is one generated call: its kind, trunk and records (facts only
// until Record adds the decisions).
type Call struct {
	ID      string
	Kind    Kind
	Trunk   string
	Failed  bool // the first transfer attempt fails
	Records []replay.Record
}

// Generate makes cfg.Calls calls spread evenly over [From, To), calling
// fn with batches of up to batch calls. Times carry nanoseconds, as the
// services' clocks do.
func Generate(ctx context.Context, cfg Config, batch int, fn func(context.Context, []Call) error) error {
	if cfg.Calls < 1 || !cfg.From.Before(cfg.To) || batch < 1 {
		return errors.New("synthcalls: want calls >= 1, from before to, batch >= 1")
	}
	if cfg.Partitions < 1 {
		cfg.Partitions = 1
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	step := cfg.To.Sub(cfg.From) / time.Duration(cfg.Calls)
	offsets := map[string]int64{}
	var out []Call
	for i := range cfg.Calls {
		at := cfg.From.Add(time.Duration(i)*step + time.Duration(rng.Int64N(int64(max(step/2, 1)))))
		c, err := call(rng, fmt.Sprintf("synth-%08d@sbc", i), Trunks[i%len(Trunks)], at, cfg.Partitions, offsets)
		if err != nil {
			return err
		}
		out = append(out, c)
		if len(out) == batch {
			if err := fn(ctx, out); err != nil {
				return err
			}
			out = nil
		}
	}
	if len(out) > 0 {
		return fn(ctx, out)
	}
	return nil
}

func call(rng *rand.Rand, id, trunk string, at time.Time, partitions int, offsets map[string]int64) (Call, error) {
	topics := kafka.DefaultConfig().Topics
	c := Call{ID: id, Trunk: trunk}
	switch n := rng.IntN(100); {
	case n < 30:
		c.Kind = Billing
	case n < 50:
		c.Kind = Sales
	case n < 85:
		c.Kind = Support
	case n < 93:
		c.Kind = AdHocPBX
	default:
		c.Kind = AdHocPrem
	}
	c.Failed = rng.IntN(100) < 20
	partition := kafka.PartitionFor([]byte(id), partitions)
	var err error
	add := func(topic, source string, msg proto.Message, after time.Duration) events.Event {
		if err != nil {
			return events.Event{}
		}
		at = at.Add(after)
		var ev events.Event
		if ev, err = events.New(source, id, msg, at); err != nil {
			return ev
		}
		var rec *kgo.Record
		if rec, err = events.Encode(topic, ev); err != nil {
			return ev
		}
		key := fmt.Sprintf("%s/%d", topic, partition)
		c.Records = append(c.Records, replay.Record{Topic: topic, Partition: partition, Offset: offsets[key], Key: rec.Key,
			Value: rec.Value, Headers: rec.Headers, Timestamp: rec.Timestamp.Truncate(time.Millisecond)})
		offsets[key]++
		return ev
	}
	intent := map[Kind]string{Billing: "billing", Sales: "sales"}[c.Kind]
	if intent == "" {
		intent = "question"
	}
	caller := fmt.Sprintf("+1555%07d", rng.IntN(10_000_000))
	add(topics.Calls, "baton/ingress/synth", &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: id}, Trunk: trunk,
		CallerNumber: caller, CalleeNumber: "+18005550100",
		Variables: map[string]string{"Customer-Id": fmt.Sprintf("C-%d", rng.IntN(100_000)), "Intent": intent}}, 0)
	req := &batonv1.HandoffRequested{CallId: id, RequestId: "r1", Reason: intent, RequestedBy: "agent"}
	switch c.Kind {
	case AdHocPBX:
		req.Destination = "sip:desk@pbx.example.com"
	case AdHocPrem:
		req.Destination = "sip:+19005550100@premium.example"
	}
	trigger := add(topics.Calls, "baton/ingress/synth", req, time.Duration(5+rng.IntN(120))*time.Second+time.Duration(rng.IntN(1e6)))
	first := CommandID(id, trigger.ID)
	add(topics.Transfers, "baton/transfer/synth", &batonv1.TransferOutcome{CommandId: first, CallId: id,
		Status: batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, SipCode: 202, SipReason: "Accepted"}, 40*time.Millisecond)
	if c.Failed {
		failed := add(topics.Transfers, "baton/transfer/synth", &batonv1.TransferOutcome{CommandId: first, CallId: id,
			Status: batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, SipCode: 486, SipReason: "Busy Here"}, 2*time.Second)
		add(topics.Transfers, "baton/transfer/synth", &batonv1.TransferOutcome{CommandId: CommandID(id, failed.ID), CallId: id,
			Status: batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, SipCode: 200, SipReason: "OK"}, 3*time.Second)
	} else {
		add(topics.Transfers, "baton/transfer/synth", &batonv1.TransferOutcome{CommandId: first, CallId: id,
			Status: batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, SipCode: 200, SipReason: "OK"}, 900*time.Millisecond)
	}
	add(topics.Calls, "baton/ingress/synth", &batonv1.CallEnded{CallId: id, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"},
		time.Duration(30+rng.IntN(600))*time.Second)
	return c, err
}

// CommandID is the router's handoff.CommandID: the id of the decision a
// trigger (an event id) causes for a call. Outcomes name the command
// they answer by it.
func CommandID(callID, triggerID string) string {
	sum := sha256.Sum256([]byte(callID + "/" + triggerID))
	return hex.EncodeToString(sum[:])[:32]
}

func recordOf(r replay.Record) *kgo.Record {
	return &kgo.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value,
		Headers: r.Headers, Timestamp: r.Timestamp}
}
