package uac

import (
	"bytes"
	"strconv"
	"sync"
)

// provisionals records the 18x responses to INVITEs of watched Call-IDs
// as the transport reads them, before sipgo hands each message to its own
// goroutine. Those goroutines race: a 180 sent a moment before its 200
// (linphonec over TLS sends them 0.1 ms apart) can reach the client
// transaction after the 200, which has moved it to Accepted (RFC 6026),
// where a 1xx is dropped unseen. The read filter sees a connection's
// bytes in order, so what it records is the order on the wire.
//
// Only watched Call-IDs are kept (a warm transfer's new leg while it
// rings), so memory is bounded by the legs ringing at once; a stream
// read that splits a 180 across two reads goes unrecorded, which is no
// worse than the race.
type provisionals struct {
	mu      sync.Mutex
	watched map[string]*Provisional
}

// Provisional is the first 18x response seen for a watched leg.
type Provisional struct {
	Code   int
	Reason string
}

func newProvisionals() *provisionals {
	return &provisionals{watched: map[string]*Provisional{}}
}

// watch starts recording callID's first 18x; seen returns it (false
// before one came) and stop forgets the Call-ID.
func (p *provisionals) watch(callID string) (seen func() (Provisional, bool), stop func()) {
	p.mu.Lock()
	p.watched[callID] = nil
	p.mu.Unlock()
	seen = func() (Provisional, bool) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if got := p.watched[callID]; got != nil {
			return *got, true
		}
		return Provisional{}, false
	}
	stop = func() {
		p.mu.Lock()
		delete(p.watched, callID)
		p.mu.Unlock()
	}
	return seen, stop
}

var (
	startLine18x = []byte("SIP/2.0 18")
	crlf         = []byte("\r\n")
	headersEnd   = []byte("\r\n\r\n")
)

// observe records the 18x responses to INVITE in data (one datagram, or
// one read of a stream) for watched Call-IDs. It never changes data.
func (p *provisionals) observe(data []byte) {
	if !bytes.Contains(data, startLine18x) {
		return // the common case: one scan, no allocation
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.watched) == 0 {
		return
	}
	for rest := data; ; {
		i := bytes.Index(rest, startLine18x)
		if i < 0 {
			return
		}
		atStart := i == 0 || i >= 2 && bytes.Equal(rest[i-2:i], crlf)
		msg := rest[i:]
		rest = rest[i+len(startLine18x):]
		if !atStart {
			continue
		}
		if end := bytes.Index(msg, headersEnd); end >= 0 {
			msg = msg[:end+2]
		}
		callID, code, reason, ok := parse18x(msg)
		if !ok {
			continue
		}
		if got, watched := p.watched[callID]; watched && got == nil {
			p.watched[callID] = &Provisional{Code: code, Reason: reason}
		}
	}
}

// parse18x reads the status, the Call-ID and the CSeq method of a
// response's head (start line and header lines, CRLF-ended); ok is false
// unless it is a complete 18x to an INVITE.
func parse18x(head []byte) (callID string, code int, reason string, ok bool) {
	line, rest, found := bytes.Cut(head, crlf)
	if !found || len(line) < len("SIP/2.0 180") {
		return "", 0, "", false
	}
	code, err := strconv.Atoi(string(line[8:11]))
	if err != nil || code < 180 || code > 189 {
		return "", 0, "", false
	}
	reason = string(bytes.TrimSpace(line[11:]))
	invite := false
	for len(rest) > 0 {
		line, rest, found = bytes.Cut(rest, crlf)
		if !found {
			return "", 0, "", false // a header cut off by the read
		}
		name, value, isHeader := bytes.Cut(line, []byte(":"))
		if !isHeader {
			continue
		}
		value = bytes.TrimSpace(value)
		switch n := string(bytes.ToLower(bytes.TrimSpace(name))); n {
		case "call-id", "i":
			callID = string(value)
		case "cseq":
			_, method, _ := bytes.Cut(value, []byte(" "))
			invite = bytes.EqualFold(bytes.TrimSpace(method), []byte("INVITE"))
		}
	}
	return callID, code, reason, callID != "" && invite
}
