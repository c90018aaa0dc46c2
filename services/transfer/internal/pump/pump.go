//go:build linux

// Package pump reads many UDP sockets with few wake-ups. Each worker
// owns an epoll set of the sockets given to it; the set itself sits in
// Go's poller, so a worker parks like any goroutine and wakes when one of
// its sockets is ready, then reads one datagram from every ready socket
// and hands each to the socket's handler. A media bridge receives 50
// small packets a second on each of thousands of sockets; with a
// goroutine per socket in Go's poller every packet cost a wake-up, a
// failed read and a scheduler pass, which measured as most of a relay's
// CPU. Here one wake-up serves every socket that became ready meanwhile,
// and under load a worker lingers between passes so that more do.
//
// Sockets are plain non-blocking file descriptors (Socket) that Go's
// poller never sees; writes go straight to the kernel (sendto), from any
// goroutine.
package pump

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxDatagram is the largest datagram read: an Ethernet MTU.
const maxDatagram = 1500

// Tailroom is the spare capacity every datagram handed to a Handler has
// past its length, so that the handler can grow it in place (an SRTP
// authentication tag and MKI) instead of copying it to a buffer of its
// own.
const Tailroom = 64

// DefaultLinger is how long a worker that just handled datagrams sleeps
// before it looks again: meanwhile more sockets become ready and one
// epoll_wait collects them all, instead of a wake-up per packet. It is
// the most a datagram waits for a busy pump (a jitter buffer holds tens
// of milliseconds).
const DefaultLinger = 500 * time.Microsecond

// busyPass is the number of ready sockets from which a pass counts as
// busy and the worker lingers: below it, it parks until the next packet.
const busyPass = 16

// maxEvents is the most sockets one pass serves.
const maxEvents = 1024

// Handler takes one datagram read from a socket, on the pump's worker:
// pkt is valid only during the call, has at least Tailroom bytes of
// capacity past its length (the handler may write there), and calls for
// one socket never overlap.
type Handler func(pkt []byte, src netip.AddrPort, now time.Time)

// Pump is a set of workers reading the sockets added to it.
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
	// ep is epfd as a file in Go's poller: the worker parks there until
	// one of its sockets is ready, holding no thread. Closing it ends
	// the worker.
	ep *os.File
	rc syscall.RawConn
	mu sync.Mutex
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

// New starts a pump with n workers (at least 1), each pausing linger
// between its passes over ready sockets while many keep coming
// (DefaultLinger is the measured choice; 0: no pause).
func New(n int, linger time.Duration) (*Pump, error) {
	p := &Pump{linger: max(linger, 0)}
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
	// Non-blocking, so that os.NewFile puts it in Go's poller: an epoll
	// set is readable while any of its sockets is ready.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("pump: epoll: %w", err)
	}
	ep := os.NewFile(uintptr(epfd), "pump-epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		return nil, fmt.Errorf("pump: epoll: %w", err)
	}
	return &worker{epfd: epfd, ep: ep, rc: rc, regs: make(map[uint64]*registration), nextID: 1}, nil
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
	if !w.closed { // a closed set's number may belong to another file now
		_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
	}
	delete(w.regs, s.id)
	s.worker = nil
}

// Close stops the workers; sockets still added are no longer read (their
// owners close them).
func (p *Pump) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	var err error
	for _, w := range p.workers {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		// Wakes the parked worker: its wait fails with ErrClosed.
		err = errors.Join(err, w.ep.Close())
	}
	p.wg.Wait()
	return err
}

// run waits for ready sockets and reads them until Close. After a busy
// pass it lingers, so that under load one epoll_wait serves many sockets.
func (w *worker) run() {
	events := make([]unix.EpollEvent, maxEvents)
	buf := make([]byte, maxDatagram+Tailroom)
	// Look without blocking; park in Go's poller while nothing is ready.
	// One closure for the worker's life, not one per pass.
	var n int
	var werr error
	look := func(fd uintptr) bool {
		n, werr = unix.EpollWait(int(fd), events, 0)
		return n > 0 || werr != nil && !errors.Is(werr, unix.EINTR)
	}
	for {
		n, werr = 0, nil
		err := w.rc.Read(look)
		if err != nil || werr != nil {
			return // closed: nothing more to do
		}
		if !w.pass(events[:n], buf) {
			return
		}
		if n >= busyPass && n < len(events) && w.linger > 0 {
			time.Sleep(w.linger)
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
		m, src, err := reg.s.read(buf[:maxDatagram])
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
