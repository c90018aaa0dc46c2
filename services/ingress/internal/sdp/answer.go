// Package sdp answers an inbound SDP offer for the agent leg's media
// anchor: G.711 (PCMU preferred, PCMA accepted) plus telephone-event when
// offered, on the anchor's address and port.
package sdp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/baton-voice/baton/pkg/sipx"
)

// ErrNotAcceptable means the offer has no audio stream Baton can take; the
// INVITE gets 488.
var ErrNotAcceptable = errors.New("offer not acceptable")

// Codec is an RTP payload format.
type Codec struct {
	PayloadType int
	Name        string
	ClockRate   int
}

// Static payload types of RFC 3551 that Baton speaks.
var (
	PCMU = Codec{PayloadType: 0, Name: "PCMU", ClockRate: 8000}
	PCMA = Codec{PayloadType: 8, Name: "PCMA", ClockRate: 8000}
)

// Answer is the result of negotiating an offer.
type Answer struct {
	// SDP is the answer body.
	SDP []byte
	// Codec is the chosen audio codec.
	Codec Codec
	// TelephoneEvent is the payload type of RFC 4733 events, -1 when not offered.
	TelephoneEvent int
	// RemoteAddr is where the offer says to send RTP.
	RemoteAddr string
	// Direction is the direction of the answer (Baton's side); RemoteDirection
	// the offer's (sendrecv when it gave none).
	Direction, RemoteDirection string
	// Hold is set when the offer puts the call on hold: sendonly, inactive,
	// or a 0.0.0.0 connection address (RFC 2543 style).
	Hold bool
}

// Params say where the anchor receives media.
type Params struct {
	// Host is the c= address (the external host).
	Host string
	// Port is the local RTP port.
	Port int
	// SessionID is the o= session id.
	SessionID uint64
	// Version is the o= version; 0 means SessionID. A re-INVITE's answer
	// must carry a higher version than the previous SDP (RFC 3264 8).
	Version uint64
	// MediaHost, when set, is the c= address instead of Host (the o=
	// line keeps Host): a bridged call's media is transfer's, its session
	// still ingress's.
	MediaHost string
}

// Bridge is where a session's audio is received, and the o= version of
// the SDP that said so.
type Bridge struct {
	Host    string
	Port    int
	Version uint64
}

// ReadBridge reads the address, port and o= version of an SDP Baton sent
// (transfer's re-INVITE moving the caller to its bridge).
func ReadBridge(body []byte) (Bridge, error) {
	sessionConn, streams, err := parse(body)
	if err != nil {
		return Bridge{}, err
	}
	audio, _, _ := pickStream(streams)
	if audio < 0 {
		return Bridge{}, fmt.Errorf("%w: no audio stream with PCMU or PCMA", ErrNotAcceptable)
	}
	host := streams[audio].conn
	if host == "" {
		host = sessionConn
	}
	port, err := strconv.Atoi(streams[audio].port)
	if err != nil || port <= 0 || port > 65535 || host == "" {
		return Bridge{}, fmt.Errorf("%w: no media address in %q", ErrNotAcceptable, truncate(string(body)))
	}
	var version uint64
	for line := range strings.SplitSeq(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n") {
		if rest, ok := strings.CutPrefix(line, "o="); ok {
			if f := strings.Fields(rest); len(f) == 6 {
				version, err = strconv.ParseUint(f[2], 10, 63)
				if err != nil {
					return Bridge{}, fmt.Errorf("%w: o= version %q", ErrNotAcceptable, truncate(f[2]))
				}
			}
		}
	}
	return Bridge{Host: host, Port: port, Version: version}, nil
}

func (p Params) version() uint64 {
	if p.Version == 0 {
		return p.SessionID
	}
	return p.Version
}

type media struct {
	kind, port, proto string
	formats           []string
	rtpmap            map[string]string // payload type -> encoding/clock
	fmtp              map[string]string
	direction         string
	conn              string
}

// Negotiate answers offer. The first audio stream is accepted; every other
// media stream is rejected with port 0, as RFC 3264 6 requires.
func Negotiate(offer []byte, p Params) (Answer, error) {
	sessionConn, streams, err := parse(offer)
	if err != nil {
		return Answer{}, err
	}
	audio, chosen, tel := pickStream(streams)
	if audio < 0 {
		return Answer{}, fmt.Errorf("%w: no audio stream with PCMU or PCMA", ErrNotAcceptable)
	}

	var b strings.Builder
	writeSession(&b, p)
	dir := sipx.AnswerDirection(streams[audio].direction)
	for i, m := range streams {
		if i != audio {
			fmt.Fprintf(&b, "m=%s 0 %s %s\r\n", m.kind, m.proto, firstOr(m.formats, "0"))
			continue
		}
		events := ""
		if tel >= 0 {
			events = m.fmtp[strconv.Itoa(tel)]
		}
		writeAudio(&b, p.Port, m.proto, []Codec{chosen}, tel, events, dir)
	}
	a := Answer{SDP: []byte(b.String()), Codec: chosen, TelephoneEvent: tel, Direction: dir}
	a.RemoteAddr, a.RemoteDirection, a.Hold = remoteOf(sessionConn, streams[audio])
	return a, nil
}

// Offer is the SDP ingress offers in the 200 OK to a re-INVITE without a
// body: PCMU, PCMA and telephone-event 101, sendrecv.
func Offer(p Params) []byte {
	var b strings.Builder
	writeSession(&b, p)
	writeAudio(&b, p.Port, "RTP/AVP", []Codec{PCMU, PCMA}, OfferTelephoneEvent, "", "sendrecv")
	return []byte(b.String())
}

// OfferTelephoneEvent is the telephone-event payload type of Offer.
const OfferTelephoneEvent = 101

// ReadAnswer reads the far end's answer to Offer (in the ACK): the codec
// it chose, where it receives RTP and its direction. The Answer's SDP is
// the one offered, unchanged.
func ReadAnswer(answer, offered []byte) (Answer, error) {
	sessionConn, streams, err := parse(answer)
	if err != nil {
		return Answer{}, err
	}
	audio, chosen, tel := pickStream(streams)
	if audio < 0 {
		return Answer{}, fmt.Errorf("%w: answer has no audio stream with PCMU or PCMA", ErrNotAcceptable)
	}
	a := Answer{SDP: offered, Codec: chosen, TelephoneEvent: tel}
	a.RemoteAddr, a.RemoteDirection, a.Hold = remoteOf(sessionConn, streams[audio])
	// Baton offered sendrecv; its side is the mirror of the answer's.
	a.Direction = sipx.AnswerDirection(a.RemoteDirection)
	return a, nil
}

func remoteOf(sessionConn string, m media) (addr, dir string, hold bool) {
	conn := m.conn
	if conn == "" {
		conn = sessionConn
	}
	if conn != "" {
		addr = net.JoinHostPort(conn, m.port)
	}
	dir = m.direction
	if dir == "" {
		dir = "sendrecv"
	}
	hold = dir == "sendonly" || dir == "inactive" || conn == "0.0.0.0" || conn == "::"
	return addr, dir, hold
}

func writeSession(b *strings.Builder, p Params) {
	ipVer := "IP4"
	if ip := net.ParseIP(p.Host); ip != nil && ip.To4() == nil {
		ipVer = "IP6"
	}
	b.WriteString("v=0\r\n")
	fmt.Fprintf(b, "o=baton %d %d IN %s %s\r\n", p.SessionID, p.version(), ipVer, p.Host)
	b.WriteString("s=baton\r\n")
	conn := p.Host
	if p.MediaHost != "" {
		conn = p.MediaHost
		ipVer = "IP4"
		if ip := net.ParseIP(conn); ip != nil && ip.To4() == nil {
			ipVer = "IP6"
		}
	}
	fmt.Fprintf(b, "c=IN %s %s\r\n", ipVer, conn)
	b.WriteString("t=0 0\r\n")
}

func writeAudio(b *strings.Builder, port int, proto string, codecs []Codec, tel int, events, dir string) {
	fmts := make([]string, 0, len(codecs)+1)
	for _, c := range codecs {
		fmts = append(fmts, strconv.Itoa(c.PayloadType))
	}
	if tel >= 0 {
		fmts = append(fmts, strconv.Itoa(tel))
	}
	fmt.Fprintf(b, "m=audio %d %s %s\r\n", port, proto, strings.Join(fmts, " "))
	for _, c := range codecs {
		fmt.Fprintf(b, "a=rtpmap:%d %s/%d\r\n", c.PayloadType, c.Name, c.ClockRate)
	}
	if tel >= 0 {
		fmt.Fprintf(b, "a=rtpmap:%d telephone-event/8000\r\n", tel)
		if events == "" {
			events = "0-16"
		}
		fmt.Fprintf(b, "a=fmtp:%d %s\r\n", tel, events)
	}
	b.WriteString("a=ptime:20\r\n")
	fmt.Fprintf(b, "a=%s\r\n", dir)
}

// pickStream returns the first usable audio stream, its codec and its
// telephone-event payload type; -1 when there is none.
func pickStream(streams []media) (int, Codec, int) {
	for i, m := range streams {
		if m.kind != "audio" || m.port == "0" || !strings.HasPrefix(m.proto, "RTP/AVP") {
			continue
		}
		if c, ok := pickCodec(m); ok {
			return i, c, telephoneEvent(m)
		}
	}
	return -1, Codec{}, -1
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

// pickCodec prefers PCMU over PCMA, in static or dynamic payload types.
func pickCodec(m media) (Codec, bool) {
	for _, want := range []Codec{PCMU, PCMA} {
		for _, f := range m.formats {
			enc, hasMap := m.rtpmap[f]
			if hasMap {
				name, rate, _ := strings.Cut(enc, "/")
				rate, _, _ = strings.Cut(rate, "/")
				if strings.EqualFold(name, want.Name) && rate == "8000" {
					pt, _ := strconv.Atoi(f)
					return Codec{PayloadType: pt, Name: want.Name, ClockRate: 8000}, true
				}
				continue
			}
			if f == strconv.Itoa(want.PayloadType) {
				return want, true
			}
		}
	}
	return Codec{}, false
}

func telephoneEvent(m media) int {
	for _, f := range m.formats {
		name, rate, _ := strings.Cut(m.rtpmap[f], "/")
		if strings.EqualFold(name, "telephone-event") && strings.HasPrefix(rate, "8000") {
			pt, err := strconv.Atoi(f)
			if err == nil && pt >= 96 && pt <= 127 {
				return pt
			}
		}
	}
	return -1
}

// parse reads the parts of an SDP body the answer needs.
func parse(body []byte) (sessionConn string, streams []media, err error) {
	text := strings.ReplaceAll(string(body), "\r\n", "\n")
	if !strings.HasPrefix(text, "v=0") {
		return "", nil, fmt.Errorf("%w: body is not SDP (no v=0)", ErrNotAcceptable)
	}
	var cur *media
	sessionDir := ""
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimRight(line, "\r")
		if len(line) < 2 || line[1] != '=' {
			continue
		}
		val := line[2:]
		switch line[0] {
		case 'c':
			addr, err := connAddr(val)
			if err != nil {
				return "", nil, err
			}
			if cur == nil {
				sessionConn = addr
			} else {
				cur.conn = addr
			}
		case 'm':
			fields := strings.Fields(val)
			if len(fields) < 3 {
				return "", nil, fmt.Errorf("%w: bad m= line %q", ErrNotAcceptable, truncate(line))
			}
			streams = append(streams, media{
				kind: fields[0], port: fields[1], proto: fields[2], formats: fields[3:],
				rtpmap: map[string]string{}, fmtp: map[string]string{},
			})
			cur = &streams[len(streams)-1]
		case 'a':
			attr, rest, _ := strings.Cut(val, ":")
			if cur == nil {
				if isDirection(attr) {
					sessionDir = attr
				}
				continue
			}
			switch attr {
			case "rtpmap":
				pt, enc, _ := strings.Cut(rest, " ")
				cur.rtpmap[pt] = strings.TrimSpace(enc)
			case "fmtp":
				pt, params, _ := strings.Cut(rest, " ")
				cur.fmtp[pt] = strings.TrimSpace(params)
			case "sendrecv", "sendonly", "recvonly", "inactive":
				cur.direction = attr
			}
		}
	}
	if len(streams) == 0 {
		return "", nil, fmt.Errorf("%w: no m= line", ErrNotAcceptable)
	}
	for i := range streams {
		if streams[i].direction == "" {
			streams[i].direction = sessionDir
		}
	}
	return sessionConn, streams, nil
}

func isDirection(attr string) bool {
	return attr == "sendrecv" || attr == "sendonly" || attr == "recvonly" || attr == "inactive"
}

// connAddr returns the address of a c= value "IN IP4 192.0.2.1[/ttl]".
// An IP address of the other version than the address type says (IN IP4
// 2001:db8::1, IN IP6 192.0.2.1) makes the offer unusable: which socket
// family to send from is then a guess (RFC 4566 5.7; RFC 5118 4.8 lets the
// versions differ between c= lines, never within one).
func connAddr(v string) (string, error) {
	f := strings.Fields(v)
	if len(f) < 3 {
		return "", nil
	}
	addr, _, _ := strings.Cut(f[2], "/")
	if ip, err := netip.ParseAddr(addr); err == nil {
		if (f[1] == "IP4") != ip.Is4() || f[1] != "IP4" && f[1] != "IP6" {
			return "", fmt.Errorf("%w: c= address type %s does not match %s", ErrNotAcceptable, truncate(f[1]), truncate(addr))
		}
	}
	return addr, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
