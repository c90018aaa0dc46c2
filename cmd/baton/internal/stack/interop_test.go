//go:build interop

package stack

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-voice/baton/cmd/baton/internal/checker"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// The interop suite (make test-interop): the Baton stack between
// independent SIP software from Debian. Kamailio 5.6 is the carrier's SBC,
// baresip 1.0 the caller (a 700 Hz sine for a voice) and a human agent
// that never answers, linphonec 5.1 the human agent that answers (a
// 1300 Hz tone for a voice). Each call checks what the people would
// notice (the tone each side hears) and what Baton recorded: one end per
// call, with the right reason, at the time of the real BYE (Kamailio's
// log of it), active_calls back to 0, no stray BYE and no 481.

// The numbers the suite dials; Kamailio routes the humans' to the UAs and
// the rest to ingress, and the router's rules pick a destination by the
// number dialled.
const (
	callerUser = "+4930999001"
	// transfereeUser is linphonec calling, to be REFERred.
	transfereeUser = "+4930999002"
	humanUser      = "+4930222001"
	noAnswerUser   = "+4930222002"
	busyUser       = "+4930222003"

	numBlind       = "+4930111001"
	numWarm        = "+4930111002"
	numBusy        = "+4930111003"
	numNoAnswer    = "+4930111004"
	numUnreachable = "+4930111005"
	numWarmSRTP    = "+4930111006"

	callerHz = 700.0  // what the caller says
	humanHz  = 1300.0 // what the human agent says
	// minToneWindows is how many 250 ms windows of a side's tone the
	// other side must have heard: 2 s of audio.
	minToneWindows = 8
)

type interopRig struct {
	s        *Stack
	sbc      *kamailio
	caller   *baresip
	human    *linphonec
	noAnswer *baresip
	// transferee is linphonec as a caller: what it does with a REFER.
	transferee *linphonec
	metricsURL string // ingress's /metrics
	since      time.Time
	// handoffs is what ClickHouse's summary must show per call.
	handoffs map[string]HandoffRow
	// failures are the failed INVITE outcomes transfer_outcomes must
	// hold per call.
	failures map[string]HandoffRow
}

func startInterop(t *testing.T) *interopRig {
	t.Helper()
	requireTools(t, "kamailio", "baresip", "linphonec")
	repo := repoRoot(t)
	dir := t.TempDir()
	if keep := os.Getenv("BATON_INTEROP_DIR"); keep != "" {
		// The peers' configs, logs and recordings stay there for a look.
		dir = keep
		require.NoError(t, os.MkdirAll(dir, 0o755))
	}
	r := &interopRig{since: time.Now().Add(-time.Second), handoffs: map[string]HandoffRow{},
		failures: map[string]HandoffRow{}}

	tone := filepath.Join(dir, "human-1300hz.wav")
	require.NoError(t, writeSineWAV(tone, humanHz, 120))
	r.human = startLinphonec(t, repo, dir, humanUser, tone, 41000, true)
	r.noAnswer = startBaresip(t, repo, dir, noAnswerUser, 500, "manual", 42000)
	r.caller = startBaresip(t, repo, dir, callerUser, int(callerHz), "manual", 43000)
	callerTone := filepath.Join(dir, "caller-700hz.wav")
	require.NoError(t, writeSineWAV(callerTone, callerHz, 120))
	r.transferee = startLinphonec(t, repo, dir, transfereeUser, callerTone, 45000, false)

	sbcPort, sbcTLSPort, transferTLSPort := udpPort(t), udpPort(t), udpPort(t)
	sbcHost := "127.0.0.1:" + strconv.Itoa(sbcPort)
	cert, key := writeCert(t, dir)
	tlsCfg := filepath.Join(dir, "kamailio-tls.cfg")
	render(t, repo, "kamailio-tls.cfg.tmpl", tlsCfg, map[string]string{"Cert": cert, "Key": key})
	deadPort := udpPort(t) // nothing listens here
	dest := func(name, method, user string, extra map[string]any) map[string]any {
		d := map[string]any{"name": name, "method": method, "route": "sip:" + user + "@" + sbcHost,
			"headers": map[string]string{"X-Customer-Id": "C-" + name, "X-Baton-Call-Id": "$call_id"}}
		if method == "INVITE" {
			d["encryption"] = "udp_rtp"
			d["answer_timeout"] = "4s"
		}
		for k, v := range extra {
			d[k] = v
		}
		return d
	}
	rule := func(number, dest string) map[string]any {
		return map[string]any{"name": dest, "when": "callee_number == '" + number + "'", "handoff": dest}
	}
	configure := func(instance string, cfg map[string]any) {
		switch instance {
		case "router":
			cfg["destinations"] = []map[string]any{
				dest("blind", "REFER", humanUser, map[string]any{"default": true}),
				dest("warm", "INVITE", humanUser, map[string]any{"answer_timeout": "10s"}),
				dest("busy", "INVITE", busyUser, nil),
				dest("noanswer", "INVITE", noAnswerUser, nil),
				// SRTP over TLS: transfer reaches the SBC over TLS, with
				// SDES keys for the human's leg in its SDP.
				{"name": "warm-srtp", "method": "INVITE", "encryption": "tls_srtp", "answer_timeout": "10s",
					"route": "sips:" + humanUser + "@127.0.0.1:" + strconv.Itoa(sbcTLSPort)},
				{"name": "unreachable", "method": "INVITE", "encryption": "udp_rtp", "answer_timeout": "4s",
					"route": "sip:nobody@127.0.0.1:" + strconv.Itoa(deadPort)},
			}
			// One attempt per handoff: a failed destination is not
			// followed by the default one, so on_all_failed (hangup)
			// ends the call.
			cfg["max_attempts"] = 1
			cfg["rules"] = []map[string]any{rule(numBlind, "blind"), rule(numWarm, "warm"), rule(numBusy, "busy"),
				rule(numNoAnswer, "noanswer"), rule(numUnreachable, "unreachable"),
				rule(numWarmSRTP, "warm-srtp")}
		case "transfer":
			cfg["routes"] = map[string]any{"allow": []string{`re:sips?:[^@]+@127\.0\.0\.1:[0-9]+`}}
			// A REFER's agent leg is hung up soon after the NOTIFY 200.
			cfg["bye_after_refer"] = "1s"
			cfg["media"] = map[string]any{"host": "127.0.0.1", "port_min": 44000, "port_max": 44999}
			cfg["tls"] = map[string]any{"listen": "127.0.0.1:" + strconv.Itoa(transferTLSPort),
				"cert_file": cert, "key_file": key, "ca_file": cert}
		case "ingress":
			if m, ok := cfg["metrics"].(map[string]any); ok {
				r.metricsURL = fmt.Sprintf("http://%s/metrics", m["listen"])
			}
		}
	}
	r.s = startStackTuned(t, func(o *Options) { o.Configure = configure })
	require.NotEmpty(t, r.metricsURL)
	_, port, _ := strings.Cut(r.s.IngressAddr, ":")
	r.sbc = startKamailio(t, repo, dir, kamailioVars{
		Host: "127.0.0.1", Port: sbcPort, Ingress: "127.0.0.1:" + port,
		Human: r.human.sipAddr, NoAnswer: r.noAnswer.sipAddr,
		HumanUser: humanUser, NoAnswerUser: noAnswerUser, BusyUser: busyUser,
		TLSPort: sbcTLSPort, TLSConfig: tlsCfg,
	})
	return r
}

// TestInterop runs the calls one after another through one rig.
func TestInterop(t *testing.T) {
	r := startInterop(t)
	t.Run("BlindTransfer", r.blindTransfer)
	t.Run("BlindTransferLinphonecCaller", r.blindTransferLinphonec)
	t.Run("WarmCallerHangsUp", func(t *testing.T) { r.warm(t, "caller") })
	t.Run("WarmDestinationHangsUp", func(t *testing.T) { r.warm(t, "destination") })
	t.Run("WarmHoldResumeRefresh", r.warmHoldResumeRefresh)
	t.Run("WarmSRTPOverTLS", r.warmSRTP)
	t.Run("Busy", func(t *testing.T) { r.failed(t, numBusy, "busy", 486) })
	// Transfer CANCELs at the answer timeout; baresip answers 487.
	t.Run("NoAnswer", func(t *testing.T) { r.failed(t, numNoAnswer, "noanswer", 487) })
	t.Run("Unreachable", func(t *testing.T) { r.failed(t, numUnreachable, "unreachable", 0) })
	t.Run("OneEndPerCall", r.oneEndPerCall)
	t.Run("HandoffsInClickHouse", r.handoffsInClickHouse)
}

// reset hangs up whatever a failed subtest left up, so the next one
// starts with idle peers.
func (r *interopRig) reset(t *testing.T) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for range 3 {
			if _, err := r.caller.try("hangup", ""); err != nil {
				break
			}
		}
		_, _ = io.WriteString(r.human.stdin, "terminate all\n")
		_, _ = io.WriteString(r.transferee.stdin, "terminate all\n")
	})
}

// dial has the caller call number through the SBC and waits for the
// call to be up; it returns the call's Call-ID and the caller's event
// index after CALL_ESTABLISHED.
func (r *interopRig) dial(t *testing.T, number string) (string, int) {
	t.Helper()
	// What the human heard on the last call must not count for this one:
	// linphonec creates the file again when it answers.
	if err := os.Remove(r.human.record); err != nil && !errors.Is(err, os.ErrNotExist) {
		require.NoError(t, err)
	}
	from := r.caller.eventCount()
	r.caller.do(t, "dial", "sip:"+number+"@"+r.sbc.addr)
	ev, next := r.caller.waitEvent(t, "CALL_ESTABLISHED", from, 30*time.Second)
	callID, _ := ev["id"].(string)
	if callID == "" {
		// The SBC's log has it: the INVITE to the number.
		for _, m := range r.sbc.messages(t) {
			if !m.Reply && m.Method == "INVITE" && strings.Contains(m.RURI, number) {
				callID = m.CallID
			}
		}
	}
	require.NotEmpty(t, callID, "the call's Call-ID (event %v)", ev)
	return callID, next
}

// blindTransfer: Baton REFERs the caller to the human agent; baresip
// follows the REFER through the SBC to linphonec, transfer hangs up
// Baton's leg, and the caller and the human hear each other.
func (r *interopRig) blindTransfer(t *testing.T) {
	r.reset(t)
	recs := len(r.caller.recordings(t))
	humanAt := r.human.logSize()
	callID, next := r.dial(t, numBlind)

	// The REFER makes baresip place a second call, to the human, which
	// linphonec answers; Baton's leg then ends with transfer's BYE.
	_, next = r.caller.waitEvent(t, "CALL_ESTABLISHED", next, 30*time.Second)
	r.human.waitLog(t, "connected", humanAt, 30*time.Second)
	// baresip keeps Refer-To's headers in its INVITE's Request-URI.
	r.human.waitLog(t, "INVITE sip:"+humanUser+"@127.0.0.1", humanAt, time.Second)
	r.human.waitLog(t, "X-Customer-Id=C-blind", humanAt, time.Second)
	r.requireToneBothWays(t, recs)
	r.requireEnd(t, callID, "agent_leg_bye", "baton")
	r.expect(callID, numBlind, "blind", "REFER", "succeeded", 200)

	// The people hang up; that call is theirs, not Baton's.
	humanAt = r.human.logSize()
	r.caller.do(t, "hangup", "")
	r.caller.waitEvent(t, "CALL_CLOSED", next, 30*time.Second)
	r.human.waitLog(t, "ended", humanAt, 30*time.Second)
}

// blindTransferLinphonec: linphonec is the caller Baton REFERs. It holds
// Baton's call before it follows the REFER (so that call's RTP stops, and
// with it any media timeout), and it turns Refer-To's headers into real
// headers of its INVITE. Transfer's BYE must still end Baton's call at
// once, once.
func (r *interopRig) blindTransferLinphonec(t *testing.T) {
	r.reset(t)
	if err := os.Remove(r.human.record); err != nil && !errors.Is(err, os.ErrNotExist) {
		require.NoError(t, err)
	}
	humanAt := r.human.logSize()
	callerAt := r.transferee.logSize()
	r.transferee.send(t, "call sip:"+numBlind+"@"+r.sbc.addr)
	r.human.waitLog(t, "connected", humanAt, 30*time.Second)
	r.human.waitLog(t, "X-Customer-Id: C-blind", humanAt, time.Second)
	var callID string
	for _, m := range r.sbc.messages(t) {
		if !m.Reply && m.Method == "INVITE" && strings.Contains(m.RURI, numBlind) {
			callID = m.CallID
		}
	}
	require.NotEmpty(t, callID)
	r.requireMoreTone(t, 0, "", humanSide)
	r.requireEnd(t, callID, "agent_leg_bye", "baton")
	r.expect(callID, numBlind, "blind", "REFER", "succeeded", 200)
	r.transferee.waitLog(t, "ended", callerAt, 30*time.Second)

	humanAt = r.human.logSize()
	r.transferee.send(t, "terminate")
	r.human.waitLog(t, "ended", humanAt, 30*time.Second)
}

// warm: Baton calls the human itself and bridges the caller to it; then
// who hangs up (the caller or the destination) ends the call, once.
func (r *interopRig) warm(t *testing.T, who string) {
	r.reset(t)
	recs := len(r.caller.recordings(t))
	humanAt := r.human.logSize()
	callID, next := r.dial(t, numWarm)
	humanAt = r.human.waitLog(t, "connected", humanAt, 30*time.Second)
	r.waitOutcome(t, callID, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
	r.expect(callID, numWarm, "warm", "INVITE", "succeeded", 200)
	r.requireToneBothWays(t, recs)

	switch who {
	case "caller":
		r.caller.do(t, "hangup", "")
		r.caller.waitEvent(t, "CALL_CLOSED", next, 30*time.Second)
		r.human.waitLog(t, "ended", humanAt, 30*time.Second)
		r.requireEnd(t, callID, "", "remote")
	case "destination":
		r.human.send(t, "terminate")
		r.caller.waitEvent(t, "CALL_CLOSED", next, 30*time.Second)
		r.requireEnd(t, callID, "destination_hangup", "baton")
	}
}

// warmHoldResumeRefresh: on a bridged warm transfer the caller refreshes
// the session (a re-INVITE with its unchanged SDP, as a session timer
// sends; it reaches ingress, which answers from the bridge), the
// destination holds and resumes (linphonec's re-INVITEs reach transfer),
// and the caller holds and resumes. After each, the people hear each
// other again; the call still ends once, when the caller hangs up.
func (r *interopRig) warmHoldResumeRefresh(t *testing.T) {
	r.reset(t)
	recs := len(r.caller.recordings(t))
	humanAt := r.human.logSize()
	callID, next := r.dial(t, numWarm)
	r.human.waitLog(t, "connected", humanAt, 30*time.Second)
	r.waitOutcome(t, callID, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
	r.requireToneBothWays(t, recs)

	reinvites := func() int {
		n := 0
		for _, m := range r.sbc.messages(t) {
			if m.CallID == callID && !m.Reply && m.Method == "INVITE" {
				n++
			}
		}
		return n
	}
	okReinvites := func() int {
		n := 0
		for _, m := range r.sbc.messages(t) {
			if m.CallID == callID && m.Reply && m.Method == "INVITE" && m.Status == 200 {
				n++
			}
		}
		return n
	}
	// Each step is a re-INVITE in the caller's dialog answered 200.
	step := func(name string, do func()) {
		t.Helper()
		sent := okReinvites()
		do()
		waitFor(t, name+": a re-INVITE answered 200", 30*time.Second, func() error {
			if okReinvites() <= sent {
				return fmt.Errorf("%d INVITEs in the dialog, %d answered 200", reinvites(), okReinvites())
			}
			return nil
		})
	}
	step("caller refreshes the session", func() { r.caller.do(t, "reinvite", "") })
	r.requireMoreTone(t, recs, " after the session refresh", bothSides)

	humanAt = r.human.logSize()
	r.human.send(t, "pause")
	humanAt = r.human.waitLog(t, "is now paused", humanAt, 30*time.Second)
	r.human.send(t, "resume")
	humanAt = r.human.waitLog(t, "Resuming call", humanAt, 30*time.Second)
	r.human.waitLog(t, "Media streams established", humanAt, 30*time.Second)
	r.requireMoreTone(t, recs, " after the destination's hold and resume", bothSides)

	// Last, as baresip 1.0 records nothing it hears after its own hold
	// (its sndfile dump stops, though the bridge's RTP keeps arriving at
	// 50 packets/s: docs/interop.md): only the human's ear is checked.
	step("caller holds", func() { r.caller.do(t, "hold", "") })
	step("caller resumes", func() { r.caller.do(t, "resume", "") })
	r.requireMoreTone(t, recs, " after the caller's hold and resume", humanSide)

	r.caller.do(t, "hangup", "")
	r.caller.waitEvent(t, "CALL_CLOSED", next, 30*time.Second)
	r.requireEnd(t, callID, "", "remote")
}

// warmSRTP: a warm transfer whose new leg is SIP over TLS to the SBC with
// SRTP (SDES) media: the human's linphonec answers the SRTP offer, the
// bridge turns the caller's RTP into SRTP and back, both people hear each
// other, and the human's hangup ends the call once.
func (r *interopRig) warmSRTP(t *testing.T) {
	r.reset(t)
	recs := len(r.caller.recordings(t))
	humanAt := r.human.logSize()
	callID, next := r.dial(t, numWarmSRTP)
	r.human.waitLog(t, "connected", humanAt, 30*time.Second)
	r.human.waitLog(t, "RTP/SAVP", humanAt, time.Second)
	r.human.waitLog(t, "a=crypto:", humanAt, time.Second)
	r.waitOutcome(t, callID, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
	// linphonec's 180 and 200 come 0.1 ms apart in one TLS read, and
	// sipgo hands each response to a goroutine of its own, so the 200 may
	// reach the transaction first, which then drops the 180. Transfer
	// records the 180 from the transport's read order (issue 19, 6;
	// docs/interop.md): RINGING comes before ANSWERED.
	outcomes := r.outcomes(t, callID)
	ringing := slices.Index(outcomes, batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING.String())
	answered := slices.Index(outcomes, batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED.String())
	require.True(t, ringing >= 0 && ringing < answered, "RINGING before ANSWERED on the TLS leg: %v", outcomes)
	r.expect(callID, numWarmSRTP, "warm-srtp", "INVITE", "succeeded", 200)
	r.requireToneBothWays(t, recs)

	r.human.send(t, "terminate")
	r.caller.waitEvent(t, "CALL_CLOSED", next, 30*time.Second)
	r.requireEnd(t, callID, "destination_hangup", "baton")
}

// failed: the destination is busy (the SBC says 486), never answers (a
// baresip that rings), or unreachable (nothing listens): the handoff
// fails with the destination's answer, and the router's on_all_failed
// (hangup) ends the call with transfer's BYE.
func (r *interopRig) failed(t *testing.T, number, dest string, code int32) {
	r.reset(t)
	callID, next := r.dial(t, number)
	// The summary shows the call's last command: the router's hangup
	// (a BYE handoff, answered 200); the failed INVITE is in
	// transfer_outcomes.
	r.expect(callID, number, "", "BYE", "succeeded", 200)
	r.failures[callID] = HandoffRow{Destination: dest, Method: "INVITE", Status: "failed", SIPCode: code}
	o := r.waitOutcome(t, callID, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED)
	require.Equal(t, code, o.GetSipCode(), "FAILED outcome: %v", o)
	r.caller.waitEvent(t, "CALL_CLOSED", next, 30*time.Second)
	r.requireEnd(t, callID, "handoff_bye", "baton")
}

// waitOutcome waits for the call's transfer outcome with status in Kafka.
func (r *interopRig) waitOutcome(t *testing.T, callID string, status batonv1.OutcomeStatus) *batonv1.TransferOutcome {
	t.Helper()
	var got *batonv1.TransferOutcome
	waitFor(t, "transfer outcome "+status.String()+" for "+callID, 30*time.Second, func() error {
		recs, err := checker.Read(t.Context(), r.s.BrokerAddr)
		if err != nil {
			return err
		}
		var seen []string
		for _, rec := range recs {
			if o, ok := rec.Event.Data.(*batonv1.TransferOutcome); ok && o.GetCallId() == callID {
				seen = append(seen, o.GetStatus().String())
				if o.GetStatus() == status {
					got = o
					return nil
				}
			}
		}
		return fmt.Errorf("outcomes so far %v", seen)
	})
	return got
}

// outcomes are the call's transfer outcomes in Kafka so far, in order.
func (r *interopRig) outcomes(t *testing.T, callID string) []string {
	recs, err := checker.Read(t.Context(), r.s.BrokerAddr)
	require.NoError(t, err)
	var out []string
	for _, rec := range recs {
		if o, ok := rec.Event.Data.(*batonv1.TransferOutcome); ok && o.GetCallId() == callID {
			out = append(out, o.GetStatus().String())
		}
	}
	return out
}

// requireToneBothWays waits until the human has heard 2 s of the
// caller's tone and the caller 2 s of the human's (in the recordings the
// caller made after the first skip files).
func (r *interopRig) requireToneBothWays(t *testing.T, skip int) {
	t.Helper()
	r.requireMoreTone(t, skip, "", bothSides)
}

// Which ears requireMoreTone checks.
const (
	humanSide = 1 << iota
	callerSide
	bothSides = humanSide | callerSide
)

// requireMoreTone is requireToneBothWays counting only what is heard
// from now on: audio that flows again after a hold or a refresh. A
// recording that starts over (shorter than before) counts from zero.
func (r *interopRig) requireMoreTone(t *testing.T, skip int, after string, ears int) {
	t.Helper()
	sides := []struct {
		ear   int
		who   string
		hz    float64
		files func() []string
	}{
		{humanSide, "the human hears the caller's 700 Hz", callerHz, func() []string { return []string{r.human.record} }},
		{callerSide, "the caller hears the human's 1300 Hz", humanHz, func() []string {
			files := r.caller.recordings(t)
			return files[min(skip, len(files)):]
		}},
	}
	for _, side := range sides {
		if ears&side.ear == 0 {
			continue
		}
		base := 0
		if after != "" {
			base, _, _ = heardTone(side.files(), side.hz)
		}
		last := base
		waitFor(t, side.who+after, 40*time.Second, func() error {
			files := side.files()
			if len(files) == 0 {
				return fmt.Errorf("no recording yet")
			}
			n, all, err := heardTone(files, side.hz)
			if err != nil {
				return fmt.Errorf("%w (starts %q)", err, head(files[0], 44))
			}
			if n < last {
				base = 0 // the recording started over
			}
			last = n
			if n-base < minToneWindows {
				return fmt.Errorf("%d new windows of %v Hz; dominant frequencies heard: %v", n-base, side.hz, summarize(all))
			}
			return nil
		})
	}
}

// head is the first n bytes of a file, for messages.
func head(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(data[:min(n, len(data))])
}

// summarize counts the dominant frequencies of windows, for messages.
func summarize(hz []float64) map[float64]int {
	out := map[float64]int{}
	for _, h := range hz {
		out[math.Round(h/10)*10]++
	}
	return out
}

// requireEnd checks the call's end as Baton recorded it: exactly one
// CallEnded in Kafka and one call_ends row in ClickHouse, with reason and
// ended_by, at the time (within 1 s) the one BYE of Baton's dialog
// crossed the SBC; no 481 in the dialog; and ingress's active_calls back
// to 0.
func (r *interopRig) requireEnd(t *testing.T, callID, reason, endedBy string) {
	t.Helper()
	var byes []sbcMessage
	waitFor(t, "the BYE of "+callID+" at the SBC", 30*time.Second, func() error {
		byes = byes[:0]
		for _, m := range r.sbc.messages(t) {
			if m.CallID == callID && !m.Reply && m.Method == "BYE" {
				byes = append(byes, m)
			}
		}
		if len(byes) == 0 {
			return fmt.Errorf("no BYE yet")
		}
		return nil
	})

	var ended []*batonv1.CallEnded
	waitFor(t, "CallEnded for "+callID, 30*time.Second, func() error {
		recs, err := checker.Read(t.Context(), r.s.BrokerAddr)
		if err != nil {
			return err
		}
		ended = ended[:0]
		for _, rec := range recs {
			if e, ok := rec.Event.Data.(*batonv1.CallEnded); ok && e.GetCallId() == callID {
				ended = append(ended, e)
			}
		}
		if len(ended) == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	})

	conn, err := r.s.Open()
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	require.NotContains(t, callID, "'")
	type endRow struct {
		endedMS                 uint64
		endedBy, method, reason string
	}
	var rows []endRow
	waitFor(t, "call_ends row for "+callID, 30*time.Second, func() error {
		q, err := conn.Query(t.Context(), "SELECT ended_ms, ended_by, method, reason FROM call_ends WHERE call_id = '"+callID+"'")
		if err != nil {
			return err
		}
		defer func() { _ = q.Close() }()
		rows = rows[:0]
		for q.Next() {
			var e endRow
			if err := q.Scan(&e.endedMS, &e.endedBy, &e.method, &e.reason); err != nil {
				return err
			}
			rows = append(rows, e)
		}
		if len(rows) == 0 {
			return fmt.Errorf("no row yet")
		}
		return q.Err()
	})

	waitFor(t, "ingress's active_calls back to 0", 30*time.Second, func() error {
		n, err := r.activeCalls(t)
		if err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("active_calls %v", n)
		}
		return nil
	})

	// Everything has settled: now the counts are final.
	var stray []sbcMessage
	for _, m := range r.sbc.messages(t) {
		if m.CallID == callID && m.Reply && m.Status == 481 {
			stray = append(stray, m)
		}
	}
	require.Empty(t, stray, "no request of Baton's dialog was answered 481")
	require.Len(t, byes, 1, "one BYE in Baton's dialog: %+v", byes)
	require.Len(t, ended, 1, "one CallEnded: %v", ended)
	require.Len(t, rows, 1, "one call_ends row: %+v", rows)
	require.Equal(t, reason, ended[0].GetReason())
	require.Equal(t, reason, rows[0].reason)
	require.Equal(t, endedBy, rows[0].endedBy)
	require.Equal(t, "BYE", rows[0].method)
	skew := time.UnixMilli(int64(rows[0].endedMS)).Sub(byes[0].At)
	t.Logf("call %s ended %s by %s; recorded %v after the BYE crossed the SBC", callID, reason, endedBy, skew)
	require.Less(t, skew.Abs(), time.Second, "recorded end %v vs the BYE at %v",
		time.UnixMilli(int64(rows[0].endedMS)).UTC(), byes[0].At.UTC())
}

// activeCalls reads baton_ingress_active_calls from ingress's /metrics.
func (r *interopRig) activeCalls(t *testing.T) (float64, error) {
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, r.metricsURL, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "baton_ingress_active_calls "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no baton_ingress_active_calls in %s", r.metricsURL)
}

// expect notes what ClickHouse's summary must show for a call.
func (r *interopRig) expect(callID, callee, dest, method, status string, code int32) {
	r.handoffs[callID] = HandoffRow{CallID: callID, CalleeNumber: callee, Destination: dest, Method: method,
		Status: status, SIPCode: code}
}

// handoffsInClickHouse reads every call back from ClickHouse with
// schemas/panels/summary.sql (what `baton dev` prints): each call the
// suite placed is there with its number, destination, method, the
// deciding outcome and its SIP code.
func (r *interopRig) handoffsInClickHouse(t *testing.T) {
	require.NotEmpty(t, r.handoffs)
	conn, err := r.s.Open()
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	rows, err := WaitHandoffs(t.Context(), conn, r.since, len(r.handoffs), 60*time.Second)
	require.NoError(t, err)
	got := map[string]HandoffRow{}
	for _, row := range rows {
		got[row.CallID] = row
	}
	for id, want := range r.handoffs {
		row, ok := got[id]
		require.True(t, ok, "call %s not in ClickHouse", id)
		require.Equal(t, want.CalleeNumber, row.CalleeNumber, id)
		require.Equal(t, want.Destination, row.Destination, id)
		require.Equal(t, want.Method, row.Method, id)
		require.Equal(t, want.Status, row.Status, id)
		require.Equal(t, want.SIPCode, row.SIPCode, id)
	}
	for id, want := range r.failures {
		require.NotContains(t, id, "'")
		q, err := conn.Query(t.Context(), "SELECT destination, method, sip_code FROM transfer_outcomes "+
			"WHERE call_id = '"+id+"' AND status = 'failed'")
		require.NoError(t, err)
		var got []HandoffRow
		for q.Next() {
			var row HandoffRow
			require.NoError(t, q.Scan(&row.Destination, &row.Method, &row.SIPCode))
			got = append(got, row)
		}
		require.NoError(t, q.Err())
		require.NoError(t, q.Close())
		require.Len(t, got, 1, "one failed outcome for %s", id)
		require.Equal(t, want.Destination, got[0].Destination, id)
		require.Equal(t, want.Method, got[0].Method, id)
		require.Equal(t, want.SIPCode, got[0].SIPCode, id)
	}
}

// oneEndPerCall runs Baton's own consistency checker over everything the
// calls wrote to Kafka: each call started once and ended once.
func (r *interopRig) oneEndPerCall(t *testing.T) {
	recs, err := checker.Read(t.Context(), r.s.BrokerAddr)
	require.NoError(t, err)
	starts, ends := map[string]int{}, map[string]int{}
	for _, rec := range recs {
		switch m := rec.Event.Data.(type) {
		case *batonv1.CallStarted:
			starts[m.GetDialog().GetCallId()]++
		case *batonv1.CallEnded:
			ends[m.GetCallId()]++
		}
	}
	require.NotEmpty(t, starts)
	for id, n := range starts {
		require.Equal(t, 1, n, "call %s started %d times", id, n)
		require.Equal(t, 1, ends[id], "call %s ended %d times", id, ends[id])
	}
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range ends {
			if !yield(id) {
				return
			}
		}
	})
	for _, id := range ids {
		require.Equal(t, 1, starts[id], "call %s ended but never started", id)
	}
}
