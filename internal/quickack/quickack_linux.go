package quickack

import (
	"net"
	"sync/atomic"
	"syscall"
)

// Supported reports whether this system has TCP_QUICKACK.
const Supported = true

// Conn wraps a TCP connection and, while armed, sets TCP_QUICKACK before
// each Read. It is safe for one reader and one goroutine calling Arm.
type Conn struct {
	net.Conn
	raw    syscall.RawConn // nil when the connection has no socket
	armed  atomic.Bool
	rearms atomic.Int64
}

// New wraps nc, disarmed. On a connection without a socket (net.Pipe)
// Arm changes nothing; on a unix socket the option fails and is not
// counted.
func New(nc net.Conn) *Conn {
	q := &Conn{Conn: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			q.raw = raw
		}
	}
	return q
}

// Arm turns re-arming on (before a handshake) or off (once the replies
// inside TLS have come).
func (q *Conn) Arm(on bool) { q.armed.Store(on) }

// Armed reports whether reads re-arm quick ACKs now.
func (q *Conn) Armed() bool { return q.armed.Load() }

// Rearms counts the system calls that re-armed quick ACKs: a test's way
// to see that a client used the mechanism.
func (q *Conn) Rearms() int64 { return q.rearms.Load() }

// Read re-arms quick ACKs when armed, then reads.
func (q *Conn) Read(p []byte) (int, error) {
	if q.raw != nil && q.armed.Load() {
		_ = q.raw.Control(func(fd uintptr) {
			if syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1) == nil {
				q.rearms.Add(1)
			}
		})
	}
	return q.Conn.Read(p)
}
