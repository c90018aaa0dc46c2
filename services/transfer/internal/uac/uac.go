// Package uac is transfer's SIP user agent client. Requests over UDP leave
// from one socket that their responses come back to; the same port
// serves TCP (RFC 3261 18: every element implements both), and a TLS
// listener is added when configured. The top Via names the reachable
// host and the listening port explicitly, because peers such as SIPp
// answer to the Via sent-by and nothing else.
package uac

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/pkg/connguard"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/pkg/sipx"
)

// readyTimeout bounds the wait for sipgo to register the listening socket.
const readyTimeout = 5 * time.Second

// bindAttempts bounds the search for a port free for both UDP and TCP
// when the configured port is 0.
const bindAttempts = 20

// Client sends requests over UDP, TCP and, when configured, TLS.
type Client struct {
	ua     *sipgo.UserAgent
	conn   net.PacketConn
	served chan struct{}
	host   string
	// One per transport; tls is nil without TLS.
	udp, tcp, tls *transport
	// answerers holds the ReInviteFunc of each leg that takes re-INVITEs,
	// by dialog id.
	answerers sync.Map
	// conns counts what the TCP and TLS listeners' guards refused and
	// closed; guard filters the UDP socket.
	conns connguard.Stats
	guard *udpGuard
	// prov records the 18x responses of ringing legs in wire order.
	prov *provisionals
}

// transport is one transport's client, its listener and the dialogs of
// the legs started over it.
type transport struct {
	name    string // UDP, TCP or TLS
	client  *sipgo.Client
	dialogs *sipgo.DialogClientCache
	ln      net.Listener // nil for UDP
	port    int
	served  chan struct{}
}

// TLS configures the TLS transport of new legs (warm transfers with
// encryption tls_srtp or a sips: route) and of in-dialog requests in calls
// that came in over TLS.
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

// Options are Listen's settings beyond its address.
type Options struct {
	// TLS, when set, adds the TLS transport.
	TLS *TLS
	// Limits bound the TCP and TLS listeners; zero fields take
	// connguard's defaults.
	Limits Limits
}

// Listen binds listen (host:port, port 0 picks one) for UDP and TCP and
// builds a client whose requests carry Via sent-by viaHost and the bound
// port. Close releases it.
//
// The TCP and TLS listeners are guarded (Options.Limits, connguard): capped in
// all and per source, and a connection silent for too long, a TLS
// handshake included, is closed. The UDP socket takes only responses to
// requests transfer sent and requests in the dialogs of its legs; every
// other datagram is dropped before sipgo parses it, counted (Counters) and
// logged at a bounded rate without its bytes (udpGuard says why sipgo's
// pool needs that).
func Listen(ctx context.Context, listen, viaHost string, logger *slog.Logger, o Options) (*Client, error) {
	conn, rawTCP, err := bindPair(ctx, listen)
	if err != nil {
		return nil, err
	}
	local := conn.LocalAddr().String()
	port := conn.LocalAddr().(*net.UDPAddr).Port
	c := &Client{served: make(chan struct{}), host: viaHost, prov: newProvisionals()}
	// The guards sit right above the sockets, so a connection is counted
	// and timed from accept, and for TLS before the handshake.
	tcpLn := connguard.Wrap(rawTCP, o.Limits.Policy(nil), &c.conns)
	listeners := []net.Listener{tcpLn}

	// sipgo's transport and transaction layers log through slog.Default
	// unless told otherwise, parse errors at ERROR with the whole packet:
	// they get the service's logger, without packets and rate-limited.
	sipLog := slog.New(observability.QuietSIP(logger.Handler(), observability.NewRateLog(logsPerSecond))).With("component", "sip")
	c.guard = newUDPGuard(local, logger.With("component", "sip"))
	uaOpts := []sipgo.UserAgentOption{
		sipgo.WithUserAgent("baton-transfer"),
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerLogger(sipLog),
			sip.WithTransportLayerReadFilter(func(info sip.TransportReadProps, data []byte) ([]byte, error) {
				data, err := c.guard.filter(info, data)
				if len(data) > 0 {
					c.prov.observe(data)
				}
				return data, err
			}),
		),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(sipLog),
			// A response that passed the filter but whose transaction
			// is over (a late retransmission): nothing to do.
			sip.WithTransactionLayerUnhandledResponseHandler(func(r *sip.Response) {
				sipLog.Debug("response to a finished transaction", "status", r.StatusCode)
			}),
		),
	}
	var tlsLn net.Listener
	if o.TLS != nil {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", o.TLS.Listen)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("listen sip tls %s: %w", o.TLS.Listen, err), tcpLn.Close(), conn.Close())
		}
		tlsLn = tls.NewListener(connguard.Wrap(ln, o.Limits.Policy(nil), &c.conns), o.TLS.Server)
		listeners = append(listeners, tlsLn)
		if o.TLS.Client != nil {
			uaOpts = append(uaOpts, sipgo.WithUserAgenTLSConfig(o.TLS.Client))
		}
	}
	closeAll := func(err error) error {
		for _, ln := range listeners {
			err = errors.Join(err, ln.Close())
		}
		return errors.Join(err, conn.Close())
	}
	ua, err := sipgo.NewUA(uaOpts...)
	if err != nil {
		return nil, closeAll(fmt.Errorf("new sip user agent: %w", err))
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(sipLog))
	if err != nil {
		return nil, closeAll(errors.Join(fmt.Errorf("new sip server: %w", err), ua.Close()))
	}
	c.ua, c.conn = ua, conn
	newTransport := func(name string, ln net.Listener, port int, extra ...sipgo.ClientOption) (*transport, error) {
		client, err := sipgo.NewClient(ua, append([]sipgo.ClientOption{
			sipgo.WithClientLogger(sipLog),
			// Via sent-by: the reachable host and the listening port,
			// never the 0.0.0.0:<ephemeral> a bare client would write.
			sipgo.WithClientHostname(viaHost),
			sipgo.WithClientPort(port),
		}, extra...)...)
		if err != nil {
			return nil, fmt.Errorf("new sip %s client: %w", name, err)
		}
		t := &transport{name: name, client: client, ln: ln, port: port}
		// New legs (warm transfer) give this transport's listener as
		// their Contact: the destination's BYE comes there.
		t.dialogs = sipgo.NewDialogClientCache(client, c.contact(t, false))
		return t, nil
	}
	// UDP requests leave from the listening socket itself, so the Via is
	// true; TCP and TLS dial a connection per peer.
	if c.udp, err = newTransport("UDP", nil, port, sipgo.WithClientConnectionAddr(local)); err == nil {
		c.tcp, err = newTransport("TCP", tcpLn, port)
	}
	if err == nil && tlsLn != nil {
		c.tls, err = newTransport("TLS", tlsLn, tlsLn.Addr().(*net.TCPAddr).Port)
	}
	if err != nil {
		return nil, closeAll(errors.Join(err, ua.Close()))
	}
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		for _, t := range c.transports() {
			if t.dialogs.ReadBye(req, tx) == nil {
				return
			}
		}
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil))
	})
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	srv.OnInvite(c.reInvite)
	srv.OnNoRoute(refuse)
	c.guard.inDialog = c.inDialog
	c.guard.pool = func() *sip.ConnectionPool { return ua.TransportLayer().Pool("udp") }
	go func() {
		defer close(c.served)
		// Responses arrive here and are matched to their transactions;
		// what the guard lets in besides are requests in our legs.
		// ServeUDP returns when the user agent closes the socket.
		_ = srv.ServeUDP(&watchedConn{PacketConn: conn, g: c.guard})
	}()
	for _, t := range []*transport{c.tcp, c.tls} {
		if t == nil {
			continue
		}
		t.served = make(chan struct{})
		serve := srv.ServeTCP
		if t == c.tls {
			serve = srv.ServeTLS
		}
		go func() {
			defer close(t.served)
			// Returns when the listener closes.
			_ = serve(t.ln)
		}()
	}
	if err := c.waitReady(ctx, local); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

// bindPair binds listen for UDP and the same address and port for TCP.
// With port 0 it tries ports the kernel picks for UDP until TCP gets the
// same one.
func bindPair(ctx context.Context, listen string) (net.PacketConn, net.Listener, error) {
	var lc net.ListenConfig
	_, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen sip %s: %w", listen, err)
	}
	attempts := 1
	if portStr == "0" {
		attempts = bindAttempts
	}
	for i := 0; ; i++ {
		conn, err := lc.ListenPacket(ctx, "udp", listen)
		if err != nil {
			return nil, nil, fmt.Errorf("listen sip %s: %w", listen, err)
		}
		ln, err := lc.Listen(ctx, "tcp", conn.LocalAddr().String())
		if err == nil {
			return conn, ln, nil
		}
		err = errors.Join(fmt.Errorf("listen sip tcp %s: %w", conn.LocalAddr(), err), conn.Close())
		if i+1 >= attempts || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, err
		}
	}
}

// inDialog reports whether req belongs to a dialog of one of our legs.
func (c *Client) inDialog(req *sip.Request) bool {
	for _, t := range c.transports() {
		if _, err := t.dialogs.MatchRequestDialog(req); err == nil {
			return true
		}
	}
	return false
}

func (c *Client) transports() []*transport {
	if c.tls == nil {
		return []*transport{c.udp, c.tcp}
	}
	return []*transport{c.udp, c.tcp, c.tls}
}

// transportOf picks the transport req names (UDP, TCP or TLS).
func (c *Client) transportOf(req *sip.Request) (*transport, error) {
	switch tp := strings.ToUpper(req.Transport()); tp {
	case "UDP", "":
		return c.udp, nil
	case "TCP":
		return c.tcp, nil
	case "TLS":
		if c.tls == nil {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.Recipient.String(), ErrNoTLS)
		}
		return c.tls, nil
	default:
		return nil, fmt.Errorf("%s %s: transport %s is not supported", req.Method, req.Recipient.String(), tp)
	}
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

// Addr is the bound socket address (UDP; TCP listens on the same).
func (c *Client) Addr() *net.UDPAddr { return c.conn.LocalAddr().(*net.UDPAddr) }

// TCPAddr is the TCP listener's address.
func (c *Client) TCPAddr() *net.TCPAddr { return c.tcp.ln.Addr().(*net.TCPAddr) }

// WatchProvisional records the first 18x response to an INVITE with
// callID in the order the transport read it: sipgo may hand a 180 to the
// transaction after the 200 that followed it on the wire, and then drops
// it (see provisionals). seen returns it; stop ends the watch and must
// be called.
func (c *Client) WatchProvisional(callID string) (seen func() (Provisional, bool), stop func()) {
	return c.prov.watch(callID)
}

// Do sends req in a client transaction over the transport it names and
// returns its final response. It fails with ErrTimeout when no final
// response came (the transaction's timer F fired or ctx's deadline
// passed), and with ErrNoTLS for TLS without a TLS transport.
func (c *Client) Do(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	congestionControlled(req)
	t, err := c.transportOf(req)
	if err != nil {
		return nil, err
	}
	res, err := t.client.Do(ctx, req)
	switch {
	case err == nil:
		return res, nil
	case errors.Is(err, sip.ErrTransactionTimeout), errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("%s %s: %w: %w", req.Method, req.Recipient.String(), ErrTimeout, err)
	default:
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.Recipient.String(), err)
	}
}

// viaAllowance is the room left for the Via the transport adds to a
// request before it is sent (its sent-by and branch).
const viaAllowance = 120

// congestionControlled moves a request too large for UDP to TCP (RFC 3261
// 18.1.1: within 200 bytes of the path MTU, or over 1300 bytes when the
// MTU is unknown, a request goes over a congestion-controlled transport;
// sipgo refuses such a datagram outright). The far end must take TCP on
// the same address and port, as RFC 3261 18 requires of it. A REFER with
// the caller's context in long X- headers is the usual case.
func congestionControlled(req *sip.Request) {
	if tp := strings.ToUpper(req.Transport()); tp != "UDP" && tp != "" {
		return
	}
	if len(req.String())+viaAllowance > sip.UDPMTUSize-200 {
		req.SetTransport("TCP")
	}
}

// Contact is the Contact of the legs this client starts over UDP.
func (c *Client) Contact() sip.ContactHeader { return c.contact(c.udp, false) }

// contact is the Contact of a leg over t: a sips: URI for a sips:
// Request-URI (RFC 3261 8.1.1.8), else sip: with the transport named
// unless it is UDP.
func (c *Client) contact(t *transport, sips bool) sip.ContactHeader {
	u := sip.Uri{Scheme: "sip", User: "baton-transfer", Host: c.host, Port: t.port}
	switch {
	case sips:
		u.Scheme = "sips"
	case t.name != "UDP":
		u.UriParams = sip.NewParams()
		u.UriParams.Add("transport", strings.ToLower(t.name))
	}
	return sip.ContactHeader{Address: u}
}

// TLSAddr is the TLS listener's address; nil without TLS.
func (c *Client) TLSAddr() *net.TCPAddr {
	if c.tls == nil {
		return nil
	}
	return c.tls.ln.Addr().(*net.TCPAddr)
}

// ErrNoTLS means a request needs TLS and none is configured.
var ErrNoTLS = errors.New("TLS signalling is not configured (tls.listen)")

// Invite sends req, an INVITE that starts a new dialog, over the
// transport it names (ErrNoTLS for TLS without one) and returns its
// session: WaitAnswer (CANCEL when its ctx ends), Ack, Bye, and
// Context(), done when the far end sent BYE.
func (c *Client) Invite(ctx context.Context, req *sip.Request) (*sipgo.DialogClientSession, error) {
	congestionControlled(req)
	t, err := c.transportOf(req)
	if err != nil {
		return nil, err
	}
	if t != c.udp && req.Contact() == nil {
		contact := c.contact(t, req.Recipient.IsEncrypted())
		req.AppendHeader(&contact)
	}
	d, err := t.dialogs.WriteInvite(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("INVITE %s: %w", req.Recipient.String(), err)
	}
	return d, nil
}

// Write sends a request outside any transaction (the ACK of a 2xx) over
// the transport it names.
func (c *Client) Write(req *sip.Request) error {
	t, err := c.transportOf(req)
	if err == nil {
		err = t.client.WriteRequest(req)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.Recipient.String(), err)
	}
	return nil
}

// ReInviteFunc answers a re-INVITE of a leg with a status, its reason
// and, for a 2xx, the SDP.
type ReInviteFunc func(req *sip.Request) (code int, reason string, sdp []byte)

// OnReInvite answers the re-INVITEs of leg d (an established dialog) with
// f until stop is called. A re-INVITE of a leg without one gets 500 with
// Retry-After (RFC 3261 14.2: it cannot be taken now).
func (c *Client) OnReInvite(d *sipgo.DialogClientSession, f ReInviteFunc) (stop func()) {
	id := d.ID
	c.answerers.Store(id, f)
	return func() { c.answerers.Delete(id) }
}

// reInvite serves an INVITE that arrives here: a re-INVITE in one of our
// legs (a hold, a session refresh, a new address), or a stray INVITE.
func (c *Client) reInvite(req *sip.Request, tx sip.ServerTransaction) {
	respond := func(code int, reason string, body []byte, hdrs ...sip.Header) {
		res := sip.NewResponseFromRequest(req, code, reason, body)
		for _, h := range hdrs {
			res.AppendHeader(h)
		}
		_ = tx.Respond(res)
	}
	var d *sipgo.DialogClientSession
	var t *transport
	for _, tp := range c.transports() {
		if m, err := tp.dialogs.MatchRequestDialog(req); err == nil {
			d, t = m, tp
			break
		}
	}
	if d == nil {
		respond(sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil)
		return
	}
	if err := d.ReadRequest(req, tx); err != nil {
		respond(sip.StatusInternalServerError, "CSeq Out Of Order", nil)
		return
	}
	f, ok := c.answerers.Load(d.ID)
	if !ok {
		respond(sip.StatusInternalServerError, "Not Ready", nil, sip.NewHeader("Retry-After", "1"))
		return
	}
	code, reason, body := f.(ReInviteFunc)(req)
	if code < 200 || code >= 300 {
		respond(code, reason, nil)
		return
	}
	contact := c.contact(t, req.Recipient.IsEncrypted())
	respond(code, reason, body, &contact, sip.NewHeader("Content-Type", "application/sdp"))
}

// ErrTimeout means a request got no final response in time.
var ErrTimeout = errors.New("no final response")

// Close stops the user agent and releases the sockets.
func (c *Client) Close() error {
	err := c.ua.Close()
	if cerr := c.conn.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
		err = errors.Join(err, cerr)
	}
	<-c.served
	for _, t := range []*transport{c.tcp, c.tls} {
		if t == nil {
			continue
		}
		if cerr := t.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = errors.Join(err, cerr)
		}
		<-t.served
	}
	return err
}

// Allow lists the methods this user agent serves in the legs it sets up:
// what a new leg's INVITE advertises (RFC 3261 20.5), what OPTIONS and a
// 405 name. No UPDATE (RFC 3311): a peer refreshes or changes the session
// with a re-INVITE.
const Allow = "INVITE, ACK, CANCEL, BYE, OPTIONS"

// refuse answers a request no handler serves: OPTIONS (a keepalive, in a
// dialog or not) 200, a method SIP defines 405 and one it does not 501,
// each with Allow (RFC 3261 8.2.1 and 11.2). Over UDP only requests in
// our legs' dialogs get this far; over TCP and TLS any request does.
func refuse(req *sip.Request, tx sip.ServerTransaction) {
	code, reason := sipx.Refusal(string(req.Method))
	if req.Method == sip.OPTIONS {
		code, reason = sip.StatusOK, "OK"
	}
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	res.AppendHeader(sip.NewHeader("Allow", Allow))
	if req.Method == sip.OPTIONS {
		res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	}
	_ = tx.Respond(res)
}
