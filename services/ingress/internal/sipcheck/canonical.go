package sipcheck

import (
	"strconv"
	"strings"
)

// structured are the headers Canonical compacts: sipgo reads their
// parameters only without the linear whitespace RFC 3261 allows around
// ";" and "=" (RFC 4475 3.1.1.1).
var structured = map[string]bool{
	"Via": true, "From": true, "To": true, "Contact": true, "CSeq": true,
	"Max-Forwards": true, "Content-Length": true, "Content-Type": true, "Call-ID": true,
	"Route": true, "Record-Route": true,
}

// Canonical returns the first r.Size bytes of a message Check accepted,
// rewritten so sipgo reads it as RFC 3261 means it: header lines
// unfolded, Content-Length exact (the UDP datagram may omit it), whitespace in structured headers compacted, and, when
// forceRport is set, an rport parameter on the top Via so responses go
// back to the source address and port (RFC 3581; what an edge behind or
// in front of NAT needs). Other header values keep their text.
func Canonical(data []byte, r Result, forceRport bool) []byte {
	m := parse(data[:r.Size])
	var b strings.Builder
	b.Grow(r.Size + 16)
	b.WriteString(m.start)
	b.WriteString("\r\n")
	firstVia := true
	for _, f := range m.fields {
		name := f.key
		if name == "Content-Length" {
			continue // written last, from what the body is
		}
		v := f.value
		if structured[name] {
			v = compact(v)
		}
		if name == "Via" && firstVia {
			firstVia = false
			if forceRport {
				v = withRport(v)
			}
		}
		b.WriteString(f.name)
		b.WriteString(": ")
		b.WriteString(v)
		b.WriteString("\r\n")
	}
	b.WriteString("Content-Length: ")
	b.WriteString(strconv.Itoa(r.Size - m.headEnd))
	b.WriteString("\r\n\r\n")
	b.Write(data[m.headEnd:r.Size])
	return []byte(b.String())
}

// compact removes whitespace around ; = / , and collapses other runs of
// whitespace to one space, outside quoted strings.
func compact(v string) string {
	var b strings.Builder
	b.Grow(len(v))
	in := false
	pendingSpace := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case in:
			b.WriteByte(c)
			if c == '\\' && i+1 < len(v) {
				i++
				b.WriteByte(v[i])
			} else if c == '"' {
				in = false
			}
			continue
		case c == ' ' || c == '\t':
			pendingSpace = true
			continue
		case c == ';' || c == '=' || c == '/' || c == ',':
			pendingSpace = false
			b.WriteByte(c)
			for i+1 < len(v) && (v[i+1] == ' ' || v[i+1] == '\t') {
				i++
			}
			continue
		}
		if pendingSpace && b.Len() > 0 {
			b.WriteByte(' ')
		}
		pendingSpace = false
		if c == '"' {
			in = true
		}
		b.WriteByte(c)
	}
	return b.String()
}

// withRport adds rport to the first hop of a compacted Via value.
func withRport(v string) string {
	end := len(v)
	if i := indexUnquoted(v, ','); i >= 0 {
		end = i
	}
	hop := v[:end]
	for _, p := range strings.Split(hop, ";")[1:] {
		name, _, _ := strings.Cut(p, "=")
		if strings.EqualFold(name, "rport") {
			return v
		}
	}
	return hop + ";rport" + v[end:]
}
