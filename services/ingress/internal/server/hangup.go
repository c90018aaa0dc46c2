package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/pkg/sipx"
)

// Ingress's own BYE: the only request it sends, to end a dialog that is
// dead (a 2xx never ACKed, or no media for rtp.media_timeout).

// Reasons of the calls ingress ends itself: CallEnded carries one with
// ended_by BATON and method BYE (docs/decisions/0009).
const (
	// reasonAckTimeout: the 200 OK to the INVITE was retransmitted for
	// 64*T1 and no ACK came (RFC 3261 13.3.1.4).
	reasonAckTimeout = "ack_timeout"
	// reasonMediaTimeout: no RTP arrived for rtp.media_timeout while the
	// caller was expected to send.
	reasonMediaTimeout = "media_timeout"
)

// byeCSeq is the CSeq number of ingress's BYE. Transfer numbers the
// dialog's requests from CallStarted's next_local_cseq (1) up, one or a
// few per handoff; a number far above them is never below one the far end
// has seen (which it would refuse with 500, RFC 3261 12.2.2), and after
// the BYE the dialog is gone, so nothing needs a higher one.
const byeCSeq = 1 << 30

// errNoDialog means a call lacks what a BYE needs.
var errNoDialog = errors.New("no usable dialog for a bye")

// sendBye starts the BYE's client transaction; its answer passes the read
// filter until done is called.
func (c *inboundCall) sendBye(ctx context.Context) (sip.ClientTransaction, func(), error) {
	req, err := c.byeRequest()
	if err != nil {
		return nil, nil, err
	}
	return c.env.byes.send(ctx, req)
}

// awaitBye logs the BYE's final answer, or that none came.
func (c *inboundCall) awaitBye(ctx context.Context, tx sip.ClientTransaction, done func()) {
	defer done()
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			c.env.log.InfoContext(ctx, "bye answered", "call_id", c.id, "status", res.StatusCode)
			return
		case <-tx.Done():
			c.env.log.WarnContext(ctx, "bye unanswered", "call_id", c.id, "err", tx.Err())
			return
		case <-ctx.Done():
			return
		}
	}
}

// byeRequest builds the BYE of c's dialog as the UAS sees it
// (sipx.InDialog, the rule transfer's in-dialog requests share), sent from
// the listener the INVITE came to, with CSeq byeCSeq.
func (c *inboundCall) byeRequest() (*sip.Request, error) {
	return c.request(sip.BYE, byeCSeq)
}

// request builds method in c's dialog with CSeq cseq, as byeRequest
// does: ingress's BYE, and the NOTIFYs of an inbound REFER (refer.go).
func (c *inboundCall) request(method sip.RequestMethod, cseq uint32) (*sip.Request, error) {
	c.mu.Lock()
	d, udp := c.dialog, c.udp
	c.mu.Unlock()
	if d == nil {
		return nil, errNoDialog
	}
	req, err := sipx.InDialog(method, d, cseq)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoDialog, err)
	}
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: req.Transport(), Params: sip.NewParams()}
	via.Params.Add("branch", sip.GenerateBranch())
	if udp != nil && req.Transport() == "UDP" {
		// From the listener the INVITE came to: the address the caller
		// knows from our Contact.
		la := udp.LocalAddr().(*net.UDPAddr)
		req.Laddr = sip.Addr{IP: la.IP, Port: la.Port}
		via.Host, via.Port = c.env.viaHost, la.Port
		if via.Host == "" {
			via.Host = la.IP.String()
		}
	}
	req.PrependHeader(via)
	req.AppendHeader(sip.NewHeader("User-Agent", "baton-ingress"))
	return req, nil
}

// byeClient sends ingress's BYEs through the sipgo client and remembers
// their Via branches while their transactions last: the read filter lets
// in only the responses that answer one of them.
type byeClient struct {
	client   *sipgo.Client
	branches sync.Map
}

// send starts req's client transaction; done forgets its branch.
func (b *byeClient) send(ctx context.Context, req *sip.Request) (sip.ClientTransaction, func(), error) {
	branch, _ := req.Via().Params.Get("branch")
	b.branches.Store(branch, struct{}{})
	built := func(*sipgo.Client, *sip.Request) error { return nil } // every header is there
	tx, err := b.client.TransactionRequest(ctx, req, built)
	if err != nil {
		b.branches.Delete(branch)
		return nil, nil, fmt.Errorf("send bye: %w", err)
	}
	return tx, func() { b.branches.Delete(branch) }, nil
}

// awaitsAnswer reports whether a response with this Via branch answers a
// BYE ingress sent.
func (b *byeClient) awaitsAnswer(branch string) bool {
	if branch == "" {
		return false
	}
	_, ok := b.branches.Load(branch)
	return ok
}
