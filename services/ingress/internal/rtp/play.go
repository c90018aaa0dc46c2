package rtp

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"time"
)

// FrameSamples is the samples of one 20 ms G.711 packet at 8 kHz.
const FrameSamples = 160

// frameInterval is the packetisation time of what ingress sends.
const frameInterval = 20 * time.Millisecond

// Clip is audio ready to send: the same samples encoded as G.711 µ-law
// and A-law, a whole number of FrameSamples-byte frames each.
type Clip struct {
	PCMU, PCMA []byte
}

// Frames is the number of 20 ms packets the clip takes.
func (c Clip) Frames() int { return len(c.PCMU) / FrameSamples }

func (c Clip) frame(codec string, i int) []byte {
	src := c.PCMU
	if codec == "PCMA" {
		src = c.PCMA
	}
	return src[i*FrameSamples : (i+1)*FrameSamples]
}

// Silence is d of G.711 silence (rounded up to whole frames).
func Silence(d time.Duration) Clip {
	n := int((d + frameInterval - 1) / frameInterval)
	return Clip{PCMU: bytes.Repeat([]byte{0xff}, n*FrameSamples), PCMA: bytes.Repeat([]byte{0xd5}, n*FrameSamples)}
}

// Source feeds a player: one 20 ms frame per tick.
type Source interface {
	// Next returns the next frame in codec (PCMU or PCMA); false ends
	// playing. The frame is used before the next call.
	Next(codec string) ([]byte, bool)
	// Sent says the frame Next returned has left as RTP (or was skipped,
	// on hold); late is set when its tick came more than a frame late.
	Sent(late bool)
}

// clipSource plays a clip once.
type clipSource struct {
	clip Clip
	i    int
}

func (c *clipSource) Next(codec string) ([]byte, bool) {
	if c.i >= c.clip.Frames() {
		return nil, false
	}
	c.i++
	return c.clip.frame(codec, c.i-1), true
}

func (c *clipSource) Sent(bool) {}

// Play plays clip once; see PlayFrom.
func (s *Session) Play(clip Clip) { s.PlayFrom(&clipSource{clip: clip}) }

// PlayFrom sends src's frames to the far end, one every 20 ms, from the
// session's port: a random SSRC, sequence and timestamp start, the marker
// bit on the first packet, the timestamp advancing 160 per packet. The
// payload type and address are those in force when each packet leaves;
// nothing is sent while the call is on hold, though the clock keeps
// running. It returns at once; playing stops when src ends, on Stop or
// on Close. A second PlayFrom replaces the first. After Close it does
// nothing: the socket may already carry another call.
func (s *Session) PlayFrom(src Source) {
	p := &player{quit: make(chan struct{}), done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	old := s.player
	s.player = p
	s.mu.Unlock()
	if old != nil {
		old.stop()
	}
	go p.run(s, src)
}

// Stop ends playing, if any, and waits for it.
func (s *Session) Stop() {
	s.mu.Lock()
	p := s.player
	s.player = nil
	s.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

type player struct {
	quit chan struct{}
	done chan struct{}
	once sync.Once
}

func (p *player) stop() {
	p.once.Do(func() { close(p.quit) })
	<-p.done
}

func (p *player) run(s *Session, src Source) {
	defer close(p.done)
	ssrc := rand.Uint32()
	seq := uint16(rand.Uint32())
	ts := rand.Uint32()
	buf := make([]byte, 12, 12+FrameSamples)
	tick := time.NewTicker(frameInterval)
	defer tick.Stop()
	first := true
	due := time.Now()
	for {
		_, _, codec, _ := s.target()
		frame, ok := src.Next(codec)
		if !ok {
			return
		}
		if to, pt, _, ok := s.target(); ok {
			buf = buf[:12]
			buf[0] = 0x80
			buf[1] = pt & 0x7f
			if first {
				buf[1] |= 0x80
				first = false
			}
			binary.BigEndian.PutUint16(buf[2:4], seq)
			binary.BigEndian.PutUint32(buf[4:8], ts)
			binary.BigEndian.PutUint32(buf[8:12], ssrc)
			buf = append(buf, frame...)
			// Errors (ICMP unreachable, closed socket) end nothing: the
			// call lives on without audio.
			_, _ = s.conn.WriteToUDPAddrPort(buf, to)
		}
		src.Sent(time.Since(due) > frameInterval)
		seq++
		ts += FrameSamples
		select {
		case <-p.quit:
			return
		case <-tick.C:
		}
		due = due.Add(frameInterval)
		if now := time.Now(); now.Sub(due) > 4*frameInterval {
			due = now // the ticker dropped ticks: measure lateness from here
		}
	}
}
