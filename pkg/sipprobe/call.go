package sipprobe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Header is one header of a test call's INVITE (the destination's
// rendered X- headers).
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// CallResult is what a test call found.
type CallResult struct {
	// Answered is true when the INVITE got a 2xx (then ACKed and ended
	// with a BYE).
	Answered bool `json:"answered"`
	// Status and Reason are the INVITE's final response, 0 without one.
	Status int    `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Provisional are the 1xx statuses seen before the final one.
	Provisional []int `json:"provisional,omitempty"`
	// AnswerTime is from the INVITE to its final response.
	AnswerTime time.Duration `json:"answer_time_ns"`
	// ByeStatus is the BYE's final response, 0 when none was sent or
	// none came.
	ByeStatus int `json:"bye_status,omitempty"`
	// Error says what went wrong, when something did.
	Error string `json:"error,omitempty"`
}

// Call places a short test call to t: an INVITE with headers and an audio
// offer (PCMU, to a local socket it holds for the call), and on a 2xx an
// ACK, hold of silence, then a BYE. The call is bounded by the prober's
// timeout for the answer (ringing included) plus hold.
func (p *Prober) Call(ctx context.Context, t Target, headers []Header, hold time.Duration) CallResult {
	var res CallResult
	uri, transport, addr, err := Resolve(t)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	local, err := localIP(ctx, addr)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	var lc net.ListenConfig
	rtp, err := lc.ListenPacket(ctx, "udp", net.JoinHostPort(local, "0"))
	if err != nil {
		res.Error = fmt.Sprintf("media socket: %v", err)
		return res
	}
	defer func() { _ = rtp.Close() }()
	ua := sipgo.DialogUA{Client: p.client, ContactHDR: sip.ContactHeader{
		Address: sip.Uri{Scheme: "sip", User: "baton-probe", Host: local},
	}}
	req := sip.NewRequest(sip.INVITE, optionsURI(uri))
	req.SetTransport(transport)
	req.SetDestination(addr)
	req.SetBody(offer(local, rtp.LocalAddr().(*net.UDPAddr).Port))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	for _, h := range headers {
		req.AppendHeader(sip.NewHeader(h.Name, h.Value))
	}

	// The answer is awaited for the prober's timeout. Then a call that
	// rang is CANCELled (sipgo sends it when the context ends with any
	// other cause); one that never got a provisional cannot be (RFC 3261
	// 9.1), so the wait ends at once (WaitAnswerForceCancelErr) instead of
	// running to Timer B.
	answerCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var rang atomic.Bool
	timer := time.AfterFunc(p.opts.Timeout, func() {
		if rang.Load() {
			cancel(context.DeadlineExceeded)
			return
		}
		cancel(sipgo.WaitAnswerForceCancelErr)
	})
	defer timer.Stop()
	start := time.Now()
	sess, err := ua.WriteInvite(answerCtx, req)
	if err != nil {
		res.Error = describe(answerCtx, err)
		return res
	}
	defer func() { _ = sess.Close() }()
	err = sess.WaitAnswer(answerCtx, sipgo.AnswerOptions{OnResponse: func(r *sip.Response) error {
		if r.IsProvisional() {
			res.Provisional = append(res.Provisional, r.StatusCode)
			if r.StatusCode > 100 {
				rang.Store(true)
			}
		}
		return nil
	}})
	res.AnswerTime = time.Since(start)
	if r := sess.InviteResponse; r != nil && !r.IsProvisional() {
		res.Status, res.Reason = r.StatusCode, r.Reason
	}
	var dErr *sipgo.ErrDialogResponse
	switch {
	case errors.As(err, &dErr):
		res.Status, res.Reason = dErr.Res.StatusCode, dErr.Res.Reason
		return res
	case err != nil:
		res.Error = describe(answerCtx, err)
		return res
	}
	res.Answered = true
	if err := sess.Ack(ctx); err != nil {
		res.Error = fmt.Sprintf("ACK: %v", err)
	}
	if hold > 0 {
		t := time.NewTimer(hold)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	byeCtx, cancelBye := context.WithTimeout(context.WithoutCancel(ctx), p.opts.Timeout)
	defer cancelBye()
	err = sess.Bye(byeCtx)
	var byeErr sipgo.ErrDialogResponse
	switch {
	case err == nil:
		res.ByeStatus = sip.StatusOK
	case errors.As(err, &byeErr):
		res.ByeStatus = byeErr.Res.StatusCode
	default:
		res.Error = "BYE: " + describe(byeCtx, err)
	}
	return res
}

// localIP is the local address the system routes addr from.
func localIP(ctx context.Context, addr string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return "", fmt.Errorf("route to %s: %w", addr, err)
	}
	defer func() { _ = c.Close() }()
	host, _, err := net.SplitHostPort(c.LocalAddr().String())
	return host, err
}

// offer is a minimal SDP audio offer: PCMU and telephone-event, sendrecv.
func offer(ip string, port int) []byte {
	family := "IP4"
	if net.ParseIP(ip).To4() == nil {
		family = "IP6"
	}
	id := strconv.FormatInt(time.Now().Unix(), 10)
	return []byte("v=0\r\n" +
		"o=baton-probe " + id + " " + id + " IN " + family + " " + ip + "\r\n" +
		"s=baton probe\r\n" +
		"c=IN " + family + " " + ip + "\r\n" +
		"t=0 0\r\n" +
		"m=audio " + strconv.Itoa(port) + " RTP/AVP 0 101\r\n" +
		"a=rtpmap:0 PCMU/8000\r\n" +
		"a=rtpmap:101 telephone-event/8000\r\n" +
		"a=sendrecv\r\n")
}
