package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// sbc plays the carrier's SBC: it places calls to ingress, takes the
// REFER that transfer sends in the call's dialog (202), reports the
// transfer done in a NOTIFY sipfrag (SIP/2.0 200 OK) and hangs up.
type sbc struct {
	ua      *sipgo.UserAgent
	srv     *sipgo.Server
	cl      *sipgo.Client
	dialogs *sipgo.DialogClientCache
	conn    net.PacketConn
	port    int
	ingress sip.Uri

	mu    sync.Mutex
	calls map[string]*sbcCall
	// referred receives a call id when its REFER arrived.
	onRefer func(id string, at time.Time)
	// onNotify hears when a call's NOTIFY left, and whether it was answered.
	onNotify func(id string, at time.Time, err error)
}

type sbcCall struct {
	d *sipgo.DialogClientSession
}

func newSBC(ctx context.Context) (*sbc, error) {
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("bench-sbc"))
	if err != nil {
		return nil, fmt.Errorf("sbc: %w", err)
	}
	var lc net.ListenConfig
	conn, err := lc.ListenPacket(ctx, "udp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("sbc listen: %w", err)
	}
	port := conn.LocalAddr().(*net.UDPAddr).Port
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		return nil, fmt.Errorf("sbc: %w", err)
	}
	cl, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientPort(port))
	if err != nil {
		return nil, fmt.Errorf("sbc: %w", err)
	}
	s := &sbc{ua: ua, srv: srv, cl: cl, conn: conn, port: port, calls: map[string]*sbcCall{}}
	s.dialogs = sipgo.NewDialogClientCache(cl, sip.ContactHeader{Address: sip.Uri{User: "sbc", Host: "127.0.0.1", Port: port}})
	srv.OnRefer(s.refer)
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := s.dialogs.ReadBye(req, tx); err != nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		}
	})
	go func() { _ = srv.ServeUDP(conn) }()
	return s, nil
}

func (s *sbc) close() {
	_ = s.ua.Close()
	_ = s.conn.Close()
}

const sdpOffer = "v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
	"m=audio %d RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"

// call places one call to ingress and returns its Call-ID once answered
// and acknowledged.
func (s *sbc) call(ctx context.Context, n int) (string, error) {
	to := sip.Uri{User: "+4930111222", Host: s.ingress.Host, Port: s.ingress.Port}
	ct := sip.ContentTypeHeader("application/sdp")
	d, err := s.dialogs.Invite(ctx, to, fmt.Appendf(nil, sdpOffer, 40000+2*(n%10000)), &ct,
		sip.NewHeader("X-Customer-Id", fmt.Sprintf("c%d", n)))
	if err != nil {
		return "", fmt.Errorf("invite: %w", err)
	}
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		return "", fmt.Errorf("answer: %w", err)
	}
	if err := d.Ack(ctx); err != nil {
		return "", fmt.Errorf("ack: %w", err)
	}
	id := d.InviteRequest.CallID().Value()
	s.mu.Lock()
	s.calls[id] = &sbcCall{d: d}
	s.mu.Unlock()
	return id, nil
}

// refer accepts a REFER, then sends the final NOTIFY and a BYE.
func (s *sbc) refer(req *sip.Request, tx sip.ServerTransaction) {
	at := time.Now()
	id := req.CallID().Value()
	s.mu.Lock()
	c := s.calls[id]
	delete(s.calls, id)
	s.mu.Unlock()
	if c == nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return
	}
	s.onRefer(id, at)
	_ = tx.Respond(sip.NewResponseFromRequest(req, 202, "Accepted", nil))
	go s.notify(c, id, req.CSeq().SeqNo)
}

func (s *sbc) notify(c *sbcCall, id string, referCSeq uint32) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := sip.NewRequest(sip.NOTIFY, c.d.InviteResponse.Contact().Address)
	n.AppendHeader(sip.NewHeader("Event", fmt.Sprintf("refer;id=%d", referCSeq)))
	n.AppendHeader(sip.NewHeader("Subscription-State", "terminated;reason=noresource"))
	ct := sip.ContentTypeHeader("message/sipfrag;version=2.0")
	n.AppendHeader(&ct)
	n.SetBody([]byte("SIP/2.0 200 OK\r\n"))
	at := time.Now()
	res, err := c.d.Do(ctx, n)
	if err == nil && res.StatusCode != 200 {
		err = fmt.Errorf("NOTIFY answered %d", res.StatusCode)
	}
	s.onNotify(id, at, err)
	_ = c.d.Bye(ctx) // the transfer is done: the SBC leaves the call
	_ = c.d.Close()
}
