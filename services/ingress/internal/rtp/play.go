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

// Play sends frames to the far end, one every 20 ms, from the session's
// port: a random SSRC, sequence and timestamp start, the marker bit on the
// first packet, the timestamp advancing 160 per packet. The payload type
// and address are those in force when each packet leaves; nothing is sent
// while the call is on hold, though the clock keeps running. Play returns
// at once; playing stops at the end of the clip, on Stop or on Close. A
// second Play replaces the first.
func (s *Session) Play(clip Clip) {
	p := &player{quit: make(chan struct{}), done: make(chan struct{})}
	s.mu.Lock()
	old := s.player
	s.player = p
	s.mu.Unlock()
	if old != nil {
		old.stop()
	}
	go p.run(s, clip)
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

func (p *player) run(s *Session, clip Clip) {
	defer close(p.done)
	ssrc := rand.Uint32()
	seq := uint16(rand.Uint32())
	ts := rand.Uint32()
	buf := make([]byte, 12, 12+FrameSamples)
	tick := time.NewTicker(frameInterval)
	defer tick.Stop()
	first := true
	for i := range clip.Frames() {
		if to, pt, codec, ok := s.target(); ok {
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
			buf = append(buf, clip.frame(codec, i)...)
			// Errors (ICMP unreachable, closed socket) end nothing: the
			// call lives on without audio.
			_, _ = s.conn.WriteToUDPAddrPort(buf, to)
		}
		seq++
		ts += FrameSamples
		select {
		case <-p.quit:
			return
		case <-tick.C:
		}
	}
}
