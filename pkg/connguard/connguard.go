// Package connguard bounds what strangers can make a stream listener (SIP
// over TCP or TLS) hold: it checks the source at accept, caps connections
// in all and per source, and closes a connection that sends nothing for
// too long. sipgo serves whatever its listener returns and sets no read
// deadline, so the bounds live in the listener it is given.
package connguard

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-voice/baton/pkg/config"
)

// Policy is what a guarded listener allows. Zero fields take the defaults
// below.
type Policy struct {
	// Allow reports whether a source may connect; nil allows every source.
	// A refused connection is closed at accept, before a byte is read.
	Allow func(netip.Addr) bool
	// MaxConns caps open connections on the listener (default 1024).
	MaxConns int
	// MaxPerSource caps open connections from one IP address (default 64).
	MaxPerSource int
	// FirstRead is how long a new connection has to deliver its first
	// bytes; for TLS that covers the handshake (default 5 s).
	FirstRead time.Duration
	// Idle is how long an established connection may stay silent before it
	// is closed (default 3 min). SIP over TCP peers keep a connection alive
	// with CRLF keep-alives (RFC 5626 section 4.4.1), which count as reads.
	Idle time.Duration
}

// Defaults for a zero Policy field.
const (
	DefaultMaxConns     = 1024
	DefaultMaxPerSource = 64
	DefaultFirstRead    = 5 * time.Second
	DefaultIdle         = 3 * time.Minute
)

func (p Policy) withDefaults() Policy {
	if p.MaxConns <= 0 {
		p.MaxConns = DefaultMaxConns
	}
	if p.MaxPerSource <= 0 {
		p.MaxPerSource = DefaultMaxPerSource
	}
	if p.FirstRead <= 0 {
		p.FirstRead = DefaultFirstRead
	}
	if p.Idle <= 0 {
		p.Idle = DefaultIdle
	}
	return p
}

// Stats counts what the guard refused and closed; the fields are safe to
// read while the listener runs.
type Stats struct {
	// RefusedACL counts connections from sources Allow refused.
	RefusedACL atomic.Uint64
	// RefusedFull counts connections refused because MaxConns were open.
	RefusedFull atomic.Uint64
	// RefusedSource counts connections refused because their source had
	// MaxPerSource open.
	RefusedSource atomic.Uint64
	// TimedOut counts connections closed for silence (FirstRead or Idle).
	TimedOut atomic.Uint64
	// Open is the number of connections open now.
	Open atomic.Int64
}

// Listener is a guarded net.Listener.
type Listener struct {
	net.Listener
	policy Policy
	stats  *Stats

	mu       sync.Mutex
	open     int
	bySource map[netip.Addr]int
}

// Wrap guards ln with p, counting into stats (which may be nil).
func Wrap(ln net.Listener, p Policy, stats *Stats) *Listener {
	if stats == nil {
		stats = &Stats{}
	}
	return &Listener{Listener: ln, policy: p.withDefaults(), stats: stats, bySource: map[netip.Addr]int{}}
}

// Stats is what the listener counted.
func (l *Listener) Stats() *Stats { return l.stats }

// Accept returns the next connection the policy allows. Refused
// connections are closed and counted here and never reach the caller.
// A transient accept error (for example the process is out of file
// descriptors) is retried after a pause growing to 1 s, as net/http does,
// instead of ending the caller's serve loop; a closed listener returns
// its error.
func (l *Listener) Accept() (net.Conn, error) {
	var pause time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			var ne net.Error
			if !errors.As(err, &ne) {
				return nil, err
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			time.Sleep(pause)
			continue
		}
		pause = 0
		src := remoteAddr(c)
		if l.policy.Allow != nil && !l.policy.Allow(src) {
			l.stats.RefusedACL.Add(1)
			_ = c.Close()
			continue
		}
		if !l.take(src) {
			_ = c.Close()
			continue
		}
		gc := &conn{Conn: c, l: l, src: src}
		if err := c.SetReadDeadline(time.Now().Add(l.policy.FirstRead)); err != nil {
			gc.release()
			_ = c.Close()
			continue
		}
		return gc, nil
	}
}

func (l *Listener) take(src netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= l.policy.MaxConns {
		l.stats.RefusedFull.Add(1)
		return false
	}
	if l.bySource[src] >= l.policy.MaxPerSource {
		l.stats.RefusedSource.Add(1)
		return false
	}
	l.open++
	l.bySource[src]++
	l.stats.Open.Add(1)
	return true
}

func (l *Listener) give(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.bySource[src]--; l.bySource[src] <= 0 {
		delete(l.bySource, src)
	}
	l.stats.Open.Add(-1)
}

func remoteAddr(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if ap := a.AddrPort(); ap.IsValid() {
			return ap.Addr().Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// conn moves its read deadline on with every read that returns bytes and
// turns a deadline into a clean close: sipgo logs any other read error at
// ERROR, which a silent stranger could use to fill the logs.
type conn struct {
	net.Conn
	l    *Listener
	src  netip.Addr
	once sync.Once
}

func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		if derr := c.Conn.SetReadDeadline(time.Now().Add(c.l.policy.Idle)); derr != nil && err == nil {
			err = derr
		}
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		// The reader closes the connection on EOF (sipgo does; a second
		// Close here would make sipgo log its pool cleanup failing).
		c.l.stats.TimedOut.Add(1)
		return n, io.EOF
	}
	return n, err
}

// SetReadDeadline is a no-op: the guard owns the read deadline. (tls.Conn
// and sipgo do not set one; a caller that did would lift the bound.)
func (c *conn) SetReadDeadline(time.Time) error { return nil }

// SetDeadline sets only the write deadline, for the same reason.
func (c *conn) SetDeadline(t time.Time) error { return c.SetWriteDeadline(t) }

func (c *conn) Close() error {
	c.release()
	return c.Conn.Close()
}

func (c *conn) release() { c.once.Do(func() { c.l.give(c.src) }) }

// Config is the configuration section of a guarded listener's bounds, as
// a service's YAML names it (ingress: limits.connections, transfer: sip).
type Config struct {
	// MaxConnections caps the open connections of each listener; one more
	// is closed at accept.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerSource caps a listener's open connections from one
	// IP address.
	MaxConnectionsPerSource int `yaml:"max_connections_per_source"`
	// FirstReadTimeout is how long a new connection has to send its first
	// bytes (over TLS: to complete the handshake) before it is closed.
	FirstReadTimeout time.Duration `yaml:"first_read_timeout"`
	// IdleTimeout closes a connection silent this long (CRLF keep-alives
	// count as traffic).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// DefaultConfig is the package defaults as a Config.
func DefaultConfig() Config {
	return Config{MaxConnections: DefaultMaxConns, MaxConnectionsPerSource: DefaultMaxPerSource,
		FirstReadTimeout: DefaultFirstRead, IdleTimeout: DefaultIdle}
}

// Validate checks c, naming its fields under section ("sip",
// "limits.connections") so errors carry the file and line.
func (c Config) Validate(section string) error {
	var errs []error
	if c.MaxConnections < 1 {
		errs = append(errs, config.Errorf(section+".max_connections", "%d, want at least 1", c.MaxConnections))
	}
	if c.MaxConnectionsPerSource < 1 || c.MaxConnections >= 1 && c.MaxConnectionsPerSource > c.MaxConnections {
		errs = append(errs, config.Errorf(section+".max_connections_per_source", "%d, want 1 to %s.max_connections (%d)",
			c.MaxConnectionsPerSource, section, c.MaxConnections))
	}
	if c.FirstReadTimeout <= 0 {
		errs = append(errs, config.Errorf(section+".first_read_timeout", "%v, want more than 0", c.FirstReadTimeout))
	}
	if c.IdleTimeout < c.FirstReadTimeout {
		errs = append(errs, config.Errorf(section+".idle_timeout", "%v, want at least first_read_timeout (%v)",
			c.IdleTimeout, c.FirstReadTimeout))
	}
	return errors.Join(errs...)
}

// Policy is the guard's policy for c, with allow as its source check
// (nil: every source).
func (c Config) Policy(allow func(netip.Addr) bool) Policy {
	return Policy{Allow: allow, MaxConns: c.MaxConnections, MaxPerSource: c.MaxConnectionsPerSource,
		FirstRead: c.FirstReadTimeout, Idle: c.IdleTimeout}
}
