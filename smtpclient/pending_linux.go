package smtpclient

import (
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
