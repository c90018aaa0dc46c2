package transfer

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/sipauth"
)

// kamailio is Debian's Kamailio running testdata/kamailio-auth.cfg: a
// carrier that checks digest answers itself (auth module, SHA-256,
// qop=auth).
type kamailio struct {
	addr *net.UDPAddr
	mu   sync.Mutex
	out  bytes.Buffer
}

func (k *kamailio) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.out.Write(p)
}

func (k *kamailio) log() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.out.String()
}

func startKamailio(t *testing.T, password, destURI string) *kamailio {
	t.Helper()
	bin, err := exec.LookPath("kamailio")
	require.NoError(t, err, "Kamailio is required (Debian package kamailio)")
	cfg, err := os.ReadFile(filepath.Join("testdata", "kamailio-auth.cfg"))
	require.NoError(t, err)
	port := freeUDPPort(t)
	k := &kamailio{addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}}
	doc := strings.NewReplacer("LISTEN", k.addr.String(), "PASSWORD", password, "DEST_URI", destURI).Replace(string(cfg))
	dir := t.TempDir()
	path := filepath.Join(dir, "kamailio.cfg")
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
	cmd := exec.CommandContext(t.Context(), bin, "-DD", "-E", "-f", path, "-Y", dir)
	cmd.Stdout, cmd.Stderr = k, k
	// Kamailio forks its workers: they go with it, by process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		// SIGTERM lets it flush its log; WaitDelay bounds the wait.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		<-done
		if t.Failed() {
			t.Logf("kamailio:\n%s", k.log())
		}
	})
	require.Eventually(t, func() bool { return bound(t, "udp", port) }, 10*time.Second, 5*time.Millisecond,
		"kamailio did not bind its port: %s", k.log())
	return k
}

// TestDigestAgainstKamailio: Kamailio, checking the answers with its auth
// module, challenges the REFER and the BYE in the caller's dialog (401,
// SHA-256) and, as the destination's proxy, the new leg's INVITE (407);
// transfer answers each with the trunk's credentials and the next CSeq,
// and the warm transfer bridges to the SIPp destination behind it; the
// BYE that ends the new leg, routed through Kamailio, is challenged and
// answered too.
func TestDigestAgainstKamailio(t *testing.T) {
	t.Parallel()
	dest := startSIPp(t, "dest_answer_rr.xml")
	carrier := startKamailio(t, testPassword, "sip:127.0.0.1:"+strconv.Itoa(dest.port))
	metrics := NewMetrics(prometheus.NewRegistry())
	h := start(t, 202, func(o *Options) {
		withInvite(nil)(o)
		o.Metrics = metrics
		o.Trunks = []Trunk{{Name: "carrier", Networks: []netip.Prefix{testPeers},
			Auth: &sipauth.Credentials{Username: "baton", Password: testPassword, Realm: "carrier.test"}}}
	})

	refer := referCommand(h, "kam-refer")
	refer.Dialog = dialogTo(carrier.addr, refer.CallId)
	refer.Dialog.NextLocalCseq = 10
	h.command(t, refer)
	requireOutcome(t, h.outcome(t, refer.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_ACCEPTED, 202)

	bye := referCommand(h, "kam-bye")
	bye.Method = batonv1.Method_METHOD_BYE
	bye.Dialog = dialogTo(carrier.addr, bye.CallId)
	bye.Dialog.NextLocalCseq = 20
	h.command(t, bye)
	requireOutcome(t, h.outcome(t, bye.CommandId), batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, 200)

	caller := startCallerSBC(t, 0)
	route := "sip:queue@" + carrier.addr.String()
	warm := inviteCommand(caller, "kam-invite", route)
	h.command(t, warm)
	var o *batonv1.TransferOutcome
	for o = h.outcome(t, warm.CommandId); o.GetStatus() == batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING; o = h.outcome(t, warm.CommandId) {
	}
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED.String(), o.GetStatus().String(), o.GetDetail())
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED.String(), h.outcome(t, warm.CommandId).GetStatus().String())
	h.fact(t, warm.CallId, &batonv1.CallEnded{CallId: warm.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), h.outcome(t, warm.CommandId).GetStatus().String())
	log, err := dest.wait(t)
	require.NoError(t, err, "sipp: %s", log)
	require.Contains(t, log, "x_customer_id=CUST-7")
	require.Contains(t, log, "BYE call_id=", "the destination got the BYE once it was authorized")

	klog := carrier.log()
	for _, want := range []string{
		`CHALLENGE 401 REFER cseq=10\b`, `AUTHORIZED REFER cseq=11\b`,
		`CHALLENGE 401 BYE cseq=20\b`, `AUTHORIZED BYE cseq=21\b`,
		`CHALLENGE 407 INVITE cseq=(\d+)`, `AUTHORIZED INVITE cseq=(\d+)`,
		`CHALLENGE 401 BYE routed call=\S+ cseq=(\d+)`, `AUTHORIZED BYE routed call=\S+ cseq=(\d+)`,
	} {
		require.Regexp(t, regexp.MustCompile(want), klog)
	}
	c1, _ := strconv.Atoi(regexp.MustCompile(`CHALLENGE 407 INVITE cseq=(\d+)`).FindStringSubmatch(klog)[1])
	c2, _ := strconv.Atoi(regexp.MustCompile(`AUTHORIZED INVITE cseq=(\d+)`).FindStringSubmatch(klog)[1])
	require.Equal(t, c1+1, c2)
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.AuthChallenges.WithLabelValues("refer", AuthAnswered)))
	b1, _ := strconv.Atoi(regexp.MustCompile(`CHALLENGE 401 BYE routed call=\S+ cseq=(\d+)`).FindStringSubmatch(klog)[1])
	b2, _ := strconv.Atoi(regexp.MustCompile(`AUTHORIZED BYE routed call=\S+ cseq=(\d+)`).FindStringSubmatch(klog)[1])
	require.Equal(t, b1+1, b2, "the destination leg's BYE with credentials takes the next CSeq")
	require.Equal(t, 2.0, testutil.ToFloat64(metrics.AuthChallenges.WithLabelValues("bye", AuthAnswered)),
		"the BYE in the caller's dialog and the one to the destination")
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.AuthChallenges.WithLabelValues("invite", AuthAnswered)))
	requireNoSecret(t, h, testPassword)
}
