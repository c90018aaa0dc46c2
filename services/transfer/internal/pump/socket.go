//go:build linux

package pump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket is a non-blocking UDP socket outside Go's network poller.
type Socket struct {
	fd   int
	six  bool
	port int
	// Set by Pump.Add, cleared by Remove (under the worker's lock).
	worker *worker
	id     uint64
	// closeOnce guards fd against a second close (the number may be
	// reused by then).
	closeOnce sync.Once
	closeErr  error
}

// Listen binds a UDP socket to addr (port 0 picks one).
func Listen(addr netip.AddrPort) (*Socket, error) {
	family, six := unix.AF_INET, addr.Addr().Is6() && !addr.Addr().Is4In6()
	if six {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("udp socket: %w", err)
	}
	s := &Socket{fd: fd, six: six}
	var sa unix.Sockaddr
	if six {
		sa = &unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
	} else {
		sa = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().Unmap().As4()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, errors.Join(fmt.Errorf("bind udp %s: %w", addr, err), s.Close())
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("udp socket: %w", err), s.Close())
	}
	switch b := bound.(type) {
	case *unix.SockaddrInet4:
		s.port = b.Port
	case *unix.SockaddrInet6:
		s.port = b.Port
	}
	return s, nil
}

// Port is the bound port.
func (s *Socket) Port() int { return s.port }

// Close releases the socket. Remove it from its pump first.
func (s *Socket) Close() error {
	s.closeOnce.Do(func() {
		if err := unix.Close(s.fd); err != nil {
			s.closeErr = fmt.Errorf("close udp socket: %w", err)
		}
	})
	return s.closeErr
}

// read reads one datagram without blocking (recvfrom, no allocation).
func (s *Socket) read(buf []byte) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrInet6 // large enough for either family
	rlen := uint32(unsafe.Sizeof(rsa))
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&rlen)))
	if errno != 0 {
		return 0, netip.AddrPort{}, errno
	}
	return int(n), addrOf(&rsa), nil
}

// WriteTo sends b to dst (sendto, no allocation). A full send buffer
// drops the datagram with EAGAIN, as a UDP send may.
func (s *Socket) WriteTo(b []byte, dst netip.AddrPort) error {
	var raw unix.RawSockaddrInet6
	size := s.sockaddr(dst, &raw)
	if size == 0 {
		return fmt.Errorf("send to %s: address family does not match the socket", dst)
	}
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	_, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), uintptr(p), uintptr(len(b)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&raw)), uintptr(size))
	if errno != 0 {
		return fmt.Errorf("send to %s: %w", dst, errno)
	}
	return nil
}

// sockaddr writes dst into raw in the socket's family; 0 when dst cannot
// be reached from it.
func (s *Socket) sockaddr(dst netip.AddrPort, raw *unix.RawSockaddrInet6) uintptr {
	a := dst.Addr()
	if !s.six {
		if !a.Is4() && !a.Is4In6() {
			return 0
		}
		in4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(raw))
		in4.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&in4.Port))[:], dst.Port())
		in4.Addr = a.Unmap().As4()
		return unsafe.Sizeof(*in4)
	}
	raw.Family = unix.AF_INET6
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&raw.Port))[:], dst.Port())
	raw.Addr = a.As16()
	return unsafe.Sizeof(*raw)
}

// addrOf reads a kernel socket address (IPv4 or IPv6).
func addrOf(raw *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&raw.Port))[:])
	if raw.Family == unix.AF_INET {
		in4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(raw))
		return netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(raw.Addr).Unmap(), port)
}
