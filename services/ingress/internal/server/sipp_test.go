package server

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/kafka/kafkatest"
	"github.com/baton-voice/baton/services/ingress/internal/config"
)

// sippBin is SIPp (Debian sip-tester); the test fails without it, except
// under -short where the SIPp flows are not run.
func sippBin(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("SIPp flows are integration tests; not run with -short")
	}
	bin, err := exec.LookPath("sipp")
	require.NoError(t, err, "SIPp is required: install Debian's sip-tester")
	return bin
}

// freeUDPPort is a port that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	port := c.LocalAddr().(*net.UDPAddr).Port
	require.NoError(t, c.Close())
	return port
}

// sipp is one SIPp run of a deploy/sipp scenario against ingress.
type sipp struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	tmp  string
	done chan error
}

func startSIPp(t *testing.T, in *ingress, scenario string, calls int) *sipp {
	t.Helper()
	bin := sippBin(t)
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "..", "deploy", "sipp"))
	require.NoError(t, err)
	s := &sipp{tmp: t.TempDir(), done: make(chan error, 1)}
	s.cmd = exec.CommandContext(t.Context(), bin,
		"127.0.0.1:"+strconv.Itoa(in.port),
		"-sf", filepath.Join(dir, scenario),
		"-i", "127.0.0.1", "-p", strconv.Itoa(freeUDPPort(t)),
		"-mi", "127.0.0.1", "-mp", strconv.Itoa(freeUDPPort(t)&^1),
		"-m", strconv.Itoa(calls), "-l", "1",
		"-timeout", "60s", "-timeout_error",
		"-trace_err", "-error_file", filepath.Join(s.tmp, "errors.log"),
		"-trace_msg", "-message_file", filepath.Join(s.tmp, "messages.log"),
		"-nostdin")
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	require.NoError(t, s.cmd.Start())
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-s.done:
			s.done <- err
		default:
			_ = s.cmd.Process.Kill()
			s.done <- <-s.done
		}
		if t.Failed() {
			msgs, _ := os.ReadFile(filepath.Join(s.tmp, "messages.log"))
			errs, _ := os.ReadFile(filepath.Join(s.tmp, "errors.log"))
			t.Logf("sipp output:\n%s\nmessages:\n%s\nerrors:\n%s", s.out.String(), msgs, errs)
		}
	})
	return s
}

// wait requires SIPp to exit 0 (every call passed the scenario).
func (s *sipp) wait(t *testing.T) {
	t.Helper()
	err := <-s.done
	s.done <- err
	require.NoError(t, err, "sipp failed (its logs follow)")
}

func runSIPp(t *testing.T, in *ingress, scenario string, calls int) {
	t.Helper()
	startSIPp(t, in, scenario, calls).wait(t)
}

// TestSIPpFlows drives ingress with the SIPp scenarios of deploy/sipp and
// checks the facts each flow publishes.
func TestSIPpFlows(t *testing.T) {
	sippBin(t)
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, nil)
	consumer := newCalls(t, brokers, topics.Calls)
	next := func(t *testing.T, typ string) events.Event {
		t.Helper()
		ev := consumer.next(t)
		require.Equal(t, typ, ev.Type)
		return ev
	}

	t.Run("basic", func(t *testing.T) {
		runSIPp(t, in, "ingress_basic.xml", 1)
		started := next(t, events.TypeCallStarted)
		m := ended(t, next(t, events.TypeCallEnded), started.Subject).GetMedia()
		require.Equal(t, "PCMA", m.GetCodec())
		require.Positive(t, m.GetPackets(), "SIPp's PCMA pcap reached the media anchor")
		require.Greater(t, m.GetBytes(), 12*m.GetPackets())
	})
	t.Run("caller hangs up", func(t *testing.T) {
		runSIPp(t, in, "ingress_caller_hangup.xml", 1)
		started := next(t, events.TypeCallStarted)
		e := ended(t, next(t, events.TypeCallEnded), started.Subject)
		require.Equal(t, "BYE", e.GetMethod())
		require.Equal(t, batonv1.Party_PARTY_REMOTE, e.GetEndedBy())
		require.Equal(t, `Q.850;cause=16;text="Normal call clearing"`, e.GetReason())
	})
	t.Run("re-invite", func(t *testing.T) {
		runSIPp(t, in, "ingress_reinvite.xml", 1)
		started := next(t, events.TypeCallStarted)
		want := []struct {
			dir, codec string
			hold       bool
			cseq       uint32
		}{{"recvonly", "PCMA", true, 2}, {"sendrecv", "PCMA", false, 3}, {"sendrecv", "PCMU", false, 5}}
		for _, w := range want {
			u := next(t, events.TypeCallUpdated).Data.(*batonv1.CallUpdated)
			require.Equal(t, started.Subject, u.GetCallId())
			require.Equal(t, w.dir, u.GetDirection())
			require.Equal(t, w.codec, u.GetCodec())
			require.Equal(t, w.hold, u.GetHold())
			require.Equal(t, w.cseq, u.GetCseq())
		}
		require.Equal(t, "PCMU", ended(t, next(t, events.TypeCallEnded), started.Subject).GetMedia().GetCodec())
	})
	t.Run("info dtmf", func(t *testing.T) {
		runSIPp(t, in, "ingress_info_dtmf.xml", 1)
		started := next(t, events.TypeCallStarted)
		for _, w := range []struct {
			digit string
			ms    uint32
		}{{"5", 160}, {"#", 0}} {
			d := next(t, events.TypeDtmfReceived).Data.(*batonv1.DtmfReceived)
			require.Equal(t, started.Subject, d.GetCallId())
			require.Equal(t, w.digit, d.GetDigit())
			require.Equal(t, w.ms, d.GetDurationMs())
			require.Equal(t, "info", d.GetSource())
		}
		ended(t, next(t, events.TypeCallEnded), started.Subject)
	})
	t.Run("large x- headers", func(t *testing.T) {
		runSIPp(t, in, "ingress_large_headers.xml", 1)
		ev := next(t, events.TypeCallStarted)
		s := ev.Data.(*batonv1.CallStarted)
		vars := s.GetVariables()
		require.Equal(t, "C-1001", vars["Customer-Id"])
		require.Equal(t, "billing", vars["intent"])
		require.Equal(t, "en-US", vars["LANGUAGE"])
		require.Equal(t, "gold", vars["Account-Tier"])
		require.Len(t, vars["Long"], 1100, "never truncated")
		require.EqualValues(t, 1, s.GetOversizedHeaders())
		ended(t, next(t, events.TypeCallEnded), ev.Subject)
	})
}

func ended(t *testing.T, ev events.Event, callID string) *batonv1.CallEnded {
	t.Helper()
	e := ev.Data.(*batonv1.CallEnded)
	require.Equal(t, callID, e.GetCallId())
	return e
}

// TestSIPpCancel holds the CallStarted publish in the broker until the
// SIPp CANCEL has reached ingress, so the CANCEL always precedes the 200.
func TestSIPpCancel(t *testing.T) {
	sippBin(t)
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topics.All()...))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce)
	var holding atomic.Bool
	cluster.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		if holding.CompareAndSwap(false, true) {
			cluster.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	brokers := cluster.ListenAddrs()
	in := startIngress(t, brokers, nil)
	consumer := newCalls(t, brokers, topics.Calls)

	s := startSIPp(t, in, "ingress_cancel.xml", 1)
	require.Eventually(t, func() bool {
		in.srv.mu.Lock()
		defer in.srv.mu.Unlock()
		for _, c := range in.srv.calls {
			if cancelled, _ := c.wasCancelled(); cancelled {
				return true
			}
		}
		return false
	}, 30e9, 5e6, "the CANCEL never reached ingress")
	releaseOnce()
	s.wait(t)

	require.Equal(t, events.TypeCallStarted, consumer.next(t).Type)
	ev := consumer.next(t)
	require.Equal(t, events.TypeCallEnded, ev.Type)
	e := ev.Data.(*batonv1.CallEnded)
	require.Equal(t, "CANCEL", e.GetMethod())
	require.Equal(t, `SIP;cause=487;text="caller hung up"`, e.GetReason())
}

// TestSIPpOverCapacity: with limits.max_calls 1 and a call up, every SIPp
// INVITE gets 503 with Retry-After and is counted.
func TestSIPpOverCapacity(t *testing.T) {
	sippBin(t)
	t.Parallel()
	topics := kafka.DefaultConfig().Topics
	brokers := kafkatest.NewCluster(t, 1, topics.All()...)
	in := startIngress(t, brokers, func(c *config.Config) { c.Limits.MaxCalls = 1 })
	dial(t, in, "capacity-holder", "0")
	runSIPp(t, in, "ingress_over_capacity.xml", 3)
	require.EqualValues(t, 3, in.srv.Stats().OverloadCalls.Load())
	in.srv.mu.Lock()
	require.Len(t, in.srv.calls, 1)
	in.srv.mu.Unlock()
}
