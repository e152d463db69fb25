package smtpclient

import (
	"net"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// pendingInput returns the octets waiting in the socket's receive queue.
func pendingInput(raw syscall.RawConn) int {
	n := 0
	_ = raw.Control(func(fd uintptr) {
		if v, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err == nil {
			n = v
		}
	})
	return n
}

// quickAckConn re-arms TCP_QUICKACK before each read while armed. Linux
// leaves quick-ACK mode on its own; re-arming it makes the kernel ACK the
// server's segments at once instead of delaying the ACK (up to 40 ms),
// which otherwise stalls a server that sends its TLS 1.3 session tickets
// in separate small writes with Nagle's algorithm on (OpenSSL-based MTAs
// such as Postfix): its second write waits for our delayed ACK.
type quickAckConn struct {
	net.Conn
	raw   syscall.RawConn
	armed atomic.Bool
	// Rearms counts the re-arming system calls (for tests).
	rearms atomic.Int64
}

func newQuickAckConn(nc net.Conn) *quickAckConn {
	q := &quickAckConn{Conn: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			q.raw = raw
		}
	}
	return q
}

// arm turns re-arming on (around the handshake) or off.
func (q *quickAckConn) arm(on bool) { q.armed.Store(on) }

func (q *quickAckConn) Read(p []byte) (int, error) {
	if q.armed.Load() && q.raw != nil {
		_ = q.raw.Control(func(fd uintptr) {
			if syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1) == nil {
				q.rearms.Add(1)
			}
		})
	}
	return q.Conn.Read(p)
}
