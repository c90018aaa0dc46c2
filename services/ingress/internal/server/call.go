package server

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/ingress/internal/agent"
	"github.com/baton-voice/baton/services/ingress/internal/headers"
	"github.com/baton-voice/baton/services/ingress/internal/rtp"
	"github.com/baton-voice/baton/services/ingress/internal/sdp"
	"github.com/baton-voice/baton/services/ingress/internal/trunks"
)

// inboundCall is one call ingress answered, the UAS side of its dialog,
// from the initial INVITE to its end. The Server admits the INVITE and
// keeps the call in its table; the call does the rest itself:
//
//   - onCancel: a CANCEL of the INVITE (sipgo answers it, and the
//     INVITE 487);
//   - open: what the INVITE and ingress's SDP answer settled;
//   - answer: the 200 OK, retransmitted until the ACK (awaitAck);
//   - onReInvite (reinvite.go): offer/answer in the dialog;
//   - onAck, onBye, onInfo, onNotify (indialog.go): the far end's
//     requests in the dialog;
//   - mediaTimedOut, moveMedia (mediawatch.go): the media timeout;
//     rtpDigits (dtmf.go): the RFC 4733 digits of its media session;
//   - end: the one way a call ends, with an endReason; drop releases
//     it at shutdown without ending it.
//
// It reaches the server only through its callEnv.
type inboundCall struct {
	env *callEnv
	id  string // Call-ID

	// Set by open, before the call enters the table; read-only after.
	start time.Time
	media *rtp.Session
	trunk *trunks.Trunk
	// dialog is the dialog as CallStarted told it, udp the listener the
	// INVITE came to (nil over TCP and TLS): what ingress's own BYE needs.
	dialog *batonv1.Dialog
	udp    *net.UDPConn

	acked chan struct{} // closed by the ACK of the 2xx
	done  chan struct{} // closed when the call ends or is dropped

	mu           sync.Mutex
	state        callState
	cancelled    bool
	cancelReason string
	// The media session's offer/answer state: the o= line ingress
	// numbers (RFC 3264 8), the SDP it last sent, the codec in force.
	sdpSession uint64
	sdpVersion uint64
	localSDP   []byte
	codec      string
	// remoteCSeq is the CSeq of the last INVITE the far end sent in the
	// dialog; a re-INVITE must be above it (RFC 3261 12.2.2).
	remoteCSeq uint32
	// reinvite is the re-INVITE answered 200 and waiting for its ACK.
	reinvite *reinvite
	// remoteSends is whether the last offer/answer lets the caller send
	// RTP (its direction sendrecv or sendonly); mediaSince is when that
	// answer took effect. The media timeout counts from the later of it
	// and the last packet, and only while remoteSends.
	remoteSends bool
	mediaSince  time.Time
	hangingUp   bool // the media watch picked it
	mediaMoved  bool // transfer bridged the caller's media elsewhere
	// bridge is where the bridge receives the caller's media, once moved
	// (zero when transfer gave no SDP): re-INVITEs are answered from it.
	bridge sdp.Bridge
	// agent is the call's open agent stream (agent.go), nil without one;
	// ending is set once the call is ending, after which none is opened.
	agent  *agent.Stream
	ending bool
	// selected holds the router's latest AgentSelected for the call, read
	// once when it dials its agent (agent_selection_wait).
	selected chan *batonv1.AgentSelected
	// refers is the far end's REFERs under refer.policy route (refer.go).
	refers referState
}

// callEnv is all a call reaches of the server that answered it: the call
// table (remove), the calls topic (facts), the SIP client for its BYE
// (byes), the log and a few settings. The Server builds one in Listen and
// every call shares it.
type callEnv struct {
	log *slog.Logger
	// remove takes a call out of the table; only the first caller gets
	// true, which is what makes a call end once.
	remove     func(*inboundCall) bool
	facts      factPublisher
	byes       byeSender
	foreignRTP *atomic.Uint64  // Stats.ForeignRTP
	stats      *Stats          // the agent stream counters
	background *sync.WaitGroup // Server.background: a call's goroutines

	t1         time.Duration // RFC 3261 T1 of the 2xx retransmission; sip.T1
	sdpHost    string        // the address in ingress's SDP
	viaHost    string        // external_host: the sent-by of ingress's BYE
	retryAfter string        // of a 503
}

// factPublisher writes a call's facts to the calls topic (publisher).
type factPublisher interface {
	// publish waits until Kafka has msg: for facts the answer waits on.
	publish(ctx context.Context, callID string, msg proto.Message) error
	// publishAsync queues msg: for facts nothing waits on.
	publishAsync(ctx context.Context, callID string, msg proto.Message)
	// publishEnded retries until Kafka has msg.
	publishEnded(ctx context.Context, callID string, msg *batonv1.CallEnded)
}

// byeSender starts the client transaction of ingress's BYE (byeClient);
// done is called once the transaction is over.
type byeSender interface {
	send(ctx context.Context, req *sip.Request) (tx sip.ClientTransaction, done func(), err error)
}

// callState is where an answered call stands.
type callState int

const (
	statePending   callState = iota // CallStarted being published
	stateAnswered                   // 200 OK sent, waiting for ACK
	stateConfirmed                  // ACK received
)

func newInboundCall(id string, env *callEnv) *inboundCall {
	return &inboundCall{env: env, id: id, acked: make(chan struct{}), done: make(chan struct{}),
		selected: make(chan *batonv1.AgentSelected, 1)}
}

// onCancel is the INVITE transaction's CANCEL callback: sipgo has
// answered the CANCEL 200 and the INVITE 487, and the call ends with the
// CANCEL's Reason once it is in the table (answer).
func (c *inboundCall) onCancel(cancel *sip.Request) {
	c.mu.Lock()
	c.cancelled = true
	c.cancelReason = headers.Value(cancel.Headers(), "Reason")
	c.mu.Unlock()
}

// wasCancelled reports whether the INVITE was cancelled (sipgo then
// answered 487) and the CANCEL's Reason.
func (c *inboundCall) wasCancelled() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cancelled, c.cancelReason
}

// callSetup is what an initial INVITE and ingress's answer to it settled.
type callSetup struct {
	dialog *batonv1.Dialog
	trunk  *trunks.Trunk
	udp    *net.UDPConn
	media  *rtp.Session
	answer sdp.Answer
	start  time.Time
	// sessionID is the o= line's session id, and its first version.
	sessionID uint64
	// cseq is the INVITE's CSeq number.
	cseq uint32
}

// open records what the INVITE settled and puts the first offer/answer
// into force on the media session. It runs before the call enters the
// table.
func (c *inboundCall) open(s callSetup) {
	c.mu.Lock()
	c.start, c.media, c.trunk, c.dialog, c.udp = s.start, s.media, s.trunk, s.dialog, s.udp
	c.sdpSession, c.sdpVersion, c.localSDP, c.codec = s.sessionID, s.sessionID, s.answer.SDP, s.answer.Codec.Name
	c.remoteSends, c.mediaSince = remoteSends(s.answer), s.start
	c.remoteCSeq = s.cseq
	c.mu.Unlock()
	s.media.SetMedia(mediaOf(s.answer))
}

// matches reports whether a request with these tags belongs to c's
// dialog: ours in To, the caller's in From.
func (c *inboundCall) matches(toTag, fromTag string) bool {
	return toTag == c.dialog.GetLocalTag() && fromTag == c.dialog.GetRemoteTag()
}

// answer sends the 200 OK (with ingress's SDP and contact) once
// CallStarted is published, and retransmits it until the ACK. A CANCEL
// that came before ends the call instead. It reports whether the ACK
// came.
func (c *inboundCall) answer(ctx context.Context, req *sip.Request, tx sip.ServerTransaction, contact string, a sdp.Answer) bool {
	if cancelled, reason := c.wasCancelled(); cancelled {
		c.end(ctx, byRemote(sip.CANCEL, reason))
		return false
	}
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", a.SDP)
	res.To().Params.Add("tag", c.dialog.GetLocalTag())
	res.AppendHeader(sip.NewHeader("Contact", contact))
	res.AppendHeader(sip.NewHeader("Allow", allow))
	ct := sip.ContentTypeHeader("application/sdp")
	res.AppendHeader(&ct)
	c.setState(stateAnswered)
	if err := tx.Respond(res); err != nil {
		c.env.log.WarnContext(ctx, "send 200 ok", "call_id", c.id, "err", err)
	}
	// A CANCEL that crossed the 200 was answered 487 before it, so the
	// flag is set exactly when the caller saw the call cancelled.
	if cancelled, reason := c.wasCancelled(); cancelled {
		c.end(ctx, byRemote(sip.CANCEL, reason))
		return false
	}
	c.env.log.InfoContext(ctx, "call answered", "call_id", c.id, "codec", a.Codec.Name, "rtp_port", c.media.Port(),
		"remote_rtp", a.RemoteAddr)
	return c.awaitAck(ctx, tx, res)
}

// awaitAck retransmits the 200 OK until the ACK arrives (RFC 3261 13.3.1.4;
// sipgo's transaction leaves 2xx retransmission to the UAS core). It
// reports whether the ACK came.
func (c *inboundCall) awaitAck(ctx context.Context, tx sip.ServerTransaction, res *sip.Response) bool {
	interval := c.env.t1
	retransmit := time.NewTimer(interval)
	defer retransmit.Stop()
	giveUp := time.NewTimer(64 * c.env.t1)
	defer giveUp.Stop()
	for {
		select {
		case <-c.acked:
			return true
		case <-tx.Acks(): // an ACK sent in the INVITE's transaction
			c.ack()
			return true
		case <-c.done:
			return false
		case <-ctx.Done():
			return false
		case <-giveUp.C:
			// RFC 3261 13.3.1.4: the session is over; BYE ends it for
			// the far end too (docs/decisions/0009).
			c.env.log.WarnContext(ctx, "no ack for 200 ok; ending the call", "call_id", c.id)
			c.end(ctx, byBaton(reasonAckTimeout))
			return false
		case <-retransmit.C:
			if err := tx.Respond(res); err != nil {
				c.env.log.WarnContext(ctx, "retransmit 200 ok", "call_id", c.id, "err", err)
			}
			interval = min(2*interval, sip.T2)
			retransmit.Reset(interval)
		}
	}
}

// ack confirms the dialog: the ACK of the 2xx came.
func (c *inboundCall) ack() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateConfirmed {
		c.state = stateConfirmed
		close(c.acked)
	}
}

func (c *inboundCall) setState(st callState) {
	c.mu.Lock()
	c.state = st
	c.mu.Unlock()
}

// endReason says who ended a call, with which method, and why: what its
// CallEnded carries.
type endReason struct {
	by     batonv1.Party
	method sip.RequestMethod
	reason string
	// byeSent is set when another stage (transfer) already sent the BYE
	// that ended the dialog: ingress records the end and sends none.
	byeSent bool
}

// byRemote is the far end ending the call with method (BYE, or CANCEL
// before the ACK) and the request's Reason header.
func byRemote(method sip.RequestMethod, reason string) endReason {
	return endReason{by: batonv1.Party_PARTY_REMOTE, method: method, reason: reason}
}

// byBaton is ingress ending a dead dialog for reason; it does so only
// with a BYE of its own (docs/decisions/0009).
func byBaton(reason string) endReason {
	return endReason{by: batonv1.Party_PARTY_BATON, method: sip.BYE, reason: reason}
}

// byTransfer is transfer's BYE having ended the dialog, for reason.
func byTransfer(reason string) endReason {
	return endReason{by: batonv1.Party_PARTY_BATON, method: sip.BYE, reason: reason, byeSent: true}
}

// end ends c, once: the first of a BYE, a CANCEL, the ACK wait and the
// media watch to get here takes c out of the table, sends ingress's BYE
// when ingress ends the call, releases the media, publishes CallEnded
// and, for ingress's BYE, waits (at most until ctx ends or the BYE's
// transaction times out) for its answer. Every later end does nothing.
func (c *inboundCall) end(ctx context.Context, why endReason) {
	if !c.env.remove(c) {
		return
	}
	c.mu.Lock()
	c.ending = true
	c.mu.Unlock()
	var (
		bye     sip.ClientTransaction
		byeDone func()
	)
	if why.by == batonv1.Party_PARTY_BATON && !why.byeSent {
		var err error
		if bye, byeDone, err = c.sendBye(ctx); err != nil {
			c.env.log.WarnContext(ctx, "bye not sent", "call_id", c.id, "reason", why.reason, "err", err)
		}
	}
	c.closeAgent(ctx, agent.ReasonCallEnded) // its AgentDisconnected goes before CallEnded
	st := c.release(ctx)
	d := time.Since(c.start)
	c.env.log.InfoContext(ctx, "call ended", "call_id", c.id, "ended_by", why.by.String(), "method", string(why.method),
		"reason", why.reason, "duration", d.String(), "rtp_packets", st.Packets, "rtp_bytes", st.Bytes, "rtp_lost", st.Lost,
		"jitter_ms", st.JitterMS, "rtp_foreign", st.Foreign)
	c.env.foreignRTP.Add(st.Foreign)
	c.mu.Lock()
	codec := c.codec
	c.mu.Unlock()
	ended := &batonv1.CallEnded{
		CallId:   c.id,
		EndedBy:  why.by,
		Method:   string(why.method),
		Reason:   why.reason,
		Duration: durationpb.New(d),
		Media: &batonv1.MediaStats{
			Packets: st.Packets, Bytes: st.Bytes, Lost: st.Lost, JitterMs: st.JitterMS, Codec: codec,
		},
	}
	c.env.facts.publishEnded(ctx, c.id, ended) // retried until Kafka takes it
	if bye != nil {
		c.awaitBye(ctx, bye, byeDone)
	}
}

// drop releases c at shutdown, after the Server emptied its table,
// without ending it: no BYE, no CallEnded. The dialog goes with the
// process; the next start's EndOrphans publishes its CallEnded.
func (c *inboundCall) drop(ctx context.Context) {
	c.mu.Lock()
	c.ending = true
	stream := c.agent
	c.mu.Unlock()
	if c.takeAgent(stream) {
		stream.Close(agent.ReasonShutdown)
	}
	st := c.release(ctx)
	c.env.log.InfoContext(ctx, "call dropped at shutdown", "call_id", c.id, "rtp_packets", st.Packets)
}

// release stops c's waits (ACK, re-INVITE ACK) and closes its RTP
// session, returning the session's counters.
func (c *inboundCall) release(ctx context.Context) rtp.Stats {
	c.mu.Lock()
	select {
	case <-c.done:
	default:
		close(c.done)
	}
	c.mu.Unlock()
	st, err := c.media.Close()
	if err != nil {
		c.env.log.WarnContext(ctx, "close rtp", "call_id", c.id, "err", err)
	}
	return st
}
