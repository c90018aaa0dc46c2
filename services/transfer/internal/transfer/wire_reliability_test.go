//go:build reliability

package transfer

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
)

// rawSIP is a SIP peer on a plain UDP socket: it keeps every datagram it
// receives byte for byte, and answers requests (REFER 202, BYE 200,
// INVITE 486, ACK nothing) so transfer's transactions end.
type rawSIP struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  [][]byte
	done chan struct{}
}

func startRawSIP(t *testing.T) *rawSIP {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	r := &rawSIP{conn: conn, done: make(chan struct{})}
	go r.serve()
	t.Cleanup(func() {
		_ = conn.Close()
		<-r.done
	})
	return r
}

func (r *rawSIP) addr() *net.UDPAddr { return r.conn.LocalAddr().(*net.UDPAddr) }

func (r *rawSIP) serve() {
	defer close(r.done)
	buf := make([]byte, 65535)
	parser := sip.NewParser()
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		data := append([]byte(nil), buf[:n]...)
		r.mu.Lock()
		r.got = append(r.got, data)
		r.mu.Unlock()
		msg, err := parser.ParseSIP(data)
		if err != nil {
			continue
		}
		req, ok := msg.(*sip.Request)
		if !ok || req.IsAck() {
			continue
		}
		code, reason := 200, "OK"
		switch req.Method {
		case sip.REFER:
			code, reason = 202, "Accepted"
		case sip.INVITE:
			code, reason = 486, "Busy Here"
		}
		res := sip.NewResponseFromRequest(req, code, reason, nil)
		_, _ = r.conn.WriteToUDPAddrPort([]byte(res.String()), from)
	}
}

// datagrams returns what was received so far.
func (r *rawSIP) datagrams() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.got...)
}

var headerName = regexp.MustCompile("^[A-Za-z0-9.!%*_+`'~-]+$")

// wireMessage is one datagram's head, checked.
type wireMessage struct {
	method  string
	callID  string
	headers map[string][]string // lower-cased name → values
}

// scanWire checks a datagram as it travelled: the head holds no NUL, each
// of its lines ends in CRLF with no other CR or LF, and every header line
// is a token name, a colon and a value. It returns the parsed head.
func scanWire(data []byte) (wireMessage, error) {
	var m wireMessage
	head, _, ok := bytes.Cut(data, []byte("\r\n\r\n"))
	if !ok {
		return m, fmt.Errorf("no end of head in %q", data)
	}
	if bytes.IndexByte(head, 0) >= 0 {
		return m, fmt.Errorf("NUL in the head: %q", head)
	}
	lines := strings.Split(string(head), "\r\n")
	for _, l := range lines {
		if strings.ContainsAny(l, "\r\n") {
			return m, fmt.Errorf("bare CR or LF in line %q", l)
		}
	}
	m.method, _, _ = strings.Cut(lines[0], " ")
	m.headers = map[string][]string{}
	for _, l := range lines[1:] {
		name, value, ok := strings.Cut(l, ":")
		if !ok || !headerName.MatchString(name) {
			return m, fmt.Errorf("not a header line: %q", l)
		}
		k := strings.ToLower(name)
		m.headers[k] = append(m.headers[k], strings.TrimSpace(value))
	}
	if ids := m.headers["call-id"]; len(ids) == 1 {
		m.callID = ids[0]
	} else {
		return m, fmt.Errorf("%d Call-ID headers", len(ids))
	}
	return m, nil
}
