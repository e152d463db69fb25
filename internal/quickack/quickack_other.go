//go:build !linux

package quickack

import (
	"net"
	"sync/atomic"
)

// Supported reports whether this system has TCP_QUICKACK.
const Supported = false

// Conn is a plain connection where TCP_QUICKACK does not exist.
type Conn struct {
	net.Conn
	rearms atomic.Int64
}

// New wraps nc.
func New(nc net.Conn) *Conn { return &Conn{Conn: nc} }

// Arm does nothing here.
func (q *Conn) Arm(bool) {}

// Armed is always false here.
func (q *Conn) Armed() bool { return false }

// Rearms is always 0 here.
func (q *Conn) Rearms() int64 { return q.rearms.Load() }
