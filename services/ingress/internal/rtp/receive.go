package rtp

import (
	"encoding/binary"
	"math"
	"time"
)

// Stats is what a session received.
type Stats struct {
	// Packets and Bytes count every datagram (RTP header included).
	Packets, Bytes uint64
	// Lost is the number of sequence numbers never seen (RFC 3550 A.3),
	// summed over the SSRCs the far end used.
	Lost uint64
	// JitterMS is the interarrival jitter of the audio payload (RFC 3550
	// A.8) at the last packet, in milliseconds.
	JitterMS float64
	// Foreign counts datagrams dropped for coming from a source the call
	// is not latched to (or that neither its SDP nor its trunk allows).
	// They are in no other count.
	Foreign uint64
}

// DTMF is a digit received as RFC 4733 telephone-events.
type DTMF struct {
	// Digit is 0-9, *, #, A-D, or "flash".
	Digit string
	// DurationMS is the event's duration from its end packet.
	DurationMS uint32
}

// Media is what the last offer/answer says about the stream.
type Media struct {
	// Codec is PCMU or PCMA, PayloadType its payload type, ClockRate its
	// RTP clock (8000).
	Codec       string
	PayloadType int
	ClockRate   int
	// EventPayloadType is telephone-event's, -1 when not negotiated.
	EventPayloadType int
}

// digits maps RFC 4733 event codes 0-16 (3.2) to their names.
var digits = [...]string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#", "A", "B", "C", "D", "flash"}

// receiver keeps the statistics of the inbound stream and turns
// telephone-event packets into digits. It is not safe for concurrent use.
type receiver struct {
	media Media
	start time.Time // arrival clock origin

	packets, bytes uint64
	lostBefore     uint64 // lost on SSRCs the sender left

	started  bool
	ssrc     uint32
	baseSeq  uint16
	maxSeq   uint16
	cycles   uint64
	received uint64

	haveTransit bool
	transit     float64
	jitter      float64 // timestamp units

	haveEvent bool
	eventTS   uint32 // timestamp of the last event reported
}

// packet accounts one datagram that arrived at and returns the digit it
// completes, if any, and the audio payload it carries, if any (aliasing b).
func (r *receiver) packet(b []byte, at time.Time) (DTMF, bool, []byte) {
	r.packets++
	r.bytes += uint64(len(b))
	if len(b) < 12 || b[0]>>6 != 2 {
		return DTMF{}, false, nil // not RTP (STUN, garbage): counted, nothing more
	}
	pt := int(b[1] & 0x7f)
	seq := binary.BigEndian.Uint16(b[2:4])
	ts := binary.BigEndian.Uint32(b[4:8])
	ssrc := binary.BigEndian.Uint32(b[8:12])
	off := 12 + 4*int(b[0]&0x0f)
	if b[0]&0x10 != 0 { // header extension
		if len(b) < off+4 {
			return DTMF{}, false, nil
		}
		off += 4 + 4*int(binary.BigEndian.Uint16(b[off+2:off+4]))
	}
	if len(b) < off {
		return DTMF{}, false, nil
	}
	payload := b[off:]
	if b[0]&0x20 != 0 && len(payload) > 0 { // padding
		pad := int(payload[len(payload)-1])
		if pad > len(payload) {
			return DTMF{}, false, nil
		}
		payload = payload[:len(payload)-pad]
	}

	r.sequence(ssrc, seq)
	switch pt {
	case r.media.EventPayloadType:
		d, ok := r.event(payload, ts)
		return d, ok, nil
	case r.media.PayloadType:
		r.arrival(ts, at)
		return DTMF{}, false, payload
	}
	return DTMF{}, false, nil
}

// sequence follows RFC 3550 A.1 without probation: the extended highest
// sequence number and the count received.
func (r *receiver) sequence(ssrc uint32, seq uint16) {
	if !r.started || ssrc != r.ssrc {
		if r.started {
			r.lostBefore += r.lost()
		}
		r.started, r.ssrc = true, ssrc
		r.baseSeq, r.maxSeq, r.cycles, r.received = seq, seq, 0, 0
		r.haveTransit, r.jitter, r.haveEvent = false, 0, false
	} else if delta := seq - r.maxSeq; delta != 0 && delta < 0x8000 {
		if seq < r.maxSeq {
			r.cycles += 1 << 16
		}
		r.maxSeq = seq
	}
	r.received++
}

func (r *receiver) lost() uint64 {
	if !r.started {
		return 0
	}
	expected := r.cycles + uint64(r.maxSeq) - uint64(r.baseSeq) + 1
	if r.received >= expected {
		return 0 // duplicates
	}
	return expected - r.received
}

// arrival updates the interarrival jitter (RFC 3550 A.8).
func (r *receiver) arrival(ts uint32, at time.Time) {
	rate := r.media.ClockRate
	if rate <= 0 {
		rate = 8000
	}
	arrival := at.Sub(r.start).Seconds() * float64(rate)
	transit := arrival - float64(ts)
	if r.haveTransit {
		d := math.Abs(transit - r.transit)
		// Timestamps wrap at 2^32: a jump that large is a wrap, not jitter.
		if d > 1<<31 {
			d = math.Abs(d - 1<<32)
		}
		r.jitter += (d - r.jitter) / 16
	}
	r.transit, r.haveTransit = transit, true
}

// event reads an RFC 4733 payload; the end packet (sent three times)
// reports the digit once, keyed by the event's timestamp.
func (r *receiver) event(p []byte, ts uint32) (DTMF, bool) {
	if len(p) < 4 || p[1]&0x80 == 0 {
		return DTMF{}, false
	}
	if r.haveEvent && r.eventTS == ts {
		return DTMF{}, false // a retransmitted end packet
	}
	r.haveEvent, r.eventTS = true, ts
	code := int(p[0])
	if code >= len(digits) {
		return DTMF{}, false
	}
	rate := r.media.ClockRate
	if rate <= 0 {
		rate = 8000
	}
	dur := uint32(binary.BigEndian.Uint16(p[2:4])) * 1000 / uint32(rate)
	return DTMF{Digit: digits[code], DurationMS: dur}, true
}

func (r *receiver) stats() Stats {
	rate := r.media.ClockRate
	if rate <= 0 {
		rate = 8000
	}
	return Stats{
		Packets: r.packets, Bytes: r.bytes, Lost: r.lostBefore + r.lost(),
		JitterMS: r.jitter / float64(rate) * 1000,
	}
}
