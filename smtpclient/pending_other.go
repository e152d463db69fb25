//go:build !linux

package smtpclient

import (
	"syscall"
)

// pendingInput is not known here; the read buffer check still applies.
func pendingInput(syscall.RawConn) int { return 0 }
