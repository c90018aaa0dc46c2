package agent

import "sync"

// FrameBytes is one 20 ms frame of 8 kHz G.711: what the playout hands
// the RTP player per tick, and what the caller's audio is cut into.
const FrameBytes = 160

// ulawSilence is G.711 µ-law's zero.
const ulawSilence = 0xff

// Playout is the agent's audio waiting to be played to the caller: the
// bytes of its media messages (µ-law, 8 kHz) in arrival order, re-framed
// into 20 ms, with its marks at the byte positions they were sent after.
// It holds at most max bytes: beyond that the oldest audio is dropped
// and counted, never the newest. It is safe for concurrent use: the
// stream's reader fills it, the RTP player drains it.
type Playout struct {
	max int

	mu     sync.Mutex
	buf    []byte // queued audio, buf[0] plays next
	head   int64  // bytes taken from the front since the start (played or dropped)
	marks  []mark // in position order
	waited bool   // a partial frame was held back one tick already

	stats PlayoutStats
}

// mark is a name the agent sent after its audio up to pos (an absolute
// byte position: head + len(buf) when it came).
type mark struct {
	name string
	pos  int64
}

// PlayoutStats counts a playout's frames.
type PlayoutStats struct {
	// Played are frames of agent audio handed out; Silent the ticks it
	// ran dry (silence played instead).
	Played, Silent uint64
	// Dropped are frames of audio dropped beyond the bound; Cleared
	// those a clear removed.
	Dropped, Cleared uint64
	// MaxQueued is the deepest the queue got, in bytes.
	MaxQueued int
	// Marks counts marks received.
	Marks uint64
}

// maxMarks bounds the marks queued: beyond it the oldest is reported as
// played at once (its audio is still queued, but its name is not kept).
const maxMarks = 256

// NewPlayout returns a playout holding at most limit bytes (rounded up to
// whole frames, at least one).
func NewPlayout(limit int) *Playout {
	n := max(FrameBytes, (limit+FrameBytes-1)/FrameBytes*FrameBytes)
	return &Playout{max: n}
}

// Push queues audio. Beyond the bound the oldest queued audio goes: it
// reports the whole frames dropped, and the marks whose audio was wholly
// dropped (they will never play; they are due now).
func (p *Playout) Push(audio []byte) (dropped int, due []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, audio...)
	if over := len(p.buf) - p.max; over > 0 {
		// Drop whole frames from the front, so what plays stays aligned.
		over = (over + FrameBytes - 1) / FrameBytes * FrameBytes
		over = min(over, len(p.buf))
		p.buf = p.buf[over:]
		p.head += int64(over)
		dropped = over / FrameBytes
		p.stats.Dropped += uint64(dropped)
		due = p.dueLocked()
	}
	p.stats.MaxQueued = max(p.stats.MaxQueued, len(p.buf))
	return dropped, due
}

// Mark queues a mark after the audio queued so far. With nothing queued
// it is due at the next Next.
func (p *Playout) Mark(name string) (due []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Marks++
	p.marks = append(p.marks, mark{name: name, pos: p.head + int64(len(p.buf))})
	if len(p.marks) > maxMarks {
		due = append(due, p.marks[0].name)
		p.marks = p.marks[1:]
	}
	return due
}

// Clear drops every queued byte (barge-in) and returns the marks still
// queued, which the protocol sends back at once.
func (p *Playout) Clear() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Cleared += uint64((len(p.buf) + FrameBytes - 1) / FrameBytes)
	p.head += int64(len(p.buf))
	p.buf = p.buf[:0]
	p.waited = false
	names := make([]string, len(p.marks))
	for i, m := range p.marks {
		names[i] = m.name
	}
	p.marks = p.marks[:0]
	return names
}

// Next returns the next 20 ms frame into dst (µ-law) and the marks whose
// audio that frame completes: they are due once the frame has been sent.
// With less than a frame queued it returns silence, holding a partial
// frame back one tick (more of it may be on its way) unless a mark ends
// it; then the partial frame is padded with silence. audio is false when
// the frame is silence only.
func (p *Playout) Next(dst []byte) (frame []byte, audio bool, due []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	frame = dst[:FrameBytes]
	n := 0
	switch {
	case len(p.buf) >= FrameBytes:
		n = FrameBytes
	case len(p.buf) > 0 && (p.waited || p.markAtLocked(p.head+int64(len(p.buf)))):
		n = len(p.buf)
	case len(p.buf) > 0:
		p.waited = true
	}
	copy(frame, p.buf[:n])
	for i := n; i < FrameBytes; i++ {
		frame[i] = ulawSilence
	}
	if n > 0 {
		p.buf = p.buf[n:]
		p.head += int64(n)
		p.waited = false
		p.stats.Played++
	} else {
		p.stats.Silent++
	}
	if len(p.buf) == 0 {
		p.buf = p.buf[:0:0] // let a long utterance's array go
	}
	return frame, n > 0, p.dueLocked()
}

// markAtLocked reports whether a mark sits at pos.
func (p *Playout) markAtLocked(pos int64) bool {
	for _, m := range p.marks {
		if m.pos == pos {
			return true
		}
	}
	return false
}

// dueLocked takes the marks whose audio is all out of the queue.
func (p *Playout) dueLocked() []string {
	var due []string
	for len(p.marks) > 0 && p.marks[0].pos <= p.head {
		due = append(due, p.marks[0].name)
		p.marks = p.marks[1:]
	}
	return due
}

// Queued is the audio waiting, in bytes (8 bytes a millisecond).
func (p *Playout) Queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.buf)
}

// Stats returns the counts so far.
func (p *Playout) Stats() PlayoutStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}
