// Package rtp is the thin media anchor of the agent leg: it allocates a UDP
// port from the configured range for each call and counts the packets that
// arrive on it until the call ends.
package rtp

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
)

// ErrNoPorts means every port of the range is in use.
var ErrNoPorts = errors.New("no free RTP port")

// Allocator hands out even ports of [min, max] (RTCP would take the odd
// port above), starting after the last one given out.
type Allocator struct {
	host     string
	min, max int

	mu   sync.Mutex
	next int
}

// NewAllocator returns an allocator binding on host.
func NewAllocator(host string, portMin, portMax int) *Allocator {
	first := portMin + portMin%2
	return &Allocator{host: host, min: first, max: portMax, next: first}
}

// Open binds the next free port and starts counting what arrives on it.
func (a *Allocator) Open() (*Session, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.max < a.min {
		return nil, ErrNoPorts
	}
	n := (a.max-a.min)/2 + 1
	for range n {
		port := a.next
		a.next += 2
		if a.next > a.max {
			a.next = a.min
		}
		addr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(a.host, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("rtp address %s:%d: %w", a.host, port, err)
		}
		conn, err := net.ListenUDP("udp", addr)
		if err != nil {
			continue // in use by another call or process; try the next one
		}
		s := &Session{conn: conn, port: port, done: make(chan struct{})}
		go s.read()
		return s, nil
	}
	return nil, fmt.Errorf("%w in %d-%d", ErrNoPorts, a.min, a.max)
}

// Session is one call's RTP socket.
type Session struct {
	conn    *net.UDPConn
	port    int
	packets atomic.Uint64
	bytes   atomic.Uint64
	done    chan struct{}
	once    sync.Once
}

// Port is the local port RTP is received on.
func (s *Session) Port() int { return s.port }

// Stats is what a session received.
type Stats struct {
	Packets, Bytes uint64
}

// Stats returns the counts so far.
func (s *Session) Stats() Stats {
	return Stats{Packets: s.packets.Load(), Bytes: s.bytes.Load()}
}

func (s *Session) read() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, _, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			return // closed
		}
		s.packets.Add(1)
		s.bytes.Add(uint64(n))
	}
}

// Close releases the port and waits for the reader; it is safe to call
// more than once.
func (s *Session) Close() (Stats, error) {
	var err error
	s.once.Do(func() {
		err = s.conn.Close()
	})
	<-s.done
	if err != nil {
		return s.Stats(), fmt.Errorf("close rtp port %d: %w", s.port, err)
	}
	return s.Stats(), nil
}
