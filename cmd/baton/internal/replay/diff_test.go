package replay

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

var update = flag.Bool("update", false, "regenerate testdata/rules/call.ndjson with the router built from this tree")

const (
	fixtureCall = "call-1@sbc"
	fixtureDir  = "testdata/rules"
)

// buildRouter builds the router service into a temp dir.
func buildRouter(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "router")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./services/router/cmd/router")
	cmd.Dir = filepath.Join("..", "..", "..", "..")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "build router: %s", out)
	return bin
}

// fixtureRecords reads the recorded call, regenerating it first with
// -update: the facts and outcomes are written here, the commands and the
// refusal are what the router decides with recorded.yaml.
func fixtureRecords(t *testing.T, routerBin string) []Record {
	t.Helper()
	path := filepath.Join(fixtureDir, "call.ndjson")
	if *update {
		writeFixture(t, routerBin, path)
	}
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	recs, err := ReadNDJSON(f, fixtureCall)
	require.NoError(t, err)
	return recs
}

func writeFixture(t *testing.T, routerBin, path string) {
	t.Helper()
	clock := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	var in []Record
	offsets := map[string]int64{}
	add := func(topic string, msg proto.Message, after time.Duration) events.Event {
		clock = clock.Add(after)
		ev, err := events.New("baton/test", fixtureCall, msg, clock)
		require.NoError(t, err)
		rec, err := events.Encode(topic, ev)
		require.NoError(t, err)
		in = append(in, Record{Topic: topic, Offset: offsets[topic], Key: rec.Key, Value: rec.Value,
			Headers: rec.Headers, Timestamp: rec.Timestamp})
		offsets[topic]++
		return ev
	}
	add(topics.Calls, &batonv1.CallStarted{Dialog: &batonv1.Dialog{CallId: fixtureCall}, CallerNumber: "+15551230001",
		CalleeNumber: "+18005550100", Variables: map[string]string{"Customer-Id": "C-1", "Intent": "billing"}}, 0)
	add(topics.Calls, &batonv1.HandoffRequested{RequestId: "r0", Destination: "sip:+19005550100@premium.example"}, time.Second)
	add(topics.Calls, &batonv1.CallStateChanged{Set: map[string]string{"tier": "gold"}}, time.Second)
	req := add(topics.Calls, &batonv1.HandoffRequested{RequestId: "r1", Reason: "billing_dispute"}, time.Second)
	first := commandID(fixtureCall, req.ID)
	add(topics.Transfers, &batonv1.TransferOutcome{CommandId: first, CallId: fixtureCall, Method: batonv1.Method_METHOD_REFER,
		Destination: "support", Status: batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, SipCode: 202, SipReason: "Accepted"}, 50*time.Millisecond)
	failed := add(topics.Transfers, &batonv1.TransferOutcome{CommandId: first, CallId: fixtureCall, Method: batonv1.Method_METHOD_REFER,
		Destination: "support", Status: batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, SipCode: 603, SipReason: "Decline"}, 400*time.Millisecond)
	second := commandID(fixtureCall, failed.ID)
	add(topics.Transfers, &batonv1.TransferOutcome{CommandId: second, CallId: fixtureCall, Method: batonv1.Method_METHOD_INVITE,
		Destination: "billing", Status: batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, SipCode: 200, SipReason: "OK"}, 3*time.Second)
	add(topics.Calls, &batonv1.CallEnded{CallId: fixtureCall, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"}, 30*time.Second)

	decided, err := Redecide(t.Context(), routerBin, filepath.Join(fixtureDir, "recorded.yaml"), in)
	require.NoError(t, err)
	require.Len(t, decided, 3, "the refusal, support, billing")
	for i := range decided {
		decided[i].Partition, decided[i].Offset = 0, int64(i)
	}
	var buf bytes.Buffer
	require.NoError(t, WriteNDJSON(&buf, append(in, decided...)))
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o600))
}

// TestRulesDiff re-decides a recorded call with the router binary: with
// the configuration it was recorded with, every decision is the same; with
// another default destination, the first attempt changes (destination,
// route, headers) and the fallback after it cannot be answered by the
// recording.
func TestRulesDiff(t *testing.T) {
	bin := buildRouter(t)
	recs := fixtureRecords(t, bin)
	require.Len(t, recs, 11)

	t.Run("recorded config: same", func(t *testing.T) {
		rules := filepath.Join(fixtureDir, "recorded.yaml")
		decided, err := Redecide(t.Context(), bin, rules, recs)
		require.NoError(t, err)
		cmp := Diff(fixtureCall, recs, decided)
		require.Equal(t, 3, cmp.Recorded)
		require.Equal(t, 3, cmp.Redecided)
		var verdicts []Verdict
		for _, r := range cmp.Rows {
			verdicts = append(verdicts, r.Verdict)
		}
		require.Equal(t, []Verdict{Same, Same, Same}, verdicts)
		require.Equal(t, []int{1, 2, 2}, []int{cmp.Rows[0].Handoff, cmp.Rows[1].Handoff, cmp.Rows[2].Handoff},
			"the refusal, then one handoff of two attempts")

		var out bytes.Buffer
		require.NoError(t, WriteDiff(&out, cmp, rules))
		for _, want := range []string{
			"call call-1@sbc: 3 recorded decisions, 3 re-decided with testdata/rules/recorded.yaml",
			"handoff 1, refusal",
			"same         refused sip:+19005550100@premium.example (route_not_allowed)",
			"handoff 2, attempt 1",
			"same         REFER to support (sip:support@pbx.example.com) attempt 1, headers [X-Customer-Id=C-1 X-Intent=billing X-Tier=gold]",
			"outcome      recorded: failed SIP 603 Decline",
			"handoff 2, attempt 2",
			"same         INVITE to billing (tel:+15550002222) attempt 2",
			"outcome      recorded: succeeded SIP 200 OK",
			"3 same, 0 changed, 0 only recorded, 0 only re-decided, 0 not recorded",
		} {
			require.Contains(t, out.String(), want)
		}
	})

	t.Run("another default: changed, then not recorded", func(t *testing.T) {
		rules := filepath.Join(fixtureDir, "changed.yaml")
		decided, err := Redecide(t.Context(), bin, rules, recs)
		require.NoError(t, err)
		cmp := Diff(fixtureCall, recs, decided)
		require.Len(t, cmp.Rows, 3)
		require.Equal(t, Same, cmp.Rows[0].Verdict, "the refusal does not depend on the default")
		require.Equal(t, Changed, cmp.Rows[1].Verdict)
		require.Equal(t, []string{
			"destination: support -> desk",
			"route: sip:support@pbx.example.com -> sip:desk@pbx.example.com",
			"header + X-Queue: vip",
			"header - X-Tier: gold",
		}, cmp.Rows[1].Changes)
		// desk failed as support did in the recording: no fallback is
		// left, so the new chain hangs up where billing was tried.
		require.Equal(t, NotRecorded, cmp.Rows[2].Verdict)
		require.Equal(t, "attempt 1: REFER support (sip:support@pbx.example.com) -> REFER desk (sip:desk@pbx.example.com)",
			cmp.Rows[2].DivergedAt)
		require.Equal(t, batonv1.Method_METHOD_BYE, cmp.Rows[2].Redecided.Data.(*batonv1.HandoffCommand).GetMethod())

		var out bytes.Buffer
		require.NoError(t, WriteDiff(&out, cmp, rules))
		for _, want := range []string{
			"handoff 2, attempt 1",
			"[changed]",
			"destination: support -> desk",
			"header + X-Queue: vip",
			"outcome      recorded: failed SIP 603 Decline from REFER support (sip:support@pbx.example.com); not recorded for REFER desk (sip:desk@pbx.example.com)",
			"handoff 2, attempt 2",
			"[not recorded]",
			"recorded     INVITE to billing (tel:+15550002222) attempt 2",
			"re-decided   BYE (end the call, reason all_destinations_failed) attempt 2",
			"outcome      recorded: succeeded SIP 200 OK from INVITE billing (tel:+15550002222); not recorded for BYE (end the call)",
			"1 same, 1 changed, 0 only recorded, 0 only re-decided, 1 not recorded",
		} {
			require.Contains(t, out.String(), want)
		}
	})

	t.Run("bad rules: the router's error", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		require.NoError(t, os.WriteFile(bad, []byte("destinations: []\n"), 0o600))
		_, err := Redecide(t.Context(), bin, bad, recs)
		require.ErrorContains(t, err, "at least one destination is required")
	})
}

func TestDiffPairsByTrigger(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	rec := func(topic string, msg proto.Message, id string) Record {
		ev, err := events.New("baton/test", "c", msg, at)
		require.NoError(t, err)
		if id != "" {
			ev.ID = id
		}
		r, err := events.Encode(topic, ev)
		require.NoError(t, err)
		return Record{Topic: topic, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}
	}
	started := rec(topics.Calls, &batonv1.CallStarted{}, "start")
	id := commandID("c", "start")
	recorded := rec(topics.Handoffs, &batonv1.HandoffCommand{CommandId: id, CallId: "c", Destination: "a", Attempt: 1}, id)
	// The new config decides nothing where the recording handed off.
	cmp := Diff("c", []Record{started, recorded}, nil)
	require.Len(t, cmp.Rows, 1)
	require.Equal(t, OnlyRecorded, cmp.Rows[0].Verdict)
	require.Equal(t, "start", cmp.Rows[0].Trigger.ID)
	// And the reverse: a decision the recording does not have.
	cmp = Diff("c", []Record{started}, []Record{recorded})
	require.Equal(t, OnlyRedecided, cmp.Rows[0].Verdict)
}

func TestRouterBinary(t *testing.T) {
	_, err := RouterBinary(filepath.Join(t.TempDir(), "nope"))
	require.ErrorContains(t, err, "no such file")

	dir := t.TempDir()
	fake := filepath.Join(dir, "router")
	require.NoError(t, os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o700))
	t.Setenv("PATH", dir)
	got, err := RouterBinary("")
	require.NoError(t, err)
	require.Equal(t, fake, got, "found on PATH (nothing is next to the test binary)")

	t.Setenv("PATH", t.TempDir())
	_, err = RouterBinary("")
	require.ErrorContains(t, err, "--router-bin")
}
