package transfer

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/request"
	"github.com/baton-voice/baton/services/transfer/internal/sipauth"
)

// testPassword is the trunks' password in these tests: it must appear in
// no log line, no event and no SIP message.
const testPassword = "s3cret-Pa55-never-logged"

// TestWarmTransferAnswersA407: the destination's carrier (SIPp) answers
// the new leg's INVITE 407 with an MD5 qop=auth challenge and requires a
// Proxy-Authorization on the second INVITE before it answers; its digest
// response is checked here against the password (SIPp 3.6's verifyauth
// reads Authorization only). The transfer bridges, the second INVITE took
// the next CSeq, and the password is in no log, event or SIP message.
func TestWarmTransferAnswersA407(t *testing.T) {
	t.Parallel()
	metrics := NewMetrics(prometheus.NewRegistry())
	h := start(t, 202, func(o *Options) {
		withInvite(nil)(o)
		o.Metrics = metrics
		o.Destinations = map[string]Destination{"queue": {Auth: &sipauth.Credentials{Username: "baton", Password: testPassword}}}
	})
	caller := startCallerSBC(t, 0)
	dest := startSIPp(t, "dest_auth_407.xml")
	cmd := inviteCommand(caller, "auth407", dest.route())
	h.command(t, cmd)

	h.statuses(t, cmd.CommandId, batonv1.OutcomeStatus_OUTCOME_STATUS_RINGING, batonv1.OutcomeStatus_OUTCOME_STATUS_ANSWERED,
		batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED)
	caller.next(t, sip.INVITE)
	h.fact(t, cmd.CallId, &batonv1.CallEnded{CallId: cmd.CallId, EndedBy: batonv1.Party_PARTY_REMOTE, Method: "BYE"})
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED.String(), h.outcome(t, cmd.CommandId).GetStatus().String())

	log, err := dest.wait(t)
	require.NoError(t, err, "sipp: %s", log)
	first := regexp.MustCompile(`CHALLENGED call_id=\S+ cseq=(\d+)`).FindStringSubmatch(log)
	second := regexp.MustCompile(`AUTH call_id=\S+ cseq=(\d+) proxy_authorization=(.*)`).FindStringSubmatch(log)
	require.NotNil(t, first, log)
	require.NotNil(t, second, "the second INVITE carries Proxy-Authorization: %s", log)
	c1, _ := strconv.Atoi(first[1])
	c2, _ := strconv.Atoi(second[1])
	require.Equal(t, c1+1, c2, "the INVITE with credentials takes the next CSeq")
	cred, err := digest.ParseCredentials(strings.TrimSpace(second[2]))
	require.NoError(t, err)
	require.Equal(t, "baton", cred.Username)
	require.Equal(t, "baton.test", cred.Realm)
	require.Equal(t, "auth", cred.QOP)
	require.Equal(t, "MD5", cred.Algorithm)
	require.Equal(t, dest.route(), cred.URI, "digest-uri is the Request-URI")
	require.Equal(t, expectedResponse(cred, "INVITE", testPassword), cred.Response, "the response proves the password")
	require.Contains(t, log, "BYE call_id=")
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.AuthChallenges.WithLabelValues("invite", AuthAnswered)))

	requireNoSecret(t, h, testPassword)
	msgs, err := os.ReadFile(filepath.Join(filepath.Dir(dest.logFile), "messages.log"))
	require.NoError(t, err)
	require.NotContains(t, string(msgs), testPassword, "the password never travels")
}

// requireNoSecret: no log line of the instances (info and above) and no record on the
// transfers topic or the attempt log holds secret.
func requireNoSecret(t *testing.T, h *harness, secret string) {
	t.Helper()
	require.NotContains(t, h.logs.String(), secret, "the password is in no log line")
	require.Contains(t, h.logs.String(), "answering digest challenge", "the logs were captured")
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.cfg.Brokers...), kgo.ConsumeTopics(h.topics.Transfers, attemptTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	require.NoError(t, err)
	defer cl.Close()
	n := 0
	for n == 0 {
		fetches := cl.PollFetches(t.Context())
		require.NoError(t, t.Context().Err())
		for _, rec := range fetches.Records() {
			n++
			require.NotContains(t, string(rec.Value), secret, "record on %s", rec.Topic)
			for _, hd := range rec.Headers {
				require.NotContains(t, string(hd.Value), secret)
			}
		}
	}
}

// challengingSBC is the caller's SBC (sipgo over UDP) that challenges
// REFER and BYE in the dialog with digest, checks each answer by
// computing it here (RFC 7616 3.4.1), and answers a good one.
type challengingSBC struct {
	addr *net.UDPAddr
	// code is 401 or 407; offer lists the algorithms challenged, in
	// header order; stale, when set, answers the first good answer with a
	// stale=true challenge again (the nonce expired).
	code       int
	offer      []string
	stale      bool
	password   string
	mu         sync.Mutex
	reqs       []*sip.Request
	nonces     int
	stalesDone bool
	// staleEach, when set, answers every good answer to a fresh nonce
	// with a stale challenge (each request costs three CSeqs); refer,
	// when set, is the answer to an authorized REFER.
	staleEach   bool
	staleNonces map[string]bool
	refer       int
}

func startChallengingSBC(t *testing.T, code int, password string, stale bool, offer ...string) *challengingSBC {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("test-challenging-sbc"))
	require.NoError(t, err)
	srv, err := sipgo.NewServer(ua)
	require.NoError(t, err)
	conn, ln := listenUDPAndTCP(t)
	s := &challengingSBC{staleNonces: map[string]bool{}, addr: conn.LocalAddr().(*net.UDPAddr), code: code, offer: offer, stale: stale, password: password}
	handle := func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(s.answer(req))
	}
	srv.OnRefer(handle)
	srv.OnBye(handle)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.ServeUDP(conn) })
	wg.Go(func() { _ = srv.ServeTCP(ln) })
	t.Cleanup(func() {
		require.NoError(t, ua.Close())
		_ = conn.Close()
		_ = ln.Close()
		wg.Wait()
	})
	return s
}

func (s *challengingSBC) requests() []*sip.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*sip.Request(nil), s.reqs...)
}

func (s *challengingSBC) challenge(req *sip.Request, stale bool) *sip.Response {
	name := "WWW-Authenticate"
	if s.code == sip.StatusProxyAuthRequired {
		name = "Proxy-Authenticate"
	}
	res := sip.NewResponseFromRequest(req, s.code, "Unauthorized", nil)
	s.nonces++
	for _, alg := range s.offer {
		v := fmt.Sprintf(`Digest realm="sbc.test", nonce="n%d%s", qop="auth", algorithm=%s`, s.nonces, strings.ToLower(alg), alg)
		if stale {
			v += ", stale=true"
		}
		res.AppendHeader(sip.NewHeader(name, v))
		if stale {
			s.staleNonces[fmt.Sprintf("n%d%s", s.nonces, strings.ToLower(alg))] = true
		}
	}
	return res
}

func (s *challengingSBC) answer(req *sip.Request) *sip.Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, req)
	name := "Authorization"
	if s.code == sip.StatusProxyAuthRequired {
		name = "Proxy-Authorization"
	}
	h := req.GetHeader(name)
	if h == nil {
		return s.challenge(req, false)
	}
	cred, err := digest.ParseCredentials(h.Value())
	if err != nil || cred.Response != expectedResponse(cred, req.Method.String(), s.password) ||
		cred.Nonce != fmt.Sprintf("n%d%s", s.nonces, strings.ToLower(cred.Algorithm)) {
		return s.challenge(req, false)
	}
	if s.stale && !s.stalesDone {
		s.stalesDone = true
		return s.challenge(req, true)
	}
	if s.staleEach && !s.staleNonces[cred.Nonce] {
		return s.challenge(req, true)
	}
	code := 202
	if s.refer != 0 && req.Method == sip.REFER {
		code = s.refer
	}
	if req.Method == sip.BYE {
		code = 200
	}
	return sip.NewResponseFromRequest(req, code, "OK", nil)
}

// expectedResponse computes the digest response of RFC 7616 3.4.1 for
// qop=auth from the answer's own fields and the password.
func expectedResponse(c *digest.Credentials, method, password string) string {
	var h func() hash.Hash
	switch strings.ToUpper(c.Algorithm) {
	case "SHA-256":
		h = sha256.New
	case "MD5", "":
		h = md5.New
	default:
		return "unsupported " + c.Algorithm
	}
	sum := func(s string) string {
		x := h()
		x.Write([]byte(s))
		return hex.EncodeToString(x.Sum(nil))
	}
	ha1 := sum(c.Username + ":" + c.Realm + ":" + password)
	ha2 := sum(method + ":" + c.URI)
	return sum(fmt.Sprintf("%s:%s:%08x:%s:%s:%s", ha1, c.Nonce, c.Nc, c.Cnonce, c.QOP, ha2))
}

// TestInDialogChallenges: the caller's SBC challenges the REFER and the
// BYE in the dialog; transfer answers with the trunk's credentials, the
// strongest algorithm offered, a stale nonce once more, each time with
// the next CSeq; a wrong password is answered once and the challenge is
// the outcome.
func TestInDialogChallenges(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		code     int
		offer    []string
		stale    bool
		method   batonv1.Method
		password string
		// sent is how many requests the SBC gets; alg the algorithm used.
		sent     int
		alg      string
		wantCode int32
		result   string
	}{
		{name: "REFER 401 SHA-256 over MD5", code: 401, offer: []string{"MD5", "SHA-256"}, method: batonv1.Method_METHOD_REFER,
			password: testPassword, sent: 2, alg: "SHA-256", wantCode: 202, result: AuthAnswered},
		{name: "REFER 407 MD5", code: 407, offer: []string{"MD5"}, method: batonv1.Method_METHOD_REFER,
			password: testPassword, sent: 2, alg: "MD5", wantCode: 202, result: AuthAnswered},
		{name: "BYE 407 stale nonce retried", code: 407, offer: []string{"SHA-256"}, stale: true, method: batonv1.Method_METHOD_BYE,
			password: testPassword, sent: 3, alg: "SHA-256", wantCode: 200, result: AuthStale},
		{name: "REFER wrong password answered once", code: 401, offer: []string{"SHA-256"}, method: batonv1.Method_METHOD_REFER,
			password: "another", sent: 2, alg: "SHA-256", wantCode: 401, result: AuthRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sbcSide := startChallengingSBC(t, tc.code, tc.password, tc.stale, tc.offer...)
			metrics := NewMetrics(prometheus.NewRegistry())
			h := start(t, 202, func(o *Options) {
				o.Metrics = metrics
				o.Trunks = []Trunk{{Name: "carrier", Networks: []netip.Prefix{testPeers},
					Auth: &sipauth.Credentials{Username: "baton", Password: testPassword, Realm: "sbc.test"}}}
			})
			cmd := referCommand(h, "auth-"+strconv.Itoa(tc.code)+tc.alg)
			cmd.CommandId += strings.ReplaceAll(tc.name, " ", "-")
			cmd.Method = tc.method
			cmd.Dialog = dialogTo(sbcSide.addr, cmd.CallId)
			cmd.Dialog.NextLocalCseq = 7
			h.command(t, cmd)
			o := h.outcome(t, cmd.CommandId)
			require.Equal(t, tc.wantCode, o.GetSipCode(), o.GetDetail())

			reqs := sbcSide.requests()
			require.Len(t, reqs, tc.sent, "one answer per challenge, and one more for a stale nonce")
			for i, r := range reqs {
				require.Equal(t, uint32(7+i), r.CSeq().SeqNo, "request %d takes the next CSeq", i)
				if i > 0 {
					b0, _ := reqs[i-1].Via().Params.Get("branch")
					b1, _ := r.Via().Params.Get("branch")
					require.NotEqual(t, b0, b1, "a new transaction")
					name := "Authorization"
					if tc.code == 407 {
						name = "Proxy-Authorization"
					}
					hd := r.GetHeader(name)
					require.NotNil(t, hd, "request %d answers the challenge", i)
					require.Contains(t, hd.Value(), "algorithm="+tc.alg)
					require.Len(t, r.GetHeaders(name), 1, "the earlier answer is replaced")
				}
			}
			require.Equal(t, 1.0, testutil.ToFloat64(metrics.AuthChallenges.WithLabelValues(strings.ToLower(reqs[0].Method.String()), tc.result)))
			requireNoSecret(t, h, testPassword)
		})
	}
}

// TestChallengesStayInTheAttemptsCSeqBlock: an SBC that challenges every
// REFER twice (a fresh nonce, then stale) and then answers 481 soon after
// the call started makes transfer retry; answers and retries stop before
// they leave the attempt's block of CSeq numbers (one kept for the BYE),
// so the router's next attempt in the dialog still counts up.
func TestChallengesStayInTheAttemptsCSeqBlock(t *testing.T) {
	t.Parallel()
	sbcSide := startChallengingSBC(t, 401, testPassword, false, "SHA-256")
	sbcSide.mu.Lock()
	sbcSide.staleEach, sbcSide.refer = true, sip.StatusCallTransactionDoesNotExists
	sbcSide.mu.Unlock()
	h := start(t, 202, func(o *Options) {
		o.Trunks = []Trunk{{Name: "carrier", Networks: []netip.Prefix{testPeers},
			Auth: &sipauth.Credentials{Username: "baton", Password: testPassword}}}
	})
	cmd := referCommand(h, "cseq-block")
	cmd.Dialog = dialogTo(sbcSide.addr, cmd.CallId)
	cmd.Dialog.NextLocalCseq = 100
	h.command(t, cmd)
	o := h.outcome(t, cmd.CommandId)
	require.Equal(t, batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED.String(), o.GetStatus().String(), o.GetDetail())
	require.Contains(t, o.GetDetail(), "no CSeq left in the attempt's block")
	reqs := sbcSide.requests()
	last := reqs[len(reqs)-1].CSeq().SeqNo
	require.Equal(t, uint32(100+request.CSeqsPerAttempt-2), last, "the block's last number but one, and no further")
	for i := 1; i < len(reqs); i++ {
		require.Equal(t, reqs[i-1].CSeq().SeqNo+1, reqs[i].CSeq().SeqNo, "each request takes the next CSeq")
	}
}
