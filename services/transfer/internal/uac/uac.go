// Package uac is transfer's SIP user agent client: one UDP socket that
// in-dialog requests leave from and their responses come back to. The
// top Via names that socket's reachable host and its port explicitly,
// because peers such as SIPp answer to the Via sent-by and nothing else.
package uac

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// readyTimeout bounds the wait for sipgo to register the listening socket.
const readyTimeout = 5 * time.Second

// Client sends requests from one UDP socket and, when TLS is configured,
// starts new legs over TLS.
type Client struct {
	ua      *sipgo.UserAgent
	client  *sipgo.Client
	conn    net.PacketConn
	served  chan struct{}
	dialogs *sipgo.DialogClientCache
	contact sip.ContactHeader
	// TLS: nil tlsDialogs means no TLS transport.
	tlsLn      net.Listener
	tlsServed  chan struct{}
	tlsDialogs *sipgo.DialogClientCache
	tlsHost    string
	tlsPort    int
}

// TLS configures the TLS transport of new legs (warm transfers with
// encryption tls_srtp or a sips: route).
type TLS struct {
	// Listen is the TLS listener's host:port (port 0 picks one): peers
	// open connections to it for requests in our dialogs (BYE), and our
	// Contact and Via name it.
	Listen string
	// Server holds the listener's certificate.
	Server *tls.Config
	// Client verifies the peers we dial (RootCAs, ServerName from the
	// route host); its Certificates are offered for mutual TLS.
	Client *tls.Config
}

// Option configures Listen.
type Option func(*options)

type options struct{ tls *TLS }

// WithTLS adds the TLS transport.
func WithTLS(t TLS) Option { return func(o *options) { o.tls = &t } }

// Listen binds listen (host:port, port 0 picks one) and builds a client
// whose requests leave from that socket with Via sent-by viaHost and the
// bound port. Close releases it.
func Listen(ctx context.Context, listen, viaHost string, logger *slog.Logger, opts ...Option) (*Client, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	var lc net.ListenConfig
	conn, err := lc.ListenPacket(ctx, "udp", listen)
	if err != nil {
		return nil, fmt.Errorf("listen sip %s: %w", listen, err)
	}
	local := conn.LocalAddr().String()
	_, portStr, _ := net.SplitHostPort(local)
	port, _ := strconv.Atoi(portStr)

	uaOpts := []sipgo.UserAgentOption{sipgo.WithUserAgent("baton-transfer")}
	var tlsLn net.Listener
	if o.tls != nil {
		tcp, err := lc.Listen(ctx, "tcp", o.tls.Listen)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("listen sip tls %s: %w", o.tls.Listen, err), conn.Close())
		}
		tlsLn = tls.NewListener(tcp, o.tls.Server)
		if o.tls.Client != nil {
			uaOpts = append(uaOpts, sipgo.WithUserAgenTLSConfig(o.tls.Client))
		}
	}
	closeAll := func(err error) error {
		if tlsLn != nil {
			err = errors.Join(err, tlsLn.Close())
		}
		return errors.Join(err, conn.Close())
	}
	ua, err := sipgo.NewUA(uaOpts...)
	if err != nil {
		return nil, closeAll(fmt.Errorf("new sip user agent: %w", err))
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(logger.With("component", "sip")))
	if err != nil {
		return nil, closeAll(errors.Join(fmt.Errorf("new sip server: %w", err), ua.Close()))
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
		return nil, closeAll(errors.Join(fmt.Errorf("new sip client: %w", err), ua.Close()))
	}
	c := &Client{ua: ua, client: client, conn: conn, served: make(chan struct{})}
	// New legs (warm transfer) give this socket as their Contact: the
	// destination's BYE comes here.
	c.contact = sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "baton-transfer", Host: viaHost, Port: port}}
	c.dialogs = sipgo.NewDialogClientCache(client, c.contact)
	if tlsLn != nil {
		// A second client for TLS: no fixed local address (each peer gets
		// its own connection), Via and Contact name the listener.
		host, tport := viaHost, tlsLn.Addr().(*net.TCPAddr).Port
		tlsClient, err := sipgo.NewClient(ua,
			sipgo.WithClientLogger(logger.With("component", "sip")),
			sipgo.WithClientHostname(host),
			sipgo.WithClientPort(tport),
		)
		if err != nil {
			return nil, closeAll(errors.Join(fmt.Errorf("new sip tls client: %w", err), ua.Close()))
		}
		c.tlsLn, c.tlsHost, c.tlsPort, c.tlsServed = tlsLn, host, tport, make(chan struct{})
		c.tlsDialogs = sipgo.NewDialogClientCache(tlsClient, c.tlsContact(true))
	}
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		err := c.dialogs.ReadBye(req, tx)
		if err != nil && c.tlsDialogs != nil {
			err = c.tlsDialogs.ReadBye(req, tx)
		}
		if err != nil {
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
	if c.tlsLn != nil {
		go func() {
			defer close(c.tlsServed)
			// Returns when the listener closes.
			_ = srv.ServeTLS(c.tlsLn)
		}()
	}
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

// tlsContact is the Contact of a leg over TLS: a sips: URI for a sips:
// Request-URI (RFC 3261 8.1.1.8), else sip: with transport=tls.
func (c *Client) tlsContact(sips bool) sip.ContactHeader {
	u := sip.Uri{Scheme: "sips", User: "baton-transfer", Host: c.tlsHost, Port: c.tlsPort}
	if !sips {
		u.Scheme = "sip"
		u.UriParams = sip.NewParams()
		u.UriParams.Add("transport", "tls")
	}
	return sip.ContactHeader{Address: u}
}

// TLSAddr is the TLS listener's address; nil without TLS.
func (c *Client) TLSAddr() *net.TCPAddr {
	if c.tlsLn == nil {
		return nil
	}
	return c.tlsLn.Addr().(*net.TCPAddr)
}

// ErrNoTLS means a request needs TLS and none is configured.
var ErrNoTLS = errors.New("TLS signalling is not configured (tls.listen)")

// Invite sends req, an INVITE that starts a new dialog, and returns its
// session: WaitAnswer (CANCEL when its ctx ends), Ack, Bye, and
// Context(), done when the far end sent BYE. A request whose transport is
// TLS goes over the TLS transport (ErrNoTLS without one).
func (c *Client) Invite(ctx context.Context, req *sip.Request) (*sipgo.DialogClientSession, error) {
	dialogs := c.dialogs
	if strings.EqualFold(req.Transport(), "TLS") {
		if c.tlsDialogs == nil {
			return nil, fmt.Errorf("INVITE %s: %w", req.Recipient.String(), ErrNoTLS)
		}
		dialogs = c.tlsDialogs
		if req.Contact() == nil {
			contact := c.tlsContact(req.Recipient.IsEncrypted())
			req.AppendHeader(&contact)
		}
	}
	d, err := dialogs.WriteInvite(ctx, req)
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
	if c.tlsLn != nil {
		if cerr := c.tlsLn.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = errors.Join(err, cerr)
		}
		<-c.tlsServed
	}
	return err
}
