package main

// mmsg.go: the generator's sockets. They are plain non-blocking file
// descriptors, outside Go's network poller, written with sendmmsg and read
// with recvmmsg (MSG_DONTWAIT) by goroutines that sleep between passes: a
// socket in the poller would wake the process for every packet the relays
// send back, and those wake-ups, not the packets, were most of what the
// generator cost. The kernel stamps each packet as it is queued
// (SO_TIMESTAMPNS), so reading late does not change the measured delay.

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sock is one IPv4 UDP socket on 127.0.0.1.
type sock struct {
	fd   int
	port uint16
}

func openSock() (*sock, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("generator socket: %w", err)
	}
	s := &sock{fd: fd}
	// Large buffers (forced: the run is usually root) so that a late pass
	// does not drop; kernel receive stamps.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 32<<20)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 8<<20)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		s.close()
		return nil, fmt.Errorf("generator socket: SO_TIMESTAMPNS: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		s.close()
		return nil, fmt.Errorf("generator socket: bind: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("generator socket: %w", err)
	}
	in4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		s.close()
		return nil, errors.New("generator socket: not IPv4")
	}
	s.port = uint16(in4.Port)
	return s, nil
}

func (s *sock) close() { _ = unix.Close(s.fd) }

// inet4 is a sockaddr_in for 127.0.0.1:port.
func inet4(port uint16) unix.RawSockaddrInet4 {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{127, 0, 0, 1}}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(port>>8), byte(port) // network order
	return sa
}

// portOf is the port of a sockaddr_in.
func portOf(sa *unix.RawSockaddrInet4) uint16 {
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	return uint16(p[0])<<8 | uint16(p[1])
}

// mmsghdr is struct mmsghdr: a msghdr and the length the kernel sent or
// received (Go pads it as C does).
type mmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
}

// mmsg is a batch of messages for sendmmsg or recvmmsg: each has its own
// buffer, address and control buffer.
type mmsg struct {
	hs    []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
	bufs  [][]byte
	oobs  [][]byte
}

func newMmsg(n, oob int) *mmsg {
	m := &mmsg{hs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), names: make([]unix.RawSockaddrInet4, n),
		bufs: make([][]byte, n), oobs: make([][]byte, n)}
	for i := range n {
		m.bufs[i] = make([]byte, 1500)
		m.iovs[i].Base = &m.bufs[i][0]
		m.iovs[i].SetLen(len(m.bufs[i]))
		h := &m.hs[i].Hdr
		h.Iov = &m.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&m.names[i]))
		h.Namelen = unix.SizeofSockaddrInet4
		if oob > 0 {
			m.oobs[i] = make([]byte, oob)
			h.Control = &m.oobs[i][0]
			h.SetControllen(oob)
		}
	}
	return m
}

// send writes the first n messages (each iov set to its packet's length);
// it returns how many the kernel took.
func (s *sock) send(m *mmsg, n int) (int, error) {
	done := 0
	for done < n {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&m.hs[done])),
			uintptr(n-done), unix.MSG_DONTWAIT, 0, 0)
		if errno != 0 {
			if errno == unix.EINTR {
				continue
			}
			return done, fmt.Errorf("sendmmsg: %w", errno)
		}
		done += int(r)
	}
	return done, nil
}

// recv reads up to len(m.hs) waiting packets without blocking; 0 with no
// error means none was waiting.
func (s *sock) recv(m *mmsg) (int, error) {
	for i := range m.hs {
		h := &m.hs[i].Hdr
		h.Namelen = unix.SizeofSockaddrInet4
		h.Flags = 0
		m.iovs[i].SetLen(len(m.bufs[i]))
		if len(m.oobs[i]) > 0 {
			h.SetControllen(len(m.oobs[i]))
		}
	}
	for {
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&m.hs[0])),
			uintptr(len(m.hs)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		}
		return 0, fmt.Errorf("recvmmsg: %w", errno)
	}
}
