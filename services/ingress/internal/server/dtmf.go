package server

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/ingress/internal/rtp"
)

// rtpDigits publishes the RFC 4733 digits of c's media session.
func (c *inboundCall) rtpDigits(ctx context.Context) func(rtp.DTMF) {
	return func(d rtp.DTMF) {
		c.env.facts.publishAsync(ctx, c.id, &batonv1.DtmfReceived{CallId: c.id, Digit: d.Digit, DurationMs: d.DurationMS, Source: "rfc4733"})
		c.agentDTMF(d.Digit)
	}
}

// Reasons an INFO body is refused.
var errDTMFBody = errors.New("dtmf body")

// parseInfoDTMF reads an INFO body: application/dtmf-relay
// ("Signal=5\r\nDuration=160") or application/dtmf ("5").
func parseInfoDTMF(contentType string, body []byte) (rtp.DTMF, error) {
	var signal, duration string
	switch strings.ToLower(contentType) {
	case "application/dtmf-relay":
		for line := range strings.SplitSeq(string(body), "\n") {
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "signal":
				signal = strings.TrimSpace(v)
			case "duration":
				duration = strings.TrimSpace(v)
			}
		}
	case "application/dtmf":
		signal = strings.TrimSpace(string(body))
	default:
		return rtp.DTMF{}, errors.Join(errDTMFBody, errors.New("content type "+contentType))
	}
	digit, ok := dtmfDigit(signal)
	if !ok {
		return rtp.DTMF{}, errors.Join(errDTMFBody, errors.New("signal "+quote(signal)))
	}
	var ms uint32
	if duration != "" {
		n, err := parseUint(duration)
		if err != nil {
			return rtp.DTMF{}, errors.Join(errDTMFBody, errors.New("duration "+quote(duration)))
		}
		ms = n
	}
	return rtp.DTMF{Digit: digit, DurationMS: ms}, nil
}

// dtmfDigit names a signal: one of 0-9 * # A-D (any case), or the RFC 4733
// codes 10-16 some relays send instead.
func dtmfDigit(s string) (string, bool) {
	if len(s) == 1 {
		ch := strings.ToUpper(s)
		if strings.ContainsAny(ch, "0123456789*#ABCD") {
			return ch, true
		}
		return "", false
	}
	switch strings.ToLower(s) {
	case "10":
		return "*", true
	case "11":
		return "#", true
	case "12", "13", "14", "15":
		return string(rune('A' + s[1] - '2')), true
	case "16", "flash":
		return "flash", true
	}
	return "", false
}

func quote(s string) string {
	if len(s) > 32 {
		s = s[:32] + "..."
	}
	return strconv.Quote(s)
}

func parseUint(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}
