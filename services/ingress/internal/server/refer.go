package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/ingress/internal/headers"
)

// Inbound REFER under refer.policy (docs/decisions/0019). With refuse
// (the default) a REFER from the far end gets 405 like any method ingress
// does not serve. With route, a REFER in a live dialog is checked here
// (one Refer-To, a sip, sips or tel URI, no Replaces, at most
// refer.max_per_call per dialog and one at a time), published as an
// InboundReferReceived, answered 202 and followed by a NOTIFY of
// "SIP/2.0 100 Trying" (RFC 3515 2.4.4). The router decides it like an
// agent's handoff request for the Refer-To target; ingress reads what came
// of it from the log (follow: the HandoffRefused or the command's
// TransferOutcome) and sends the final NOTIFY, which ends the implicit
// subscription.
//
// Ingress sends these NOTIFYs itself, the one exception beside its BYE
// to "ingress only answers": the subscription is the far end's with the
// dialog's UAS, and the facts that end it are on the log ingress reads.
// Their CSeq numbers come from a range no other request of the dialog
// uses (referCSeqBase): the 100 Trying takes the first number of the
// REFER's block and the fact carries it, the router numbers the handoff's
// requests after it, and the final NOTIFY takes the last number of the
// block.

const (
	// referCSeqBase is the CSeq of the first REFER's 100 Trying NOTIFY:
	// far above the numbers transfer starts from (CallStarted's
	// next_local_cseq, 1) and below ingress's BYE (byeCSeq).
	referCSeqBase = 1 << 28
	// referCSeqBlock is the CSeq numbers each REFER owns: the 100 Trying,
	// the handoff's requests (transfer's CSeqsPerAttempt per attempt), the
	// final NOTIFY.
	referCSeqBlock = 1 << 12
	// maxReferURI bounds a Refer-To's length (a header line over 1024
	// bytes is flagged anyway); maxStripped the header names recorded.
	maxReferURI = 512
	maxStripped = 16
	// maxEarlyOutcomes bounds the outcomes a pending REFER keeps of
	// commands it has not seen yet (the transfers topic may be read
	// before the handoffs topic).
	maxEarlyOutcomes = 8
	// referSubscription is the expires of the implicit subscription's
	// active NOTIFY, in seconds.
	referSubscription = 120
)

// Why ingress refuses a REFER itself, before the router sees it.
var (
	errReferTo       = errors.New("refer-to")
	errReferScheme   = errors.New("refer-to scheme not allowed")
	errReferReplaces = errors.New("refer-to carries replaces")
)

// referState is a call's inbound REFERs.
type referState struct {
	mu      sync.Mutex
	count   int           // REFERs taken (answered 202) in the dialog
	pending *pendingRefer // the one whose outcome is awaited
}

// pendingRefer is a REFER answered 202 whose final NOTIFY is not sent.
type pendingRefer struct {
	id         string // refer_id: r1, r2, ...
	event      string // the Event header of its NOTIFYs
	notifyCSeq uint32 // the 100 Trying's; the final NOTIFY's is the block's last
	final      chan sipx.Sipfrag
	commands   map[string]bool                     // the handoff's commands (request_id = id)
	early      map[string]*batonv1.TransferOutcome // outcomes of commands not seen yet
	done       bool                                // final has its value
}

// referTarget is a Refer-To value taken apart.
type referTarget struct {
	uri      string   // the URI without display name, params outside <> and ?headers
	stripped []string // the embedded header names dropped
}

// parseReferTo checks a Refer-To value and returns its target: a sip,
// sips or tel URI, of at most maxReferURI bytes, without spaces or
// control characters. Embedded headers are stripped (and named), except
// Replaces, which refuses the REFER: Baton takes part in no other dialog.
func parseReferTo(v string) (referTarget, error) {
	v = strings.TrimSpace(v)
	if sipx.HasControl(v) {
		return referTarget{}, fmt.Errorf("%w: control characters", errReferTo)
	}
	if i := strings.IndexByte(v, '<'); i >= 0 {
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return referTarget{}, fmt.Errorf("%w: %q: unclosed <", errReferTo, truncate(v))
		}
		v = v[i+1 : i+j]
	} else if k := strings.IndexByte(v, ';'); k >= 0 && !strings.Contains(v[:k], ":") {
		return referTarget{}, fmt.Errorf("%w: %q: not a URI", errReferTo, truncate(v))
	}
	uri, query, hasHeaders := strings.Cut(v, "?")
	if uri == "" || len(uri) > maxReferURI || strings.ContainsAny(uri, " \t<>\"") {
		return referTarget{}, fmt.Errorf("%w: %q: want a URI of at most %d bytes", errReferTo, truncate(uri), maxReferURI)
	}
	scheme, rest, ok := strings.Cut(uri, ":")
	if !ok || rest == "" {
		return referTarget{}, fmt.Errorf("%w: %q: not a URI", errReferTo, truncate(uri))
	}
	switch strings.ToLower(scheme) {
	case "sip", "sips", "tel":
	default:
		return referTarget{}, fmt.Errorf("%w: %q", errReferScheme, truncate(scheme))
	}
	t := referTarget{uri: uri}
	if !hasHeaders {
		return t, nil
	}
	hs, err := sipx.ReferToHeaders("<" + uri + "?" + query + ">")
	if err != nil {
		return referTarget{}, fmt.Errorf("%w: %w", errReferTo, err)
	}
	for _, h := range hs {
		if strings.EqualFold(h.Name, "Replaces") {
			return referTarget{}, errReferReplaces
		}
		if len(t.stripped) < maxStripped {
			t.stripped = append(t.stripped, strings.ToValidUTF8(truncateTo(printableName(h.Name), 64), "?"))
		}
	}
	return t, nil
}

// printableName replaces the control characters of an embedded header's
// name (escaped in the URI, so they survived parsing) with '?'.
func printableName(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

func truncate(s string) string { return truncateTo(s, 64) }

func truncateTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// onRefer answers a REFER: 405 under refer.policy refuse, else the call's
// referIn (481 when it matches no dialog).
func (s *Server) onRefer(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
	if !s.cfg.Refer.Routes() {
		s.onOther(ctx, req, tx)
		return
	}
	s.inDialog(func(c *inboundCall, ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
		c.referIn(ctx, req, tx, s.cfg.Refer.Max())
	})(ctx, req, tx)
}

// referIn takes a REFER in c's dialog under refer.policy route.
func (c *inboundCall) referIn(ctx context.Context, req *sip.Request, tx sip.ServerTransaction, maxPerCall int) {
	log := c.env.log.With("call_id", c.id)
	var referTo []string
	for _, h := range req.Headers() {
		if strings.EqualFold(headers.LongName(h.Name()), "Refer-To") {
			referTo = append(referTo, h.Value())
		}
	}
	if len(referTo) != 1 {
		log.InfoContext(ctx, "refer refused", "reason", "refer-to count", "count", len(referTo))
		reply(c.env.log, req, tx, sip.StatusBadRequest, "Bad Request: One Refer-To Required")
		return
	}
	target, err := parseReferTo(referTo[0])
	if err != nil {
		log.InfoContext(ctx, "refer refused", "err", err)
		if errors.Is(err, errReferTo) {
			reply(c.env.log, req, tx, sip.StatusBadRequest, "Bad Request: Refer-To")
		} else {
			reply(c.env.log, req, tx, sip.StatusForbidden, "Forbidden")
		}
		return
	}
	referredBy := headers.Value(req.Headers(), "Referred-By")
	if sipx.ValidateValue(referredBy) != nil || len(referredBy) > maxReferURI {
		referredBy = "" // not worth refusing for: it is only recorded
	}
	var cseq uint32
	if h := req.CSeq(); h != nil {
		cseq = h.SeqNo
	}

	r := &c.refers
	r.mu.Lock()
	switch {
	case r.count >= maxPerCall:
		r.mu.Unlock()
		log.WarnContext(ctx, "refer refused", "reason", "max_per_call", "max_per_call", maxPerCall)
		reply(c.env.log, req, tx, sip.StatusForbidden, "Forbidden: Too Many REFERs")
		return
	case r.pending != nil:
		r.mu.Unlock()
		log.InfoContext(ctx, "refer refused", "reason", "one pending", "refer_id", r.pending.id)
		reply(c.env.log, req, tx, sip.StatusRequestPending, "Request Pending")
		return
	}
	k := r.count
	r.count++
	p := &pendingRefer{
		id:         "r" + strconv.Itoa(k+1),
		event:      "refer;id=" + strconv.FormatUint(uint64(cseq), 10),
		notifyCSeq: referCSeqBase + uint32(k)*referCSeqBlock,
		final:      make(chan sipx.Sipfrag, 1),
		commands:   map[string]bool{},
		early:      map[string]*batonv1.TransferOutcome{},
	}
	r.pending = p
	r.mu.Unlock()

	fact := &batonv1.InboundReferReceived{
		CallId: c.id, ReferId: p.id, ReferTo: target.uri, ReferredBy: referredBy,
		StrippedHeaders: target.stripped, NotifyCseq: p.notifyCSeq, Cseq: cseq,
	}
	if err := c.env.facts.publish(ctx, c.id, fact); err != nil {
		r.mu.Lock()
		r.count--
		r.pending = nil
		r.mu.Unlock()
		log.ErrorContext(ctx, "publish inbound refer", "err", err)
		reply(c.env.log, req, tx, sip.StatusServiceUnavailable, "Service Unavailable", sip.NewHeader("Retry-After", c.env.retryAfter))
		return
	}
	log.InfoContext(ctx, "refer accepted", "refer_id", p.id, "refer_to", target.uri, "stripped_headers", target.stripped)
	reply(c.env.log, req, tx, sip.StatusAccepted, "Accepted")
	c.env.background.Go(func() { c.notifyRefer(context.WithoutCancel(ctx), p) })
}

// notifyRefer sends p's 100 Trying NOTIFY, waits for its outcome (or the
// call's end) and sends the final NOTIFY.
func (c *inboundCall) notifyRefer(ctx context.Context, p *pendingRefer) {
	c.sendNotify(ctx, p, p.notifyCSeq, sipx.Sipfrag{Status: 100, Reason: "Trying"}, fmt.Sprintf("active;expires=%d", referSubscription))
	select {
	case frag := <-p.final:
		// The next REFER may come as soon as the far end has this
		// NOTIFY: it is no longer pending.
		c.clearRefer(p)
		c.sendNotify(ctx, p, p.notifyCSeq+referCSeqBlock-1, frag, "terminated;reason=noresource")
	case <-c.done:
		// The dialog is gone, and the subscription with it.
		c.clearRefer(p)
	}
}

// clearRefer forgets p as the call's pending REFER.
func (c *inboundCall) clearRefer(p *pendingRefer) {
	r := &c.refers
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == p {
		r.pending = nil
	}
}

// sendNotify sends one NOTIFY of p and waits (bounded by the transaction's
// own timer) for its answer, which is only logged.
func (c *inboundCall) sendNotify(ctx context.Context, p *pendingRefer, cseq uint32, frag sipx.Sipfrag, state string) {
	log := c.env.log.With("call_id", c.id, "refer_id", p.id, "sipfrag", frag.Status)
	req, err := c.request(sip.NOTIFY, cseq)
	if err != nil {
		log.WarnContext(ctx, "refer notify", "err", err)
		return
	}
	req.AppendHeader(sip.NewHeader("Event", p.event))
	req.AppendHeader(sip.NewHeader("Subscription-State", state))
	req.AppendHeader(sip.NewHeader("Content-Type", "message/sipfrag;version=2.0"))
	req.SetBody([]byte(fmt.Sprintf("SIP/2.0 %d %s\r\n", frag.Status, frag.Reason)))
	tx, done, err := c.env.byes.send(ctx, req)
	if err != nil {
		log.WarnContext(ctx, "refer notify", "err", err)
		return
	}
	defer done()
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			log.InfoContext(ctx, "refer notify answered", "status", res.StatusCode)
			return
		case <-tx.Done():
			log.WarnContext(ctx, "refer notify unanswered", "err", tx.Err())
			return
		case <-c.done:
			return
		}
	}
}

// settle gives p its final sipfrag, once.
func (p *pendingRefer) settle(frag sipx.Sipfrag) {
	if p.done {
		return
	}
	p.done = true
	p.final <- frag
}

// referRefused: the router refused the handoff a REFER asked for.
func (c *inboundCall) referRefused(m *batonv1.HandoffRefused) {
	r := &c.refers
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.pending; p != nil && m.GetRequestId() == p.id {
		p.settle(sipx.Sipfrag{Status: 603, Reason: "Declined"})
	}
}

// referCommand: the router decided a command; the REFER's handoff's
// commands carry its refer_id as request_id.
func (c *inboundCall) referCommand(m *batonv1.HandoffCommand) {
	r := &c.refers
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending
	if p == nil || m.GetRequestId() != p.id {
		return
	}
	p.commands[m.GetCommandId()] = true
	if o := p.early[m.GetCommandId()]; o != nil {
		p.outcome(o)
	}
}

// referOutcome: transfer reported on a command; a final one of the
// REFER's handoff settles it.
func (c *inboundCall) referOutcome(o *batonv1.TransferOutcome) {
	r := &c.refers
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending
	if p == nil || referFrag(o) == nil {
		return
	}
	if p.commands[o.GetCommandId()] {
		p.outcome(o)
		return
	}
	if len(p.early) >= maxEarlyOutcomes {
		for k := range p.early {
			delete(p.early, k)
			break
		}
	}
	p.early[o.GetCommandId()] = o
}

func (p *pendingRefer) outcome(o *batonv1.TransferOutcome) {
	if f := referFrag(o); f != nil {
		p.settle(*f)
	}
}

// referFrag is the final sipfrag of an outcome, nil when the outcome is
// not final: success for a blind transfer that succeeded or a warm one
// bridged, the SIP answer (or 503) for a failure.
func referFrag(o *batonv1.TransferOutcome) *sipx.Sipfrag {
	switch o.GetStatus() {
	case batonv1.OutcomeStatus_OUTCOME_STATUS_SUCCEEDED, batonv1.OutcomeStatus_OUTCOME_STATUS_BRIDGED:
		return &sipx.Sipfrag{Status: 200, Reason: "OK"}
	case batonv1.OutcomeStatus_OUTCOME_STATUS_FAILED, batonv1.OutcomeStatus_OUTCOME_STATUS_ENDED:
		code, reason := int(o.GetSipCode()), o.GetSipReason()
		if code < 300 || code > 699 || sipx.ValidateValue(reason) != nil {
			code, reason = 503, "Service Unavailable"
		}
		if reason == "" {
			reason = "Failed"
		}
		return &sipx.Sipfrag{Status: code, Reason: truncate(reason)}
	}
	return nil
}
