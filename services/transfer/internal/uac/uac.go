// Package uac is transfer's SIP user agent client: one UDP socket that
// in-dialog requests leave from and their responses come back to. The
// top Via names that socket's reachable host and its port explicitly,
// because peers such as SIPp answer to the Via sent-by and nothing else.
package uac

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// readyTimeout bounds the wait for sipgo to register the listening socket.
const readyTimeout = 5 * time.Second

// Client sends requests from one UDP socket.
type Client struct {
	ua      *sipgo.UserAgent
	client  *sipgo.Client
	conn    net.PacketConn
	served  chan struct{}
	dialogs *sipgo.DialogClientCache
	contact sip.ContactHeader
}

// Listen binds listen (host:port, port 0 picks one) and builds a client
// whose requests leave from that socket with Via sent-by viaHost and the
// bound port. Close releases it.
func Listen(ctx context.Context, listen, viaHost string, logger *slog.Logger) (*Client, error) {
	var lc net.ListenConfig
	conn, err := lc.ListenPacket(ctx, "udp", listen)
	if err != nil {
		return nil, fmt.Errorf("listen sip %s: %w", listen, err)
	}
	local := conn.LocalAddr().String()
	_, portStr, _ := net.SplitHostPort(local)
	port, _ := strconv.Atoi(portStr)

	ua, err := sipgo.NewUA(sipgo.WithUserAgent("baton-transfer"))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("new sip user agent: %w", err), conn.Close())
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(logger.With("component", "sip")))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("new sip server: %w", err), ua.Close(), conn.Close())
	}
	client, err := sipgo.NewClient(ua,
		sipgo.WithClientLogger(logger.With("component", "sip")),
		// Via sent-by: the reachable host and the real port, never the
		// 0.0.0.0:<ephemeral> a bare client would write.
		sipgo.WithClientHostname(viaHost),
		sipgo.WithClientPort(port),
		// Send from the listening socket itself, so the Via is true.
		sipgo.WithClientConnectionAddr(local),
	)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("new sip client: %w", err), ua.Close(), conn.Close())
	}
	c := &Client{ua: ua, client: client, conn: conn, served: make(chan struct{})}
	// New legs (warm transfer) give this socket as their Contact: the
	// destination's BYE comes here.
	c.contact = sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "baton-transfer", Host: viaHost, Port: port}}
	c.dialogs = sipgo.NewDialogClientCache(client, c.contact)
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := c.dialogs.ReadBye(req, tx); err != nil {
			_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil))
		}
	})
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		// A re-INVITE from a destination (hold, codec change) is not
		// supported yet: the bridge keeps the negotiated stream.
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusNotAcceptableHere, "Not Acceptable Here", nil))
	})
	go func() {
		defer close(c.served)
		// Responses arrive here and are matched to their transactions;
		// stray requests get sipgo's default answer. ServeUDP returns when
		// the user agent closes the socket.
		_ = srv.ServeUDP(conn)
	}()
	if err := c.waitReady(ctx, local); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

// waitReady waits until sipgo has put the socket into its connection pool;
// before that, a request would try to bind the same port a second time.
func (c *Client) waitReady(ctx context.Context, local string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := c.ua.TransportLayer().GetConnection("udp", local); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sip socket %s not ready: %w", local, ctx.Err())
		case <-c.served:
			return fmt.Errorf("sip socket %s closed before it was ready", local)
		case <-tick.C:
		}
	}
}

// Addr is the bound socket address.
func (c *Client) Addr() *net.UDPAddr { return c.conn.LocalAddr().(*net.UDPAddr) }

// Do sends req in a client transaction and returns its final response.
// It fails with ErrTimeout when no final response came (the transaction's
// timer F fired or ctx's deadline passed).
func (c *Client) Do(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	res, err := c.client.Do(ctx, req)
	switch {
	case err == nil:
		return res, nil
	case errors.Is(err, sip.ErrTransactionTimeout), errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("%s %s: %w: %w", req.Method, req.Recipient.String(), ErrTimeout, err)
	default:
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.Recipient.String(), err)
	}
}

// Contact is the Contact of the legs this client starts.
func (c *Client) Contact() sip.ContactHeader { return c.contact }

// Invite sends req, an INVITE that starts a new dialog, and returns its
// session: WaitAnswer (CANCEL when its ctx ends), Ack, Bye, and
// Context(), done when the far end sent BYE.
func (c *Client) Invite(ctx context.Context, req *sip.Request) (*sipgo.DialogClientSession, error) {
	d, err := c.dialogs.WriteInvite(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("INVITE %s: %w", req.Recipient.String(), err)
	}
	return d, nil
}

// Write sends a request outside any transaction (the ACK of a 2xx).
func (c *Client) Write(req *sip.Request) error {
	if err := c.client.WriteRequest(req); err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.Recipient.String(), err)
	}
	return nil
}

// ErrTimeout means a request got no final response in time.
var ErrTimeout = errors.New("no final response")

// Close stops the user agent and releases the socket.
func (c *Client) Close() error {
	err := c.ua.Close()
	if cerr := c.conn.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
		err = errors.Join(err, cerr)
	}
	<-c.served
	return err
}
