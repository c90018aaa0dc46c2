// Package sdp is the little of SDP (RFC 4566, offer/answer RFC 3264) the
// warm transfer needs: one audio stream, its address, payload formats,
// direction and SDES keys (RFC 4568 a=crypto). It parses leniently and
// builds strictly.
package sdp

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrSDP means a session description is unusable.
var ErrSDP = errors.New("unusable SDP")

// Format is one payload format of the audio stream.
type Format struct {
	PT        uint8
	Name      string // e.g. PCMU, telephone-event
	ClockRate uint32
	Fmtp      string
}

// Crypto is one a=crypto attribute (SDES).
type Crypto struct {
	Tag   int
	Suite string // AES_CM_128_HMAC_SHA1_80 or AEAD_AES_128_GCM
	// Key is the master key followed by the master salt.
	Key []byte
}

// Session is an audio session description.
type Session struct {
	// Origin is the o= line value (without "o=").
	Origin string
	// Addr is the stream's connection address and port.
	Addr netip.AddrPort
	// Proto is RTP/AVP or RTP/SAVP.
	Proto     string
	Formats   []Format
	Direction string // sendrecv (default), sendonly, recvonly, inactive
	Crypto    []Crypto
	// RTCP is the stream's RTCP address from a=rtcp (RFC 3605); zero when
	// absent (then it is the RTP port + 1).
	RTCP netip.AddrPort
}

// Suites Baton offers, with their key and salt lengths.
var suites = map[string][2]int{
	"AES_CM_128_HMAC_SHA1_80": {16, 14},
	"AEAD_AES_128_GCM":        {16, 12},
}

// KeyLen returns the master key and salt lengths of a suite.
func KeyLen(suite string) (key, salt int, ok bool) {
	l, ok := suites[suite]
	return l[0], l[1], ok
}

// NewCrypto returns a crypto attribute with a fresh random key.
func NewCrypto(tag int, suite string) (Crypto, error) {
	k, s, ok := KeyLen(suite)
	if !ok {
		return Crypto{}, fmt.Errorf("%w: crypto suite %q not supported", ErrSDP, suite)
	}
	key := make([]byte, k+s)
	if _, err := rand.Read(key); err != nil {
		return Crypto{}, fmt.Errorf("srtp key: %w", err)
	}
	return Crypto{Tag: tag, Suite: suite, Key: key}, nil
}

// Static payload types that need no rtpmap (RFC 3551).
var static = map[uint8]Format{
	0: {PT: 0, Name: "PCMU", ClockRate: 8000},
	8: {PT: 8, Name: "PCMA", ClockRate: 8000},
	9: {PT: 9, Name: "G722", ClockRate: 8000},
}

// Parse reads the first audio stream of body.
func Parse(body string) (Session, error) {
	var s Session
	var sessionAddr, mediaAddr netip.Addr
	var port int
	var pts []uint8
	maps := map[uint8]Format{}
	fmtps := map[uint8]string{}
	inAudio, seenAudio := false, false
	var rtcpLine string
	s.Direction = "sendrecv"
	for _, line := range strings.Split(strings.ReplaceAll(body, "\r\n", "\n"), "\n") {
		line = strings.TrimSpace(line)
		if len(line) < 2 || line[1] != '=' {
			continue
		}
		k, v := line[0], line[2:]
		switch {
		case k == 'o':
			s.Origin = v
		case k == 'm':
			if seenAudio {
				inAudio = false
				continue
			}
			f := strings.Fields(v)
			if len(f) < 4 || f[0] != "audio" {
				inAudio = false
				continue
			}
			inAudio, seenAudio = true, true
			p, err := strconv.Atoi(f[1])
			if err != nil || p < 0 || p > 65535 {
				return Session{}, fmt.Errorf("%w: m= port %q", ErrSDP, f[1])
			}
			port = p
			s.Proto = f[2]
			for _, x := range f[3:] {
				n, err := strconv.Atoi(x)
				if err != nil || n < 0 || n > 127 {
					return Session{}, fmt.Errorf("%w: payload type %q", ErrSDP, x)
				}
				pts = append(pts, uint8(n))
			}
		case k == 'c':
			f := strings.Fields(v)
			if len(f) < 3 {
				return Session{}, fmt.Errorf("%w: c=%s", ErrSDP, v)
			}
			a, err := netip.ParseAddr(strings.Split(f[2], "/")[0])
			if err != nil {
				return Session{}, fmt.Errorf("%w: c= address %q", ErrSDP, f[2])
			}
			if inAudio {
				mediaAddr = a
			} else if !seenAudio {
				sessionAddr = a
			}
		case k == 'a' && (inAudio || !seenAudio):
			name, val, _ := strings.Cut(v, ":")
			switch name {
			case "sendrecv", "sendonly", "recvonly", "inactive":
				s.Direction = name
			case "rtpmap":
				ptStr, enc, _ := strings.Cut(val, " ")
				pt, err := strconv.Atoi(ptStr)
				if err != nil || pt < 0 || pt > 127 {
					continue
				}
				parts := strings.Split(enc, "/")
				f := Format{PT: uint8(pt), Name: parts[0]}
				if len(parts) > 1 {
					if r, err := strconv.Atoi(parts[1]); err == nil {
						f.ClockRate = uint32(r)
					}
				}
				maps[uint8(pt)] = f
			case "fmtp":
				ptStr, p, _ := strings.Cut(val, " ")
				if pt, err := strconv.Atoi(ptStr); err == nil && pt >= 0 && pt <= 127 {
					fmtps[uint8(pt)] = p
				}
			case "crypto":
				if c, err := parseCrypto(val); err == nil {
					s.Crypto = append(s.Crypto, c)
				}
			case "rtcp":
				rtcpLine = val
			}
		}
	}
	if !seenAudio {
		return Session{}, fmt.Errorf("%w: no audio stream", ErrSDP)
	}
	addr := mediaAddr
	if !addr.IsValid() {
		addr = sessionAddr
	}
	if !addr.IsValid() {
		return Session{}, fmt.Errorf("%w: no connection address", ErrSDP)
	}
	s.Addr = netip.AddrPortFrom(addr, uint16(port))
	if f := strings.Fields(rtcpLine); len(f) > 0 {
		if p, err := strconv.Atoi(f[0]); err == nil && p > 0 && p <= 65535 {
			a := addr
			if len(f) >= 4 {
				if x, err := netip.ParseAddr(f[3]); err == nil {
					a = x
				}
			}
			s.RTCP = netip.AddrPortFrom(a, uint16(p))
		}
	}
	for _, pt := range pts {
		f, ok := maps[pt]
		if !ok {
			f, ok = static[pt]
		}
		if !ok {
			f = Format{PT: pt}
		}
		f.Fmtp = fmtps[pt]
		s.Formats = append(s.Formats, f)
	}
	return s, nil
}

// parseCrypto reads "1 AES_CM_128_HMAC_SHA1_80 inline:KEY|2^20|1:32".
func parseCrypto(v string) (Crypto, error) {
	f := strings.Fields(v)
	if len(f) < 3 {
		return Crypto{}, fmt.Errorf("%w: crypto %q", ErrSDP, v)
	}
	tag, err := strconv.Atoi(f[0])
	if err != nil {
		return Crypto{}, fmt.Errorf("%w: crypto tag %q", ErrSDP, f[0])
	}
	method, params, ok := strings.Cut(f[2], ":")
	if !ok || method != "inline" {
		return Crypto{}, fmt.Errorf("%w: crypto key params %q", ErrSDP, f[2])
	}
	keyB64, _, _ := strings.Cut(params, "|")
	key, err := base64.StdEncoding.DecodeString(keyB64)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(keyB64)
	}
	if err != nil {
		return Crypto{}, fmt.Errorf("%w: crypto key: %w", ErrSDP, err)
	}
	c := Crypto{Tag: tag, Suite: f[1], Key: key}
	if k, s, ok := KeyLen(c.Suite); ok && len(key) != k+s {
		return Crypto{}, fmt.Errorf("%w: crypto %s key is %d bytes, want %d", ErrSDP, c.Suite, len(key), k+s)
	}
	return c, nil
}

// String renders s (RFC 4566 order). Origin must be set.
func (s Session) String() string {
	var b strings.Builder
	ip := "IP4"
	if s.Addr.Addr().Is6() {
		ip = "IP6"
	}
	addr := s.Addr.Addr().String()
	b.WriteString("v=0\r\n")
	b.WriteString("o=" + s.Origin + "\r\n")
	b.WriteString("s=baton\r\n")
	b.WriteString("c=IN " + ip + " " + addr + "\r\n")
	b.WriteString("t=0 0\r\n")
	proto := s.Proto
	if proto == "" {
		proto = "RTP/AVP"
	}
	b.WriteString("m=audio " + strconv.Itoa(int(s.Addr.Port())) + " " + proto)
	for _, f := range s.Formats {
		b.WriteString(" " + strconv.Itoa(int(f.PT)))
	}
	b.WriteString("\r\n")
	for _, f := range s.Formats {
		if f.Name != "" {
			fmt.Fprintf(&b, "a=rtpmap:%d %s/%d\r\n", f.PT, f.Name, f.ClockRate)
		}
		if f.Fmtp != "" {
			fmt.Fprintf(&b, "a=fmtp:%d %s\r\n", f.PT, f.Fmtp)
		}
	}
	for _, c := range s.Crypto {
		fmt.Fprintf(&b, "a=crypto:%d %s inline:%s\r\n", c.Tag, c.Suite, base64.StdEncoding.EncodeToString(c.Key))
	}
	b.WriteString("a=ptime:20\r\n")
	dir := s.Direction
	if dir == "" {
		dir = "sendrecv"
	}
	b.WriteString("a=" + dir + "\r\n")
	return b.String()
}

// NextOrigin continues an o= line for a new offer in the same session
// (RFC 3264 8: same username and session id, version + 1), or makes a new
// one when prev is empty or unreadable.
func NextOrigin(prev string, host netip.Addr) string {
	f := strings.Fields(prev)
	if len(f) == 6 {
		if v, err := strconv.ParseUint(f[2], 10, 63); err == nil {
			f[2] = strconv.FormatUint(v+1, 10)
			return strings.Join(f, " ")
		}
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	id := uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
	ip := "IP4"
	if host.Is6() {
		ip = "IP6"
	}
	return fmt.Sprintf("baton %d %d IN %s %s", id, id, ip, host)
}

// Audio returns the first format that is not telephone-event or comfort
// noise: the codec the stream carries.
func (s Session) Audio() (Format, bool) {
	for _, f := range s.Formats {
		switch strings.ToLower(f.Name) {
		case "telephone-event", "cn":
			continue
		}
		return f, true
	}
	return Format{}, false
}

// Find returns the format with the same name and clock rate as f.
func (s Session) Find(f Format) (Format, bool) {
	for _, g := range s.Formats {
		if strings.EqualFold(g.Name, f.Name) && (g.ClockRate == f.ClockRate || g.ClockRate == 0 || f.ClockRate == 0) {
			return g, true
		}
	}
	return Format{}, false
}
