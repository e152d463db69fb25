//go:build !unix

package queue

import (
	"context"
	"errors"
	"os"
)

var errNoLock = errors.New("queue: file locking is not supported on this platform")

func tryLock(*os.File, bool) (bool, error)       { return false, errNoLock }
func lock(context.Context, *os.File, bool) error { return errNoLock }
func unlock(*os.File) error                      { return errNoLock }
