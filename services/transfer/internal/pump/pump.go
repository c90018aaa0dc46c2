//go:build linux

// Package pump reads UDP sockets outside Go's network poller: a few
// threads each wait on an epoll set of their own and, for every socket
// that has datagrams, read them and hand each to the socket's handler on
// that thread. A media bridge receives 50 small packets a second on each
// of thousands of sockets; through Go's poller every packet costs a
// goroutine wake-up, a failed read and a scheduler pass, which measured
// as most of a relay's CPU. Here a packet costs one read, and one
// epoll_wait serves every socket that became ready meanwhile.
//
// Sockets are plain non-blocking file descriptors (Socket); writes go
// straight to the kernel (sendto), from any goroutine.
package pump

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxDatagram is the receive buffer: an MTU plus room for SRTP tags.
const maxDatagram = 1500

// DefaultLinger is how long a thread that just handled datagrams sleeps
// before it looks again: meanwhile more sockets become ready and one
// epoll_wait collects them all, instead of a wake-up per packet. It is
// the most a datagram waits for a busy pump (a jitter buffer holds tens
// of milliseconds).
const DefaultLinger = 500 * time.Microsecond

// maxEvents is the most sockets one pass serves.
const maxEvents = 1024

// Handler takes one datagram read from a socket, on the pump's thread:
// pkt is valid only during the call, and calls for one socket never
// overlap.
type Handler func(pkt []byte, src netip.AddrPort, now time.Time)

// Pump is a set of threads reading the sockets added to it.
type Pump struct {
	linger  time.Duration
	workers []*worker
	next    int
	mu      sync.Mutex
	wg      sync.WaitGroup
	closed  bool
}

type worker struct {
	linger time.Duration
	epfd   int
	// wake is an eventfd in the set: Close writes it.
	wake int
	mu   sync.Mutex
	// regs are the sockets by registration id (the epoll data): a
	// removed socket's id is never looked up again, even if its file
	// descriptor number is reused.
	regs   map[uint64]*registration
	nextID uint64
	closed bool
}

type registration struct {
	s *Socket
	h Handler
}

// Option configures New.
type Option func(*Pump)

// WithLinger sets the pause between a thread's passes over ready sockets
// while datagrams keep coming (DefaultLinger; 0: none, a wake-up per
// packet at low load).
func WithLinger(d time.Duration) Option { return func(p *Pump) { p.linger = max(d, 0) } }

// New starts a pump with n threads (at least 1).
func New(n int, opts ...Option) (*Pump, error) {
	p := &Pump{linger: DefaultLinger}
	for _, o := range opts {
		o(p)
	}
	for range max(n, 1) {
		w, err := newWorker()
		if err != nil {
			return nil, errors.Join(err, p.Close())
		}
		w.linger = p.linger
		p.workers = append(p.workers, w)
		p.wg.Go(w.run)
	}
	return p, nil
}

func newWorker() (*worker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("pump: epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("pump: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setID(&ev, 0) // id 0 is the wake-up
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		_ = unix.Close(wake)
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("pump: epoll add: %w", err)
	}
	return &worker{epfd: epfd, wake: wake, regs: make(map[uint64]*registration), nextID: 1}, nil
}

// ErrClosed means the pump was closed.
var ErrClosed = errors.New("pump closed")

// Add starts reading s, handing every datagram to h, until Remove.
func (p *Pump) Add(s *Socket, h Handler) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	w := p.workers[p.next%len(p.workers)]
	p.next++
	p.mu.Unlock()

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	id := w.nextID
	w.nextID++
	w.regs[id] = &registration{s: s, h: h}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setID(&ev, id)
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
		delete(w.regs, id)
		return fmt.Errorf("pump: epoll add: %w", err)
	}
	s.worker, s.id = w, id
	return nil
}

// Remove stops reading s. When it returns, s's handler is not running and
// will not be called again.
func (p *Pump) Remove(s *Socket) {
	w := s.worker
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
	delete(w.regs, s.id)
	s.worker = nil
}

// Close stops the threads; sockets still added are no longer read (their
// owners close them).
func (p *Pump) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	var one [8]byte
	one[0] = 1 // eventfd counters are host-endian; 1 in either byte order wakes
	for _, w := range p.workers {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		_, _ = unix.Write(w.wake, one[:])
	}
	p.wg.Wait()
	var err error
	for _, w := range p.workers {
		err = errors.Join(err, unix.Close(w.wake), unix.Close(w.epfd))
	}
	return err
}

// run waits for ready sockets and reads them until Close. After a pass
// that found datagrams it lingers, then looks again without blocking, so
// that under load one epoll_wait serves many sockets; when a look finds
// nothing it blocks again.
func (w *worker) run() {
	// One thread per worker, kept: its epoll_wait blocks in the kernel.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	events := make([]unix.EpollEvent, maxEvents)
	buf := make([]byte, maxDatagram)
	timeout := -1
	for {
		n, err := unix.EpollWait(w.epfd, events, timeout)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return // the epoll set is gone: nothing more to do
		}
		if !w.pass(events[:n], buf) {
			return
		}
		timeout = -1
		switch {
		case n == len(events):
			timeout = 0 // more are ready: no pause
		case n > 0 && w.linger > 0:
			ts := unix.NsecToTimespec(w.linger.Nanoseconds())
			_ = unix.Nanosleep(&ts, nil)
			timeout = 0
		}
	}
}

// pass reads one datagram from each ready socket (level-triggered: one
// with more is reported again next time, so no read is wasted on an
// empty socket). It returns false once the pump is closed.
func (w *worker) pass(events []unix.EpollEvent, buf []byte) bool {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	for i := range events {
		reg := w.regs[id(&events[i])]
		if reg == nil {
			continue // the wake-up, or removed since
		}
		m, src, err := reg.s.read(buf)
		if err != nil {
			continue // EAGAIN (another look emptied it) or a socket error
		}
		reg.h(buf[:m], src, now)
	}
	return true
}

// The 64-bit registration id lives in the event's data (Fd and Pad).
func setID(ev *unix.EpollEvent, v uint64) {
	*(*uint64)(unsafe.Pointer(&ev.Fd)) = v
}

func id(ev *unix.EpollEvent) uint64 {
	return *(*uint64)(unsafe.Pointer(&ev.Fd))
}
