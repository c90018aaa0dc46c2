package server

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/services/ingress/internal/config"
	"github.com/baton-voice/baton/services/ingress/internal/sipcheck"
	"github.com/baton-voice/baton/services/ingress/internal/trunks"
)

// benchInvite is a carrier INVITE: Record-Route, X- headers, PAI, SDP.
func benchInvite() []byte {
	head := strings.Join([]string{
		"INVITE sip:+15550200@10.0.0.1:5060 SIP/2.0",
		"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-bench-1",
		"Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK-upstream",
		"Record-Route: <sip:rr1.example.com;lr>, <sip:rr2.example.com;lr>",
		"Max-Forwards: 69",
		`From: "Caller" <sip:+15550100@carrier.example.com>;tag=sbc-tag`,
		"To: <sip:+15550200@baton.example.com>",
		"Call-ID: bench-call-1@192.0.2.10",
		"CSeq: 1 INVITE",
		"Contact: <sip:sbc@192.0.2.10:5060>",
		"P-Asserted-Identity: <sip:+15550100@carrier.example.com>",
		"X-Customer-Id: C-1001",
		"X-Intent: billing",
		"X-Language: en-US",
		"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, INFO",
		"Supported: timer",
		"User-Agent: carrier-sbc/1.0",
		"Content-Type: application/sdp",
	}, "\r\n")
	return fmt.Appendf(nil, "%s\r\nContent-Length: %d\r\n\r\n%s", head, len(offer), offer)
}

// BenchmarkInvite compares what ingress does with an INVITE before it
// answers (validate, canonicalise, parse, build and encode CallStarted)
// with sipgo's parse of the same bytes. bench/ingress/run.sh prints the
// ratio.
func BenchmarkInvite(b *testing.B) {
	data := benchInvite()
	b.Run("sipgo-parse", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		p := sip.NewParser()
		for b.Loop() {
			if _, err := p.ParseSIP(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ingress", func(b *testing.B) {
		cfg := config.Default()
		table, err := trunks.New(cfg.EffectiveTrunks())
		if err != nil {
			b.Fatal(err)
		}
		trunk := table.Lookup(netip.MustParseAddr("192.0.2.10"))
		policy := sipcheck.DefaultPolicy()
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		p := sip.NewParser()
		now := time.Now()
		for b.Loop() {
			r := sipcheck.Check(data, policy)
			if !r.OK() {
				b.Fatal(r.Detail)
			}
			msg, err := p.ParseSIP(sipcheck.Canonical(data, r, true))
			if err != nil {
				b.Fatal(err)
			}
			req := msg.(*sip.Request)
			req.SetSource("192.0.2.10:5060")
			facts, err := readInvite(req, dialogParams{localTag: "t", localContact: "<sip:baton@10.0.0.1:5060>", trunk: trunk, localSDP: []byte(offer)})
			if err != nil {
				b.Fatal(err)
			}
			ev, err := events.New(Source, r.CallID, facts.started, now)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := events.Encode("baton.calls", ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}
