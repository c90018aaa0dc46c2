package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/pkg/connguard"

	"github.com/baton-voice/baton/services/ingress/internal/config"
	"github.com/baton-voice/baton/services/ingress/internal/sipcheck"
)

// bind opens every configured listener and works out the Contact each
// gives in its answers.
func (s *Server) bind() error {
	for _, l := range s.cfg.EffectiveListeners() {
		var (
			addr   net.Addr
			params string
		)
		switch l.Transport {
		case config.UDP:
			laddr, err := net.ResolveUDPAddr("udp", l.Address)
			if err != nil {
				return fmt.Errorf("listen address %s: %w", l.Address, err)
			}
			conn, err := net.ListenUDP("udp", laddr)
			if err != nil {
				return fmt.Errorf("listen sip udp on %s: %w", l.Address, err)
			}
			s.udp = append(s.udp, conn)
			addr = conn.LocalAddr()
		case config.TCP:
			ln, err := net.Listen("tcp", l.Address)
			if err != nil {
				return fmt.Errorf("listen sip tcp on %s: %w", l.Address, err)
			}
			s.streams = append(s.streams, stream{transport: config.TCP, ln: s.guard(ln)})
			addr, params = ln.Addr(), ";transport=tcp"
		case config.TLS:
			cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
			if err != nil {
				return fmt.Errorf("tls listener %s: %w", l.Address, err)
			}
			ln, err := net.Listen("tcp", l.Address)
			if err != nil {
				return fmt.Errorf("listen sip tls on %s: %w", l.Address, err)
			}
			// The guard sits under TLS, so a refused source never gets a
			// handshake and the handshake is under the first-read deadline.
			tlsLn := tls.NewListener(s.guard(ln), &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
			s.streams = append(s.streams, stream{transport: config.TLS, ln: tlsLn})
			addr, params = ln.Addr(), ";transport=tls"
		default:
			return fmt.Errorf("listener %s: transport %q", l.Address, l.Transport)
		}
		ap := addrPort(addr)
		host := s.cfg.ExternalHost
		if host == "" {
			host = ap.Addr().Unmap().String()
		}
		contact := "<sip:baton@" + net.JoinHostPort(host, strconv.Itoa(int(ap.Port()))) + params + ">"
		if s.localContact == "" {
			s.localContact = contact
		}
		transport := strings.ToUpper(l.Transport)
		for _, key := range []string{transport + family(ap.Addr()), transport} {
			if _, ok := s.contacts[key]; !ok {
				s.contacts[key] = contact
			}
		}
	}
	return nil
}

// guard bounds what a stream listener holds: sources no trunk allows are
// closed at accept (before a byte or a TLS handshake), connections are
// capped in all and per source, and silent ones are closed.
func (s *Server) guard(ln net.Listener) net.Listener {
	l := s.cfg.Limits
	return connguard.Wrap(ln, l.Connections.Policy(func(a netip.Addr) bool {
		if s.trunks.Lookup(a) != nil {
			return true
		}
		s.rejectLog.Log(s.log, "connection from an address no trunk allows", "source", a.String())
		return false
	}), &s.conns)
}

func family(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "4"
	}
	return "6"
}

// contactFor is the Contact for an answer to req: the first listener of
// its transport and address family, else of its transport, else the
// first listener.
func (s *Server) contactFor(req *sip.Request) string {
	transport := strings.ToUpper(req.Transport())
	if src, err := netip.ParseAddrPort(req.Source()); err == nil {
		if c, ok := s.contacts[transport+family(src.Addr())]; ok {
			return c
		}
	}
	if c, ok := s.contacts[transport]; ok {
		return c
	}
	return s.localContact
}

func (s *Server) closeListeners() error {
	var errs []error
	for _, c := range s.udp {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for _, st := range s.streams {
		if err := st.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// udpConn is the UDP listener with local address a.
func (s *Server) udpConn(a net.Addr) *net.UDPConn {
	want := addrPort(a)
	for _, c := range s.udp {
		if addrPort(c.LocalAddr()) == want {
			return c
		}
	}
	if len(s.udp) > 0 {
		return s.udp[0]
	}
	return nil
}

// udpFor is the UDP listener req most likely came to: the first of its
// source's address family, else the first; nil for TCP and TLS.
func (s *Server) udpFor(req *sip.Request) *net.UDPConn {
	if req.Transport() != "UDP" || len(s.udp) == 0 {
		return nil
	}
	if src, err := netip.ParseAddrPort(req.Source()); err == nil {
		for _, c := range s.udp {
			if family(addrPort(c.LocalAddr()).Addr()) == family(src.Addr()) {
				return c
			}
		}
	}
	return s.udp[0]
}

// checkStream validates a request that came over TCP or TLS, where the
// read filter sees stream chunks rather than messages and so cannot run
// the validator before sipgo parses. It runs sipcheck on the request as
// sipgo re-renders it, and admits new INVITEs; it answers refusals itself
// and reports whether the request may go on. UDP requests passed the gate
// already.
func (s *Server) checkStream(req *sip.Request, tx sip.ServerTransaction) bool {
	if req.Transport() == "UDP" {
		return true
	}
	r := sipcheck.Check([]byte(req.String()), s.policy)
	switch {
	case r.Drop:
		s.stats.Dropped.Add(1)
		s.rejectLog.Log(s.log, "sip message dropped", "source", req.Source(), "reason", r.Detail, "call_id", r.CallID)
		return false
	case !r.OK():
		s.stats.Invalid.Add(1)
		s.rejectLog.Log(s.log, "sip request refused", "source", req.Source(), "status", r.Status, "reason", r.Detail, "call_id", r.CallID)
		if req.Method != sip.ACK {
			reply(s.log, req, tx, r.Status, r.Reason, extraHeaders(r.Extra)...)
		}
		return false
	}
	if req.Method == sip.INVITE && !r.ToTag {
		trunk := s.trunkOf(req)
		if trunk == nil {
			s.stats.ACLDropped.Add(1)
			return false
		}
		if refused := s.admitInvite(r, trunk, sourceAddr(req), true); refused.Status != 0 {
			reply(s.log, req, tx, refused.Status, refused.Reason, extraHeaders(refused.Extra)...)
			return false
		}
	}
	return true
}

func extraHeaders(hs []sipcheck.Header) []sip.Header {
	out := make([]sip.Header, len(hs))
	for i, h := range hs {
		out[i] = sip.NewHeader(h.Name, h.Value)
	}
	return out
}
