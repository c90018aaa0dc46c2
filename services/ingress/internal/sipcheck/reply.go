package sipcheck

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

var tagParam = regexp.MustCompile(`(?i);\s*tag\s*=`)

// Reply renders the stateless response to the request in data (RFC 3261
// 8.2.6): status and reason from r, the request's Via, From, To (with
// toTag added when it has none), Call-ID and CSeq, then r.Extra. src is
// where the request came from; it fills rport and received (RFC 3581)
// when the top Via asks for them. It returns nil when r says to drop.
func Reply(data []byte, r Result, toTag string, src netip.AddrPort) []byte {
	if r.Drop || r.Status < 100 {
		return nil
	}
	m := parse(data)
	for _, f := range m.fields {
		switch f.key {
		case "Via", "From", "To", "Call-ID", "CSeq":
			if badByte(f.value) >= 0 {
				// Echoing it would put a bare CR, LF or NUL on the wire.
				return nil
			}
		}
	}
	var b strings.Builder
	b.Grow(512)
	b.WriteString("SIP/2.0 ")
	b.WriteString(strconv.Itoa(r.Status))
	b.WriteByte(' ')
	b.WriteString(r.Reason)
	b.WriteString("\r\n")
	firstVia := true
	for _, f := range m.fields {
		if f.key != "Via" {
			continue
		}
		for _, hop := range strings.Split(f.value, ",") {
			hop = strings.TrimSpace(hop)
			if firstVia {
				hop = withReceived(hop, src)
				firstVia = false
			}
			header(&b, "Via", hop)
		}
	}
	for _, name := range []string{"From", "To", "Call-ID", "CSeq"} {
		v, ok := m.first(name)
		if !ok {
			continue
		}
		if name == "To" && r.Status != 100 && toTag != "" && !hasTag(v) {
			v += ";tag=" + toTag
		}
		header(&b, name, v)
	}
	for _, h := range r.Extra {
		header(&b, h.Name, h.Value)
	}
	b.WriteString("Server: baton-ingress\r\nContent-Length: 0\r\n\r\n")
	return []byte(b.String())
}

func header(b *strings.Builder, name, value string) {
	b.WriteString(name)
	b.WriteString(": ")
	b.WriteString(value)
	b.WriteString("\r\n")
}

func hasTag(v string) bool {
	if gt := strings.LastIndexByte(v, '>'); gt >= 0 {
		v = v[gt:]
	}
	return tagParam.MatchString(v)
}

// withReceived adds received and fills an empty rport in a Via hop.
func withReceived(hop string, src netip.AddrPort) string {
	if !src.IsValid() {
		return hop
	}
	params := strings.Split(hop, ";")
	for i, p := range params[1:] {
		if strings.EqualFold(strings.TrimSpace(p), "rport") {
			params[i+1] = "rport=" + strconv.Itoa(int(src.Port()))
		}
	}
	out := strings.Join(params, ";")
	if !strings.Contains(strings.ToLower(out), ";received=") {
		out += ";received=" + src.Addr().String()
	}
	return out
}
