package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/ingress/internal/config"
	"github.com/baton-voice/baton/services/ingress/internal/headers"
	"github.com/baton-voice/baton/services/ingress/internal/sdp"
	"github.com/baton-voice/baton/services/ingress/internal/trunks"
)

// Outbound calls (docs/decisions/0018-outbound-calls.md): the router's
// agent API admits a POST /v1/calls under its policy and publishes an
// OutboundCallRequested on the calls topic. The ingress instances with
// outbound trunks read that topic in one consumer group, so the one member
// holding the call's partition places it: it commits the request's offset
// first (a request is placed at most once, never twice after a
// rebalance), then sends the INVITE as a UAC from its SIP listener with
// its RTP anchor's SDP offer, and reports each step as an
// OutboundCallProgress. Once a 2xx comes, the call is an inboundCall like
// any other: in the table, CallStarted (direction OUTBOUND) published
// before the ACK, its media anchored, its agent dialled; the far end's
// BYE, re-INVITEs and transfer's REFER work as for a call the carrier
// sent, because the dialog snapshot is written from Baton's side.

// Failure details of OutboundCallProgress (FAILED, no SIP answer).
const (
	outboundUnknownTrunk = "unknown_trunk"
	outboundTrunkBusy    = "trunk_busy"
	outboundExpired      = "expired"
	outboundInvalid      = "invalid_request"
	outboundNoPort       = "no_rtp_port"
	outboundSIPError     = "sip_error"
	outboundShutdown     = "shutdown"
)

// outboundCSeq is the CSeq of the INVITE; transfer numbers the dialog's
// later requests from outboundCSeq+1 (CallStarted's next_local_cseq).
const outboundCSeq = 1

// callIDPattern is what an outbound call id may be: it becomes the
// INVITE's Call-ID (RFC 3261 word characters, at most 128).
var callIDPattern = regexp.MustCompile(`^[A-Za-z0-9\-.!%*_+~'()<>:\\"/\[\]?{}]{1,128}$`)

// outbound places the calls of OutboundCallRequested events.
type outbound struct {
	s        *Server
	placedBy string
	mu       sync.Mutex
	up       map[string]int // outbound calls up or ringing, by trunk
	wg       sync.WaitGroup
}

// runOutbound reads OutboundCallRequested events as a member of
// outbound.group until ctx ends, then waits for the placements under way
// (they end with ctx: a ringing call is CANCELled). Without outbound
// trunks it does nothing.
func (s *Server) runOutbound(ctx context.Context) {
	if len(s.cfg.Outbound.Trunks) == 0 {
		return
	}
	host, _ := os.Hostname()
	o := &outbound{s: s, placedBy: "baton-ingress/" + host, up: map[string]int{}}
	defer o.wg.Wait()
	opts := append(kafka.ClientOpts(s.cfg.Kafka, s.log),
		kgo.ConsumerGroup(s.cfg.Outbound.OutboundGroup()),
		kgo.ConsumeTopics(s.cfg.Kafka.Topics.Calls),
		// A new group starts max_request_age back: a request published
		// while the group formed is placed, an older one never is.
		kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(time.Now().Add(-s.cfg.Outbound.RequestAge()).UnixMilli())),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Offsets are committed by hand, before each INVITE.
		kgo.DisableAutoCommit())
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		s.log.ErrorContext(ctx, "outbound calls: consumer", "err", err)
		return
	}
	defer cl.Close()
	lim := observability.NewRateLog(1)
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(topic string, _ int32, err error) {
			lim.Log(s.log, "outbound calls: read", "topic", topic, "err", err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			ev, err := events.Decode(r)
			if err != nil {
				return
			}
			req, ok := ev.Data.(*batonv1.OutboundCallRequested)
			if !ok {
				return
			}
			// At most once: the offset is committed before the INVITE, so a
			// rebalance or a crash after it never places the call twice.
			if err := cl.CommitRecords(ctx, r); err != nil {
				s.log.ErrorContext(ctx, "outbound call not placed: commit its offset", "call_id", ev.Subject, "err", err)
				return
			}
			o.wg.Go(func() { o.place(ctx, ev, req) })
		})
	}
}

// placement is one outbound call being placed.
type placement struct {
	o     *outbound
	req   *batonv1.OutboundCallRequested
	id    string
	start time.Time
}

// progress publishes a step of the call.
func (p *placement) progress(ctx context.Context, status batonv1.OutboundStatus, code int, reason, detail string) {
	msg := &batonv1.OutboundCallProgress{
		CallId: p.id, RequestId: p.req.GetRequestId(), Status: status, SipCode: int32(code), SipReason: reason,
		Detail: detail, Trunk: p.req.GetTrunk(), Elapsed: durationpb.New(time.Since(p.start)), PlacedBy: p.o.placedBy,
	}
	// A step at shutdown (the CANCEL of a ringing call) is still published:
	// Serve waits for the placements, and the producer is flushed after.
	p.o.s.pub.publishAsync(context.WithoutCancel(ctx), p.id, msg)
	p.o.s.log.InfoContext(ctx, "outbound call", "call_id", p.id, "trunk", p.req.GetTrunk(), "status", status.String(),
		"sip_code", code, "detail", detail)
}

func (p *placement) fail(ctx context.Context, code int, reason, detail string) {
	p.progress(ctx, batonv1.OutboundStatus_OUTBOUND_STATUS_FAILED, code, reason, detail)
}

// enter counts a call of trunk t in, unless t has max_calls up.
func (o *outbound) enter(t config.OutboundTrunk) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if t.MaxCalls > 0 && o.up[t.Name] >= t.MaxCalls {
		return false
	}
	o.up[t.Name]++
	return true
}

func (o *outbound) leave(trunk string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.up[trunk]--
}

// place checks the request, sends the INVITE and follows it to its end.
func (o *outbound) place(ctx context.Context, ev events.Event, req *batonv1.OutboundCallRequested) {
	s := o.s
	p := &placement{o: o, req: req, id: ev.Subject, start: time.Now()}
	if !s.enter() {
		return // shutting down: nothing is placed
	}
	defer s.inflight.Done()
	t, ok := s.cfg.Outbound.OutboundTrunk(req.GetTrunk())
	switch {
	case !ok:
		p.fail(ctx, 0, "", outboundUnknownTrunk+": ingress has no outbound trunk "+req.GetTrunk())
		return
	case req.GetCallId() != ev.Subject || !callIDPattern.MatchString(p.id):
		p.fail(ctx, 0, "", outboundInvalid+": call id")
		return
	case time.Since(ev.Time) > s.cfg.Outbound.RequestAge():
		p.fail(ctx, 0, "", fmt.Sprintf("%s: requested %v ago (outbound.max_request_age %v)", outboundExpired,
			time.Since(ev.Time).Round(time.Millisecond), s.cfg.Outbound.RequestAge()))
		return
	case s.draining.Load():
		p.fail(ctx, 0, "", outboundShutdown+": ingress is draining")
		return
	}
	target := netip.MustParseAddrPort(t.Target) // validated with the config
	trunk := s.trunks.Lookup(target.Addr())
	if trunk == nil || trunk.Name != t.Name {
		p.fail(ctx, 0, "", outboundUnknownTrunk+": the target "+t.Target+" is not in trunk "+t.Name+"'s sources")
		return
	}
	if !o.enter(t) {
		p.fail(ctx, 0, "", fmt.Sprintf("%s: trunk %s has %d outbound calls up (max_calls)", outboundTrunkBusy, t.Name, t.MaxCalls))
		return
	}
	counted := true
	defer func() {
		if counted {
			o.leave(t.Name)
		}
	}()
	c, ok := p.dial(ctx, t, target, trunk)
	if !ok {
		return
	}
	// The call holds its place under max_calls until it ends.
	counted = false
	go func() {
		<-c.done
		o.leave(t.Name)
	}()
}

// dial sends the INVITE and waits for its answer. An answered call is
// returned in the table, its agent dialled.
func (p *placement) dial(ctx context.Context, t config.OutboundTrunk, target netip.AddrPort, trunk *trunks.Trunk) (*inboundCall, bool) {
	s := p.o.s
	domain := t.Domain
	if domain == "" {
		domain = target.Addr().String()
	}
	to, err := outboundURI(p.req.GetTo(), domain)
	var from sip.Uri
	if err == nil {
		from, err = outboundURI(p.req.GetFrom(), domain)
	}
	for _, h := range p.req.GetHeaders() {
		if err == nil {
			err = sipx.ValidateCustom(h.GetName(), h.GetValue())
		}
	}
	if err != nil {
		p.fail(ctx, 0, "", outboundInvalid+": "+err.Error())
		return nil, false
	}

	c := newInboundCall(p.id, s.env)
	media, err := s.rtp.Open(c.rtpDigits(ctx), func(a netip.Addr) bool { return s.trunks.Lookup(a) == trunk })
	if err != nil {
		p.fail(ctx, 0, "", outboundNoPort+": "+err.Error())
		return nil, false
	}
	closeMedia := func() {
		if _, err := media.Close(); err != nil {
			s.log.WarnContext(ctx, "close rtp", "call_id", p.id, "err", err)
		}
	}
	sessionID := uint64(p.start.Unix())
	offer := sdp.Offer(sdp.Params{Host: s.cfg.ContactHost(), Port: media.Port(), SessionID: sessionID})
	localTag := sip.GenerateTagN(16)
	invite, udp, err := p.invite(to, from, localTag, target, offer)
	if err != nil {
		closeMedia()
		p.fail(ctx, 0, "", outboundSIPError+": "+err.Error())
		return nil, false
	}
	branch, _ := invite.Via().Params.Get("branch")
	// The answers pass the read filter while the branch is known: until
	// the call ends (2xx retransmissions are re-ACKed), or now.
	s.byes.branches.Store(branch, struct{}{})
	forget := func() { s.byes.branches.Delete(branch) }

	var contact sip.ContactHeader
	if _, err := sip.ParseAddressValue(s.localContact, &contact.Address, &contact.Params); err != nil {
		forget()
		closeMedia()
		p.fail(ctx, 0, "", outboundSIPError+": contact: "+err.Error())
		return nil, false
	}
	dua := &sipgo.DialogUA{Client: s.byes.client, ContactHDR: contact}
	sess, err := dua.WriteInvite(ctx, invite)
	if err != nil {
		forget()
		closeMedia()
		p.fail(ctx, 0, "", outboundSIPError+": send invite: "+err.Error())
		return nil, false
	}
	p.progress(ctx, batonv1.OutboundStatus_OUTBOUND_STATUS_TRYING, 0, "", "")
	ringCtx, stopRing := context.WithTimeout(ctx, p.req.GetAnswerTimeout().AsDuration())
	rang := false
	err = sess.WaitAnswer(ringCtx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
		if (res.StatusCode == sip.StatusRinging || res.StatusCode == sip.StatusSessionInProgress) && !rang {
			rang = true
			p.progress(ctx, batonv1.OutboundStatus_OUTBOUND_STATUS_RINGING, res.StatusCode, res.Reason, "")
		}
		return nil
	}})
	timedOut := errors.Is(ringCtx.Err(), context.DeadlineExceeded)
	stopRing()
	if err != nil {
		forget()
		closeMedia()
		_ = sess.Close()
		p.unanswered(ctx, err, sess.InviteResponse, timedOut)
		return nil, false
	}
	res := sess.InviteResponse
	answer, err := sdp.ReadAnswer(res.Body(), offer)
	if err != nil {
		p.abandon(ctx, sess, udp, forget, closeMedia, 0, "", "answer sdp: "+err.Error())
		return nil, false
	}
	started, err := p.callStarted(invite, res, trunk, s.localContact, offer)
	if err != nil {
		p.abandon(ctx, sess, udp, forget, closeMedia, 0, "", err.Error())
		return nil, false
	}
	if hop, transport, _ := nextHop(started.GetDialog(), s.trunks, trunk); hop != "" {
		started.Dialog.NextHop, started.Dialog.NextHopTransport = hop, transport
	}
	c.open(callSetup{dialog: started.GetDialog(), trunk: trunk, udp: udp, media: media, answer: answer,
		start: p.start, sessionID: sessionID})
	if err := s.add(c); err != nil {
		p.abandon(ctx, sess, udp, forget, closeMedia, 0, "", "over limits: "+err.Error())
		return nil, false
	}
	if err := s.pub.publish(ctx, p.id, started); err != nil {
		s.remove(c)
		p.abandon(ctx, sess, udp, forget, closeMedia, 0, "", "publish call started: "+err.Error())
		return nil, false
	}
	// From here the call is its own, like an answered inbound one.
	go func() {
		<-c.done
		forget()
		_ = sess.Close()
	}()
	if err := sess.Ack(ctx); err != nil {
		s.log.WarnContext(ctx, "outbound call: ack", "call_id", p.id, "err", err)
	}
	c.ack()
	p.progress(ctx, batonv1.OutboundStatus_OUTBOUND_STATUS_ANSWERED, res.StatusCode, res.Reason, "")
	r, source := s.agentFor(started)
	if name := p.req.GetAgent(); name != "" {
		if named := s.agents[name]; named != nil {
			r, source = named, "outbound"
		} else {
			s.log.WarnContext(ctx, "outbound call names an agent ingress does not list; using ingress's choice",
				"call_id", p.id, "agent", name)
		}
	}
	switch {
	case r != nil:
		c.startAgent(ctx, agentChoice{r: r, source: source}, started)
	case s.clip.Frames() > 0:
		media.Play(s.clip)
	}
	return c, true
}

// abandon ends an answered call ingress cannot take: ACK, then BYE, and
// FAILED with detail.
func (p *placement) abandon(ctx context.Context, sess *sipgo.DialogClientSession, udp *net.UDPConn, forget, closeMedia func(),
	code int, reason, detail string) {
	if err := sess.Ack(ctx); err != nil {
		p.o.s.log.WarnContext(ctx, "outbound call: ack", "call_id", p.id, "err", err)
	} else if err := p.bye(ctx, sess, udp); err != nil {
		p.o.s.log.WarnContext(ctx, "outbound call: bye", "call_id", p.id, "err", err)
	}
	forget()
	closeMedia()
	_ = sess.Close()
	p.fail(ctx, code, reason, outboundSIPError+": "+detail)
}

// unanswered reports an INVITE that got no 2xx: BUSY (486, 600),
// NO_ANSWER (the answer timeout, 408, 480) or FAILED.
func (p *placement) unanswered(ctx context.Context, err error, last *sip.Response, timedOut bool) {
	var de *sipgo.ErrDialogResponse
	code, reason := 0, ""
	if errors.As(err, &de) && de.Res != nil {
		code, reason = de.Res.StatusCode, de.Res.Reason
	} else if last != nil && !last.IsProvisional() {
		code, reason = last.StatusCode, last.Reason
	}
	switch {
	case ctx.Err() != nil:
		// Ingress is shutting down: sipgo CANCELled the INVITE.
		p.fail(ctx, code, reason, outboundShutdown+": the call was cancelled")
	case timedOut:
		p.progress(ctx, batonv1.OutboundStatus_OUTBOUND_STATUS_NO_ANSWER, code, reason,
			fmt.Sprintf("no answer within %v; cancelled", p.req.GetAnswerTimeout().AsDuration()))
	case code == sip.StatusBusyHere || code == 600:
		p.progress(ctx, batonv1.OutboundStatus_OUTBOUND_STATUS_BUSY, code, reason, "")
	case code == sip.StatusRequestTimeout || code == sip.StatusTemporarilyUnavailable:
		p.progress(ctx, batonv1.OutboundStatus_OUTBOUND_STATUS_NO_ANSWER, code, reason, "")
	case code != 0:
		p.fail(ctx, code, reason, "")
	default:
		p.fail(ctx, 0, "", "no answer to the invite: "+err.Error())
	}
}

// invite builds the INVITE from ingress's first UDP listener (its Via and
// Contact, so answers and in-dialog requests come back to it) to target.
func (p *placement) invite(to, from sip.Uri, localTag string, target netip.AddrPort, offer []byte) (*sip.Request, *net.UDPConn, error) {
	s := p.o.s
	if len(s.udp) == 0 {
		return nil, nil, errors.New("outbound calls need a udp listener")
	}
	udp := s.udp[0]
	req := sip.NewRequest(sip.INVITE, to)
	req.SetTransport("UDP")
	req.SetDestination(target.String())
	s.fromListener(req, udp)
	fromH := &sip.FromHeader{Address: from, Params: sip.NewParams()}
	fromH.Params.Add("tag", localTag)
	req.AppendHeader(fromH)
	req.AppendHeader(&sip.ToHeader{Address: to, Params: sip.NewParams()})
	callID := sip.CallIDHeader(p.id)
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: outboundCSeq, MethodName: sip.INVITE})
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	// The target is the trunk's outbound proxy (a preloaded loose route,
	// RFC 3261 8.1.2): the CANCEL sipgo builds from the INVITE copies it,
	// and so reaches the target whatever host the Request-URI names.
	req.AppendHeader(sip.NewHeader("Route", "<sip:"+target.String()+";lr>"))
	req.AppendHeader(sip.NewHeader("Contact", s.localContact))
	req.AppendHeader(sip.NewHeader("Allow", allow))
	req.AppendHeader(sip.NewHeader("User-Agent", "baton-ingress"))
	for _, h := range p.req.GetHeaders() {
		req.AppendHeader(sip.NewHeader(h.GetName(), h.GetValue()))
	}
	ct := sip.ContentTypeHeader("application/sdp")
	req.AppendHeader(&ct)
	req.SetBody(offer)
	return req, udp, nil
}

// fromListener sends req from the UDP listener udp (its Laddr) with a Via
// of its own: the answers come back to the listener, through the read
// filter, which knows the branch once it is stored.
func (s *Server) fromListener(req *sip.Request, udp *net.UDPConn) {
	la := udp.LocalAddr().(*net.UDPAddr)
	req.Laddr = sip.Addr{IP: la.IP, Port: la.Port}
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Params: sip.NewParams(),
		Host: s.env.viaHost, Port: la.Port}
	if via.Host == "" {
		via.Host = la.IP.String()
	}
	via.Params.Add("branch", sip.GenerateBranch())
	via.Params.Add("rport", "")
	req.PrependHeader(via)
}

// bye ends an answered (and ACKed) call ingress will not take: a BYE in
// the dialog from the listener, to the address the 2xx came from.
func (p *placement) bye(ctx context.Context, sess *sipgo.DialogClientSession, udp *net.UDPConn) error {
	s := p.o.s
	res := sess.InviteResponse
	target := sess.InviteRequest.Recipient
	if c := res.Contact(); c != nil {
		target = c.Address
	}
	req := sip.NewRequest(sip.BYE, *target.Clone())
	req.SetTransport("UDP")
	req.SetDestination(res.Source())
	s.fromListener(req, udp)
	branch, _ := req.Via().Params.Get("branch")
	s.byes.branches.Store(branch, struct{}{})
	defer s.byes.branches.Delete(branch)
	byeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 64*s.env.t1)
	defer cancel()
	if err := sess.WriteBye(byeCtx, req); err != nil {
		return fmt.Errorf("bye: %w", err)
	}
	return nil
}

// callStarted is the CallStarted of an answered outbound call: the dialog
// from Baton's side (the UAC: local is From, the route set is the 2xx's
// Record-Route reversed, RFC 3261 12.1.2), the INVITE's headers, the
// request's variables and direction OUTBOUND.
func (p *placement) callStarted(invite *sip.Request, res *sip.Response, trunk *trunks.Trunk, localContact string, offer []byte) (*batonv1.CallStarted, error) {
	to, contact := res.To(), res.Contact()
	if to == nil {
		return nil, errors.New("2xx without To")
	}
	remoteTag, _ := to.Params.Get("tag")
	if remoteTag == "" {
		return nil, errors.New("2xx without a To tag")
	}
	if contact == nil || contact.Address.Wildcard || contact.Address.Host == "" {
		return nil, errors.New("2xx without a Contact URI")
	}
	localTag, _ := invite.From().Params.Get("tag")
	var routeSet []string
	for _, h := range res.Headers() {
		if headers.LongName(h.Name()) == "Record-Route" {
			routeSet = append(routeSet, h.Value())
		}
	}
	slices.Reverse(routeSet)
	ex := headers.Extract(invite.Headers())
	vars := maps.Clone(ex.Variables)
	if vars == nil {
		vars = map[string]string{}
	}
	maps.Copy(vars, p.req.GetVariables()) // the request's variables win over its headers
	source := res.Source()
	return &batonv1.CallStarted{
		Dialog: &batonv1.Dialog{
			CallId: p.id, LocalTag: localTag, RemoteTag: remoteTag,
			LocalUri: invite.From().Address.String(), RemoteUri: to.Address.String(),
			RemoteTarget: contact.Address.String(), RouteSet: routeSet,
			Transport: batonv1.Transport_TRANSPORT_UDP, NextLocalCseq: outboundCSeq + 1,
			LocalContact: localContact, RemoteAddress: source,
		},
		SipHeaders: ex.Headers, Variables: vars,
		CallerNumber: p.req.GetFrom(), CallerNumberRaw: p.req.GetFrom(),
		CalleeNumber: p.req.GetTo(), CalleeNumberRaw: p.req.GetTo(),
		SourceAddress: source, Trunk: trunk.Name, RequestUri: invite.Recipient.String(),
		OversizedHeaders: ex.Oversized, LocalSdp: string(offer), RemoteSdp: string(res.Body()),
		Direction: batonv1.CallDirection_CALL_DIRECTION_OUTBOUND,
	}, nil
}

// numberPattern is a number to dial or present: '+' and digits.
var numberPattern = regexp.MustCompile(`^\+?[0-9]{1,32}$`)

// outboundURI is the SIP URI of a number or URI the router admitted: a
// sip: or sips: URI as it is, tel:NUMBER and NUMBER as
// sip:NUMBER@domain;user=phone.
func outboundURI(v, domain string) (sip.Uri, error) {
	lower := strings.ToLower(v)
	if strings.HasPrefix(lower, "sip:") || strings.HasPrefix(lower, "sips:") {
		var u sip.Uri
		if sipx.HasControl(v) || strings.ContainsAny(v, "<>\" ") {
			return u, fmt.Errorf("uri %q", v)
		}
		if err := sip.ParseUri(v, &u); err != nil || u.Host == "" {
			return u, fmt.Errorf("uri %q", v)
		}
		return u, nil
	}
	n := v
	if strings.HasPrefix(lower, "tel:") {
		n = v[len("tel:"):]
	}
	if !numberPattern.MatchString(n) {
		return sip.Uri{}, fmt.Errorf("number %q", v)
	}
	params := sip.NewParams()
	params.Add("user", "phone")
	return sip.Uri{Scheme: "sip", User: n, Host: domain, UriParams: params}, nil
}
