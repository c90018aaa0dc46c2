package transfer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/baton-voice/baton/pkg/events"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// Why a REFER fell back: the why label of
// baton_transfer_refer_fallbacks_total.
const (
	FallbackWhyRefused = "refused"
	FallbackWhyNotify  = "notify"
	FallbackWhyLearned = "learned"
)

// refusesRefer reports whether a REFER's final answer says the far end
// does not take REFER at all (RFC 3515 2.4.2, and the 603 of SBCs with
// "take back and transfer" off), as opposed to refusing this one.
func refusesRefer(code int) bool {
	return code == sip.StatusMethodNotAllowed || code == sip.StatusNotImplemented || code == sip.StatusGlobalDecline
}

// learnedRefusal reports whether the trunk req goes to is known to refuse
// REFER now: its name and until when.
func (r *referRun) learnedRefusal(req *sip.Request) (string, time.Time, bool) {
	t := r.trunkOf(req)
	if t == nil || t.ReferRefusalTTL <= 0 {
		return "", time.Time{}, false
	}
	until, ok := r.refusals.ReferRefused(t.Name)
	if !ok || !r.now().Before(until) {
		return "", time.Time{}, false
	}
	return t.Name, until, true
}

// learn records that the trunk req went to refused REFER (res), when the
// trunk remembers refusals: durably (Options.Refusals) and on the
// transfers topic, where the call's timeline shows it.
func (r *referRun) learn(ctx context.Context, req *sip.Request, res *sip.Response) {
	t := r.trunkOf(req)
	if t == nil || t.ReferRefusalTTL <= 0 {
		return
	}
	now := r.now()
	m := &batonv1.ReferRefusalLearned{
		Trunk:       t.Name,
		CallId:      printable(r.callID),
		CommandId:   printable(r.cmd.GetCommandId()),
		Destination: printable(r.cmd.GetDestination()),
		SipCode:     int32(res.StatusCode),
		SipReason:   printable(res.Reason),
		LearnedAt:   timestamppb.New(now),
		Until:       timestamppb.New(now.Add(t.ReferRefusalTTL)),
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.produceTimeout)
	defer cancel()
	if err := r.refusals.LearnReferRefusal(pctx, m); err != nil {
		r.log.WarnContext(ctx, "REFER refusal not recorded", "trunk", t.Name, "err", err)
	}
	r.log.InfoContext(ctx, "trunk refuses REFER: remembered", "trunk", t.Name, "sip_code", res.StatusCode,
		"until", m.GetUntil().AsTime().Format(time.RFC3339))
	r.publishEvent(ctx, m)
}

// fallBack carries out the REFER's fallback in the same execution: a
// warm transfer (INVITE) to the same destination, or a BYE that hands the
// call back. cseq is the first CSeq it may use in the caller's dialog
// (past the REFERs sent; 0 when none was). Its outcomes name the
// fallback's method.
func (r *referRun) fallBack(ctx context.Context, fallback string, cseq uint32) {
	if cseq != 0 && !r.cseqLeft(cseq) {
		r.publish(ctx, failed(0, "", "REFER refused; no CSeq left in the attempt's block for the "+fallback+" fallback"))
		return
	}
	r.cseqFloor = cseq
	switch fallback {
	case FallbackInvite:
		r.method = batonv1.Method_METHOD_INVITE
		(&warmRun{execution: r.execution}).run(ctx)
	case FallbackBye:
		r.method = batonv1.Method_METHOD_BYE
		r.bye(ctx)
	}
}

// publishEvent writes a message other than an outcome on the transfers
// topic, keyed by the call id; bounded by ProduceTimeout.
func (e *execution) publishEvent(ctx context.Context, msg proto.Message) {
	ev, err := events.New(Source, e.callID, msg, e.now())
	if err == nil {
		ev.TraceParent = e.traceParent
		var rec *kgo.Record
		rec, err = events.Encode(e.transfers, ev)
		if err == nil {
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.produceTimeout)
			defer cancel()
			err = e.out.ProduceSync(pctx, rec).FirstErr()
		}
	}
	if err != nil {
		e.log.ErrorContext(ctx, "publish event", "type", fmt.Sprintf("%T", msg), "err", err)
	}
}

// memoryRefusals is a RefusalLog that lives in this process only.
type memoryRefusals struct {
	mu    sync.Mutex
	until map[string]time.Time
}

func (m *memoryRefusals) ReferRefused(trunk string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.until[trunk]
	return t, ok
}

func (m *memoryRefusals) LearnReferRefusal(_ context.Context, l *batonv1.ReferRefusalLearned) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.until[l.GetTrunk()] = l.GetUntil().AsTime()
	return nil
}

// refusalsOf is l; when l is nil, the attempt log when it is a
// RefusalLog, else a memory of this process's.
func refusalsOf(l RefusalLog, attempts AttemptLog) RefusalLog {
	if l != nil {
		return l
	}
	if r, ok := attempts.(RefusalLog); ok {
		return r
	}
	return &memoryRefusals{until: map[string]time.Time{}}
}
