//go:build !linux

package smtpclient

import (
	"net"
	"sync/atomic"
	"syscall"
)

// pendingInput is not known here; the read buffer check still applies.
func pendingInput(syscall.RawConn) int { return 0 }

// quickAckConn is a no-op where TCP_QUICKACK does not exist.
type quickAckConn struct {
	net.Conn
	rearms atomic.Int64
}

func newQuickAckConn(nc net.Conn) *quickAckConn { return &quickAckConn{Conn: nc} }

func (q *quickAckConn) arm(bool) {}
