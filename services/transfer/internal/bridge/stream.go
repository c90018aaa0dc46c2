package bridge

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

// rewriter gives one outgoing stream a fixed SSRC and continuous sequence
// numbers and timestamps. Only the forwarding loop of the other leg calls
// rewrite.
type rewriter struct {
	ssrc    uint32
	started bool
	// fresh makes the next packet start a new source (after a whisper).
	fresh    bool
	inSSRC   uint32
	seqDelta uint16
	tsDelta  uint32
	lastSeq  uint16
	lastTS   uint32
	lastAt   time.Time
}

func newRewriter() rewriter {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return rewriter{
		ssrc:    binary.BigEndian.Uint32(b[0:4]),
		lastSeq: binary.BigEndian.Uint16(b[4:6]) & 0x7fff, // room before wrap
		lastTS:  binary.BigEndian.Uint32(b[6:10]),
	}
}

// rewrite patches pkt's header in place (and h to match): SSRC, sequence
// number and timestamp mapped into the outgoing stream. A new source (its
// first packet, or a new SSRC) continues the stream one sequence number
// after the last packet sent and a timestamp advanced by the wall-clock
// time since, and gets the marker bit.
func (r *rewriter) rewrite(pkt []byte, h *rtp.Header, now time.Time, clockRate uint32) {
	if !r.started || r.fresh || h.SSRC != r.inSSRC {
		r.fresh = false
		outSeq := r.lastSeq + 1
		outTS := r.lastTS
		if r.started {
			elapsed := now.Sub(r.lastAt)
			step := uint32(elapsed.Seconds() * float64(clockRate))
			// At least one 20 ms frame: the last packet's samples run
			// from lastTS to lastTS + one frame, and the new source must
			// not overlap them.
			if frame := clockRate / 50; step < frame {
				step = frame
			}
			outTS += step
		}
		r.seqDelta = outSeq - h.SequenceNumber
		r.tsDelta = outTS - h.Timestamp
		r.inSSRC = h.SSRC
		r.started = true
		h.Marker = true
		pkt[1] |= 0x80
	}
	h.SSRC = r.ssrc
	h.SequenceNumber += r.seqDelta
	h.Timestamp += r.tsDelta
	binary.BigEndian.PutUint16(pkt[2:4], h.SequenceNumber)
	binary.BigEndian.PutUint32(pkt[4:8], h.Timestamp)
	binary.BigEndian.PutUint32(pkt[8:12], h.SSRC)
	if d := h.SequenceNumber - r.lastSeq; d != 0 && d < 0x8000 {
		r.lastSeq, r.lastTS, r.lastAt = h.SequenceNumber, h.Timestamp, now
	}
}

// receiveStats are RFC 3550 A.3/A.8 receiver statistics of one leg. The
// leg's loop writes; Stats reads under mu.
type receiveStats struct {
	mu        sync.Mutex
	packets   uint64
	bytes     uint64
	ssrc      uint32
	started   bool
	baseSeq   uint32
	maxSeq    uint32 // extended
	received  uint64 // of the current source
	lostPrior uint64 // of earlier sources
	transit   float64
	jitter    float64 // in timestamp units
	clockRate uint32
	dropped   atomic.Uint64
	forwarded atomic.Uint64
	// held counts packets not forwarded because the other leg's peer
	// holds (Leg.SetReceiving); not part of dropped.
	held atomic.Uint64
	// foreign counts packets from a source the leg would not latch to
	// (part of dropped).
	foreign atomic.Uint64
	// unauthentic and replayed are the SRTP drops (part of dropped).
	unauthentic atomic.Uint64
	replayed    atomic.Uint64
}

func (s *receiveStats) record(h *rtp.Header, size int, now time.Time, clockRate uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.packets++
	s.bytes += uint64(size)
	s.clockRate = clockRate
	seq := uint32(h.SequenceNumber)
	if !s.started || h.SSRC != s.ssrc {
		if s.started {
			s.lostPrior += s.lostLocked()
		}
		s.started, s.ssrc = true, h.SSRC
		s.baseSeq, s.maxSeq, s.received = seq, seq, 0
		s.transit, s.jitter = 0, 0
	}
	s.received++
	// Extend the sequence number across wraps, relative to the highest.
	ext := (s.maxSeq &^ 0xffff) | seq
	switch {
	case ext+0x8000 < s.maxSeq:
		ext += 0x10000
	case ext > s.maxSeq+0x8000 && ext >= 0x10000:
		ext -= 0x10000
	}
	if ext > s.maxSeq {
		s.maxSeq = ext
	}
	// Interarrival jitter: arrival in timestamp units.
	arrival := float64(now.UnixNano()) * float64(clockRate) / 1e9
	transit := arrival - float64(h.Timestamp)
	if s.received > 1 {
		d := transit - s.transit
		if d < 0 {
			d = -d
		}
		s.jitter += (d - s.jitter) / 16
	}
	s.transit = transit
}

func (s *receiveStats) lostLocked() uint64 {
	expected := uint64(s.maxSeq-s.baseSeq) + 1
	if expected > s.received {
		return expected - s.received
	}
	return 0
}

func (s *receiveStats) snapshot() *batonv1.MediaStreamStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &batonv1.MediaStreamStats{
		Packets: s.packets,
		Bytes:   s.bytes,
		Dropped: s.dropped.Load(),
	}
	if s.started {
		st.Lost = s.lostPrior + s.lostLocked()
	}
	if s.clockRate > 0 {
		st.JitterMs = s.jitter / float64(s.clockRate) * 1000
	}
	return st
}
