// Package sipcheck validates a raw SIP message before anything else reads
// it. sipgo's parser is lenient (it accepts several malformed RFC 4475
// messages and keeps bare CR or LF in header values), so ingress runs
// Check on every datagram or framed stream message first: a request that
// fails gets the response RFC 3261 and RFC 4475 call for, built by Reply
// without involving sipgo; a message that cannot be answered is dropped.
//
// Check never keeps a reference to the input and never returns raw bytes of
// a rejected message in its Detail, so callers can log Detail safely.
package sipcheck

import (
	"bytes"
	"net/netip"
	"strconv"
	"strings"

	"github.com/baton-voice/baton/pkg/events"
)

// Header is a response header Reply adds (Unsupported, Accept, ...).
type Header struct {
	Name, Value string
}

// Result is what Check decided about one message.
type Result struct {
	// Status is 0 when the message may be handed on; otherwise the final
	// response code to send (400, 415, 416, 420, 505, ...).
	Status int
	// Reason is the response's reason phrase.
	Reason string
	// Detail says what was wrong, without message bytes (safe to log).
	Detail string
	// Extra are headers the response must carry.
	Extra []Header
	// Drop means no response can or may be sent (a response, an ACK, no
	// Via); the message is discarded.
	Drop bool
	// Response is set when the message is a response rather than a request.
	Response bool
	// Method is the request method as received; empty for responses.
	Method string
	// CallID and Branch (top Via) identify a message's transaction; ToTag
	// is set when the To header has a tag (an in-dialog request).
	CallID, Branch string
	ToTag          bool
	// Size is the length of the message proper: start line, headers and
	// Content-Length bytes of body. Bytes after it in a datagram are
	// discarded (RFC 3261 18.3).
	Size int
}

// OK reports whether the message may be handed on.
func (r Result) OK() bool { return r.Status == 0 && !r.Drop }

// Policy is what the receiving UAS supports.
type Policy struct {
	// Stream is set for TCP and TLS, where Content-Length is mandatory and
	// frames the message; over UDP the datagram ends it.
	Stream bool
	// Supported lists the option tags a Require may name (RFC 3261 8.2.2.3).
	Supported []string
	// BodyTypes maps a method to the Content-Types its body may have;
	// methods not listed accept any. A type outside the list gets 415.
	BodyTypes map[string][]string
	// AnswerTypes maps a method to the body type its answer carries; an
	// Accept header that excludes it gets 406 (RFC 4475 3.2.15).
	AnswerTypes map[string]string
	// MaxInviteCallID is the longest Call-ID, in bytes, an INVITE may
	// carry; a longer one gets 400. The Call-ID becomes the subject and
	// key of every event of the call, so it may not exceed what the event
	// contract carries. 0 means no limit.
	MaxInviteCallID int
}

// DefaultPolicy is ingress's: no extensions, SDP offers and answers,
// DTMF relay bodies in INFO, and no INVITE whose Call-ID is longer than
// an event's subject may be (events.MaxSubjectLen).
func DefaultPolicy() Policy {
	return Policy{
		MaxInviteCallID: events.MaxSubjectLen,
		BodyTypes: map[string][]string{
			"INVITE": {"application/sdp"},
			"ACK":    {"application/sdp"},
			"INFO":   {"application/dtmf-relay", "application/dtmf"},
		},
		AnswerTypes: map[string]string{"INVITE": "application/sdp"},
	}
}

// field is one header line, unfolded.
type field struct {
	name  string // as received, trimmed
	key   string // canon(name), computed once
	value string // unfolded, trimmed
}

// message is the raw view Check and Reply work on.
type message struct {
	start   string
	fields  []field
	headEnd int // offset of the body
	hasEnd  bool
	bad     string // first syntax problem in the header section
}

// Long names of the headers Check looks at, keyed by lowercase long or
// compact name.
var canonical = map[string]string{
	"via": "Via", "v": "Via",
	"from": "From", "f": "From",
	"to": "To", "t": "To",
	"call-id": "Call-ID", "i": "Call-ID",
	"cseq":           "CSeq",
	"max-forwards":   "Max-Forwards",
	"content-length": "Content-Length", "l": "Content-Length",
	"content-type": "Content-Type", "c": "Content-Type",
	"contact": "Contact", "m": "Contact",
	"require": "Require",
	"accept":  "Accept",
	"date":    "Date",
}

func canon(name string) string {
	if c, ok := canonical[strings.ToLower(name)]; ok {
		return c
	}
	return name
}

// parse splits data into start line, unfolded header fields and body
// offset. It records the first syntax problem instead of stopping, so a
// reply can still be built from what was readable.
func parse(data []byte) message {
	var m message
	// RFC 3261 7.5: CRLFs before the start line are ignored.
	off := 0
	for off+1 < len(data) && data[off] == '\r' && data[off+1] == '\n' {
		off += 2
	}
	head := data[off:]
	end := bytes.Index(head, []byte("\r\n\r\n"))
	if end >= 0 {
		m.hasEnd = true
		m.headEnd = off + end + 4
		head = head[:end]
	} else {
		m.headEnd = len(data)
		m.bad = "no empty line after the headers"
	}
	lines := strings.Split(string(head), "\r\n")
	m.start = lines[0]
	if i := badByte(m.start); i >= 0 && m.bad == "" {
		m.bad = "control character in the start line"
	}
	for _, line := range lines[1:] {
		if i := badByte(line); i >= 0 && m.bad == "" {
			m.bad = "control character or bare CR/LF in a header line"
		}
		if line != "" && (line[0] == ' ' || line[0] == '\t') {
			if len(m.fields) == 0 {
				if m.bad == "" {
					m.bad = "continuation line before the first header"
				}
				continue
			}
			f := &m.fields[len(m.fields)-1]
			f.value = strings.TrimSpace(f.value + " " + strings.TrimSpace(line))
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		name = strings.TrimRight(name, " \t")
		if !ok || name == "" || !isToken(name) {
			if m.bad == "" {
				m.bad = "header line without a valid name and colon"
			}
			continue
		}
		m.fields = append(m.fields, field{name: name, key: canon(name), value: strings.TrimSpace(value)})
	}
	return m
}

// badByte returns the index of a control character that is not HT and not
// escaped as a quoted-pair inside a quoted string, or -1. RFC 3261 25.1
// allows "\" followed by any octet but CR and LF only inside a
// quoted-string: elsewhere a backslash escapes nothing, so "\" and ESC in
// a URI is a raw ESC (issue 14: it reached a published number).
func badByte(s string) int {
	in := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if in && c == '\\' && i+1 < len(s) && s[i+1] != '\r' && s[i+1] != '\n' {
			i++ // the quoted-pair's octet, whatever it is
			continue
		}
		if c == '"' {
			in = !in
		}
		if c == '\t' || c >= 0x20 && c != 0x7f {
			continue
		}
		return i
	}
	return -1
}

// all returns the values of every field named name (long form).
func (m *message) all(name string) []string {
	var out []string
	for _, f := range m.fields {
		if f.key == name {
			out = append(out, f.value)
		}
	}
	return out
}

func (m *message) first(name string) (string, bool) {
	for _, f := range m.fields {
		if f.key == name {
			return f.value, true
		}
	}
	return "", false
}

// Check validates data, one whole message (a UDP datagram or a framed
// stream message).
func Check(data []byte, p Policy) Result {
	m := parse(data)
	if strings.HasPrefix(m.start, "SIP/") {
		r := checkResponse(&m, len(data))
		r.CallID, _ = m.first("Call-ID")
		if via, ok := m.first("Via"); ok {
			r.Branch = branchOf(via)
		}
		return r
	}
	r := checkRequest(&m, data, p)
	r.CallID, _ = m.first("Call-ID")
	if to, ok := m.first("To"); ok {
		r.ToTag = hasTag(to)
	}
	if via, ok := m.first("Via"); ok {
		r.Branch = branchOf(via)
	}
	if !r.OK() && !r.Drop {
		// A response needs a Via to go back along (RFC 3261 18.2.2), and
		// an ACK is never answered.
		if _, ok := m.first("Via"); !ok || r.Method == "ACK" {
			r.Drop = true
		}
	}
	return r
}

func checkResponse(m *message, n int) Result {
	r := Result{Response: true, Size: n}
	parts := strings.SplitN(m.start, " ", 3)
	if len(parts) < 2 || !strings.EqualFold(parts[0], "SIP/2.0") || len(parts[1]) != 3 {
		return drop(r, "malformed status line")
	}
	code, err := strconv.Atoi(parts[1])
	if err != nil || code < 100 || code > 699 {
		return drop(r, "status code out of range")
	}
	if m.bad != "" {
		return drop(r, m.bad)
	}
	if cseq, ok := m.first("CSeq"); !ok || !validCSeqNumber(cseq) {
		return drop(r, "missing or bad CSeq")
	}
	return r
}

// branchOf returns the branch parameter of the first hop of a Via value.
func branchOf(via string) string {
	hop, _, _ := strings.Cut(via, ",")
	for _, prm := range strings.Split(hop, ";")[1:] {
		name, value, _ := strings.Cut(prm, "=")
		if strings.EqualFold(strings.TrimSpace(name), "branch") {
			return strings.TrimSpace(value)
		}
	}
	return ""
}

func drop(r Result, why string) Result {
	r.Drop = true
	r.Detail = why
	return r
}

func reject(r Result, status int, reason, detail string, extra ...Header) Result {
	r.Status, r.Reason, r.Detail, r.Extra = status, reason, detail, extra
	return r
}

const maxCSeq = 1<<31 - 1 // RFC 3261 8.1.1.5

func checkRequest(m *message, data []byte, p Policy) Result {
	var r Result
	parts := strings.Split(m.start, " ")
	if len(parts) > 0 {
		r.Method = parts[0]
	}
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return reject(r, 400, "Bad Request", "malformed request line")
	}
	method, uri, version := parts[0], parts[1], parts[2]
	if !isToken(method) {
		return reject(r, 400, "Bad Request", "method is not a token")
	}
	if !validVersion(version) {
		return reject(r, 400, "Bad Request", "malformed SIP version")
	}
	if !strings.EqualFold(version, "SIP/2.0") {
		return reject(r, 505, "Version Not Supported", "SIP version is not 2.0")
	}
	if m.bad != "" {
		return reject(r, 400, "Bad Request", m.bad)
	}
	if res, bad := checkRequestURI(r, uri); bad {
		return res
	}

	for _, name := range []string{"Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards"} {
		if _, ok := m.first(name); !ok {
			return reject(r, 400, "Missing "+name, "missing "+name)
		}
	}
	for _, name := range []string{"From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type"} {
		if len(m.all(name)) > 1 {
			return reject(r, 400, "Multiple "+name, "more than one "+name)
		}
	}

	cseq, _ := m.first("CSeq")
	num, cseqMethod, ok := splitCSeq(cseq)
	if !ok || num > maxCSeq {
		return reject(r, 400, "Bad CSeq", "malformed CSeq")
	}
	if cseqMethod != method {
		return reject(r, 400, "CSeq Method Mismatch", "CSeq method differs from the request method")
	}
	mf, _ := m.first("Max-Forwards")
	if n, err := strconv.Atoi(mf); err != nil || !allDigits(mf) || n > 255 {
		return reject(r, 400, "Bad Max-Forwards", "Max-Forwards is not 0-255")
	}
	callID, _ := m.first("Call-ID")
	if callID == "" || strings.ContainsAny(callID, " \t") {
		return reject(r, 400, "Bad Call-ID", "malformed Call-ID")
	}
	if method == "INVITE" && p.MaxInviteCallID > 0 && len(callID) > p.MaxInviteCallID {
		// Every consumer would reject the call's events: refuse it before
		// any state exists rather than answer a call nobody can see.
		return reject(r, 400, "Call-ID Too Long",
			"Call-ID is "+strconv.Itoa(len(callID))+" bytes, longer than the "+strconv.Itoa(p.MaxInviteCallID)+" an event subject carries")
	}

	// Body framing (RFC 3261 18.3 and 20.14).
	bodyLen := len(data) - m.headEnd
	if cl, ok := m.first("Content-Length"); ok {
		n, err := strconv.Atoi(cl)
		if err != nil || !allDigits(cl) || n < 0 {
			return reject(r, 400, "Bad Content-Length", "Content-Length is not a non-negative integer")
		}
		if n > bodyLen {
			return reject(r, 400, "Bad Content-Length", "Content-Length larger than the message")
		}
		bodyLen = n
	} else if p.Stream {
		bodyLen = 0
	}
	r.Size = m.headEnd + bodyLen

	for _, v := range m.all("Via") {
		if why := checkVia(v); why != "" {
			return reject(r, 400, "Bad Via", why)
		}
	}
	for _, name := range []string{"From", "To"} {
		v, _ := m.first(name)
		if why := checkAddress(v); why != "" {
			return reject(r, 400, "Bad "+name, why)
		}
	}
	for _, v := range m.all("Contact") {
		if v == "*" {
			continue
		}
		for _, c := range splitList(v) {
			if why := checkAddress(c); why != "" {
				return reject(r, 400, "Bad Contact", why)
			}
		}
	}
	if d, ok := m.first("Date"); ok && !validDate(d) {
		return reject(r, 400, "Bad Date", "Date is not an RFC 1123 date in GMT")
	}

	if method != "ACK" && method != "CANCEL" {
		var unsupported []string
		for _, v := range m.all("Require") {
			for _, tag := range splitList(v) {
				if !containsFold(p.Supported, tag) {
					unsupported = append(unsupported, tag)
				}
			}
		}
		if len(unsupported) > 0 {
			return reject(r, 420, "Bad Extension", "Require names an unsupported extension",
				Header{"Unsupported", strings.Join(unsupported, ", ")})
		}
	}

	ct, hasCT := m.first("Content-Type")
	if bodyLen > 0 && !hasCT {
		return reject(r, 400, "Missing Content-Type", "body without Content-Type")
	}
	if allowed, ok := p.BodyTypes[method]; ok && bodyLen > 0 && !containsFold(allowed, mediaType(ct)) {
		return reject(r, 415, "Unsupported Media Type", "body type not supported",
			Header{"Accept", strings.Join(allowed, ", ")})
	}
	if want, ok := p.AnswerTypes[method]; ok {
		if accept, has := m.first("Accept"); has && accept != "" && !accepts(accept, want) {
			return reject(r, 406, "Not Acceptable", "Accept excludes "+want, Header{"Accept", want})
		}
	}
	return r
}

func checkRequestURI(r Result, uri string) (Result, bool) {
	if strings.ContainsAny(uri, "<>\"") {
		return reject(r, 400, "Bad Request-URI", "Request-URI contains <, > or a quote"), true
	}
	scheme, rest, ok := strings.Cut(uri, ":")
	if !ok || !validScheme(scheme) || rest == "" {
		return reject(r, 400, "Bad Request-URI", "Request-URI has no scheme"), true
	}
	switch strings.ToLower(scheme) {
	case "sip", "sips":
		host := rest
		if _, after, found := strings.Cut(rest, "@"); found {
			host = after
		}
		if strings.Contains(host, "?") {
			// RFC 3261 19.1.1: headers are not allowed in a Request-URI.
			return reject(r, 400, "Bad Request-URI", "Request-URI carries URI headers"), true
		}
		if host == "" || host[0] == ';' || host[0] == ':' {
			return reject(r, 400, "Bad Request-URI", "Request-URI has no host"), true
		}
		if why := checkSIPHost(rest); why != "" {
			return reject(r, 400, "Bad Request-URI", "Request-URI "+why), true
		}
	case "tel":
	default:
		return reject(r, 416, "Unsupported URI Scheme", "Request-URI scheme not supported"), true
	}
	return r, false
}

// checkVia validates a Via value: one or more via-parms separated by commas.
func checkVia(v string) string {
	for _, hop := range strings.Split(v, ",") {
		hop = strings.TrimSpace(hop)
		// sent-protocol: name / version / transport, LWS allowed around "/".
		proto, rest := hop, ""
		// The sent-by starts after the transport token that follows the
		// second slash.
		first := strings.IndexByte(proto, '/')
		if first < 0 {
			return "Via without a sent-protocol"
		}
		second := strings.IndexByte(proto[first+1:], '/')
		if second < 0 {
			return "Via without a transport"
		}
		second += first + 1
		tail := strings.TrimLeft(proto[second+1:], " \t")
		transportEnd := strings.IndexAny(tail, " \t")
		if transportEnd < 0 {
			return "Via without a sent-by"
		}
		name := strings.TrimSpace(proto[:first])
		version := strings.TrimSpace(proto[first+1 : second])
		transport := tail[:transportEnd]
		rest = strings.TrimSpace(tail[transportEnd:])
		if !strings.EqualFold(name, "SIP") || version != "2.0" || !isToken(transport) {
			return "Via sent-protocol is not SIP/2.0/transport"
		}
		sentBy, params, _ := strings.Cut(rest, ";")
		sentBy = strings.TrimSpace(sentBy)
		if sentBy == "" || strings.ContainsAny(sentBy, " \t<>\"") {
			return "Via sent-by is malformed"
		}
		if why := checkHostPort(sentBy); why != "" {
			return "Via sent-by " + why
		}
		if params == "" && strings.Contains(rest, ";") {
			return "Via has an empty parameter"
		}
		if strings.Contains(rest, ";") {
			for _, prm := range strings.Split(params, ";") {
				name, value, hasValue := strings.Cut(prm, "=")
				name, value = strings.TrimSpace(name), strings.TrimSpace(value)
				if name == "" || !isToken(name) || hasValue && value == "" {
					return "Via has a malformed parameter"
				}
				if strings.EqualFold(name, "branch") && value == "z9hG4bK" {
					return "Via branch is only the magic cookie"
				}
			}
		}
	}
	return ""
}

// checkSIPHost validates the hostport of a sip or sips URI given without
// its scheme ("user@host:port;params?headers"): an IPv6 address must be a
// bracketed reference (RFC 3261 25.1, RFC 5118 4.2), whose port, if any,
// follows the "]" (RFC 5118 4.3, 4.4).
func checkSIPHost(rest string) string {
	// URI headers follow the first "?", which an IPv6 reference never
	// holds; the host follows the last "@" of what is left, whose
	// parameters start at the first ";" after it.
	rest, _, _ = strings.Cut(rest, "?")
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		rest = rest[at+1:]
	}
	hostport, _, _ := strings.Cut(rest, ";")
	return checkHostPort(hostport)
}

// checkHostPort validates host[:port] where host is a name, an IPv4
// address or a bracketed IPv6 reference.
func checkHostPort(hp string) string {
	if hp == "" {
		return "has no host"
	}
	port := ""
	if hp[0] == '[' {
		end := strings.IndexByte(hp, ']')
		if end < 0 {
			return "has an IPv6 reference without ]"
		}
		if !validIPv6Reference(hp[1:end]) {
			return "has a malformed IPv6 reference"
		}
		rest := hp[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return "has text after an IPv6 reference"
			}
			port = rest[1:]
			if port == "" {
				return "has an empty port"
			}
		}
	} else {
		if strings.Count(hp, ":") > 1 {
			return "has an IPv6 address without [] (RFC 3261 25.1)"
		}
		if strings.ContainsAny(hp, "[]") {
			return "has a stray [ or ]"
		}
		host, p, hasPort := strings.Cut(hp, ":")
		if host == "" {
			return "has no host"
		}
		if hasPort {
			if p == "" {
				return "has an empty port"
			}
			port = p
		}
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || !allDigits(port) || n > 65535 {
			return "has a malformed port"
		}
	}
	return ""
}

// validIPv6Reference accepts an IPv6 address as RFC 5954 writes it (no
// zone), and, as RFC 5118 4.10 asks of a robust parser, the one form RFC
// 3261's original ABNF also derives: hex groups, three colons, then an
// IPv4 address (2001:db8:::192.0.2.1 for 2001:db8::192.0.2.1).
func validIPv6Reference(s string) bool {
	if strings.Contains(s, "%") {
		return false
	}
	if i := strings.Index(s, ":::"); i >= 0 {
		tail := s[i+3:]
		v4, err := netip.ParseAddr(tail)
		if i == 0 || strings.Count(s, ":::") != 1 || err != nil || !v4.Is4() || strings.Contains(s[:i], "::") {
			return false
		}
		s = s[:i] + "::" + tail
	}
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is6()
}

// checkAddress validates a name-addr or addr-spec with parameters (From,
// To, one Contact).
func checkAddress(v string) string {
	v = strings.TrimSpace(v)
	if v == "" {
		return "empty address"
	}
	var uri, params string
	if lt := indexUnquoted(v, '<'); lt >= 0 {
		display := strings.TrimSpace(v[:lt])
		if why := checkDisplayName(display); why != "" {
			return why
		}
		gt := strings.IndexByte(v[lt:], '>')
		if gt < 0 {
			return "address without closing >"
		}
		uri = v[lt+1 : lt+gt]
		if uri != strings.TrimSpace(uri) || strings.ContainsAny(uri, " \t<") {
			return "whitespace inside <>"
		}
		params = strings.TrimSpace(v[lt+gt+1:])
		if params != "" && params[0] != ';' {
			return "text after the address"
		}
	} else {
		if strings.Count(v, `"`)%2 == 1 || strings.Contains(v, `"`) {
			return "unbalanced or misplaced quotes"
		}
		u, rest, _ := strings.Cut(v, ";")
		uri = strings.TrimSpace(u)
		params = ";" + rest
		if rest == "" {
			params = ""
		}
		if strings.ContainsAny(uri, " \t?,") {
			// RFC 3261 20: a URI with a comma, question mark or semicolon
			// must be enclosed in angle brackets.
			return "addr-spec with space, ? or , outside <>"
		}
	}
	scheme, rest, ok := strings.Cut(uri, ":")
	if !ok || !validScheme(scheme) || rest == "" {
		return "address URI has no scheme"
	}
	if s := strings.ToLower(scheme); s == "sip" || s == "sips" {
		if why := checkSIPHost(rest); why != "" {
			return "address URI " + why
		}
	}
	if params != "" {
		if why := checkParams(params); why != "" {
			return why
		}
	}
	return ""
}

// checkDisplayName accepts *(token LWS) or one quoted-string.
func checkDisplayName(d string) string {
	if d == "" {
		return ""
	}
	if d[0] == '"' {
		end := closingQuote(d)
		if end < 0 {
			return "unterminated quoted display name"
		}
		if strings.TrimSpace(d[end+1:]) != "" {
			return "text after the quoted display name"
		}
		return ""
	}
	for _, w := range strings.Fields(d) {
		if !isToken(w) {
			return "display name is neither tokens nor a quoted string"
		}
	}
	return ""
}

// closingQuote returns the index of the quote ending the quoted-string
// that starts at s[0], or -1.
func closingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// checkParams validates ";name[=value]" repeated, values token or quoted.
func checkParams(s string) string {
	for s != "" {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			break
		}
		if s[0] != ';' {
			return "malformed header parameters"
		}
		s = strings.TrimLeft(s[1:], " \t")
		i := 0
		for i < len(s) && isTokenChar(s[i]) {
			i++
		}
		if i == 0 {
			return "empty header parameter"
		}
		s = strings.TrimLeft(s[i:], " \t")
		if s == "" || s[0] == ';' {
			continue
		}
		if s[0] != '=' {
			return "malformed header parameter"
		}
		s = strings.TrimLeft(s[1:], " \t")
		if s != "" && s[0] == '"' {
			end := closingQuote(s)
			if end < 0 {
				return "unterminated quoted parameter value"
			}
			s = s[end+1:]
			continue
		}
		j := 0
		for j < len(s) && (isTokenChar(s[j]) || s[j] == ':' || s[j] == '[' || s[j] == ']') {
			j++
		}
		if j == 0 {
			return "empty header parameter value"
		}
		s = s[j:]
	}
	return ""
}

func indexUnquoted(s string, c byte) int {
	in := false
	for i := 0; i < len(s); i++ {
		switch {
		case in && s[i] == '\\':
			i++
		case s[i] == '"':
			in = !in
		case !in && s[i] == c:
			return i
		}
	}
	return -1
}

// splitList splits a comma-separated header value outside quotes and <>.
func splitList(v string) []string {
	var out []string
	depth, in, start := 0, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case in && c == '\\':
			i++
		case c == '"':
			in = !in
		case !in && c == '<':
			depth++
		case !in && c == '>':
			depth--
		case !in && depth == 0 && c == ',':
			out = append(out, strings.TrimSpace(v[start:i]))
			start = i + 1
		}
	}
	if last := strings.TrimSpace(v[start:]); last != "" || len(out) > 0 {
		out = append(out, last)
	}
	return out
}

func splitCSeq(v string) (uint64, string, bool) {
	f := strings.Fields(v)
	if len(f) != 2 || !allDigits(f[0]) || len(f[0]) > 10 {
		return 0, "", false
	}
	n, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return 0, "", false
	}
	return n, f[1], true
}

func validCSeqNumber(v string) bool {
	n, _, ok := splitCSeq(v)
	return ok && n <= maxCSeq
}

func validVersion(v string) bool {
	rest, ok := cutPrefixFold(v, "SIP/")
	if !ok {
		return false
	}
	major, minor, ok := strings.Cut(rest, ".")
	return ok && allDigits(major) && allDigits(minor)
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

func validScheme(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlpha(c) && !isDigit(c) && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// validDate accepts the rfc1123-date of RFC 3261 25.1, which is always GMT.
func validDate(d string) bool {
	f := strings.Fields(d)
	if len(f) != 6 || f[5] != "GMT" || !strings.HasSuffix(f[0], ",") {
		return false
	}
	days := "Mon,Tue,Wed,Thu,Fri,Sat,Sun,"
	months := "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec"
	return strings.Contains(days, f[0]) && len(f[0]) == 4 &&
		len(f[1]) == 2 && allDigits(f[1]) &&
		len(f[2]) == 3 && strings.Contains(months, f[2]) &&
		len(f[3]) == 4 && allDigits(f[3]) &&
		len(f[4]) == 8 && f[4][2] == ':' && f[4][5] == ':'
}

func mediaType(v string) string {
	t, _, _ := strings.Cut(v, ";")
	return strings.ToLower(strings.TrimSpace(t))
}

// accepts reports whether an Accept value admits typ (with wildcards).
func accepts(accept, typ string) bool {
	major, _, _ := strings.Cut(typ, "/")
	for _, a := range splitList(accept) {
		switch mt := mediaType(a); mt {
		case typ, "*/*", major + "/*":
			return true
		}
	}
	return false
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// isTokenChar is RFC 3261 token: alphanum / "-" / "." / "!" / "%" / "*" /
// "_" / "+" / "`" / "'" / "~".
func isTokenChar(c byte) bool {
	return isAlpha(c) || isDigit(c) || strings.IndexByte("-.!%*_+`'~", c) >= 0
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}
