//go:build unix

package queue

import (
	"context"
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// tryLock takes an flock(2) lock on f without waiting and reports whether
// it got it. The lock belongs to the open file description: another open
// of the same file, even in this process, conflicts with it.
func tryLock(f *os.File, exclusive bool) (bool, error) {
	how := unix.LOCK_SH | unix.LOCK_NB
	if exclusive {
		how = unix.LOCK_EX | unix.LOCK_NB
	}
	for {
		err := unix.Flock(int(f.Fd()), how)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EWOULDBLOCK):
			return false, nil
		default:
			return false, &os.PathError{Op: "flock", Path: f.Name(), Err: err}
		}
	}
}

// lock takes an flock(2) lock on f, waiting for it until ctx is done. Locks
// are held for the length of one fsync, so waiting polls.
func lock(ctx context.Context, f *os.File, exclusive bool) error {
	wait := 100 * time.Microsecond
	for {
		ok, err := tryLock(f, exclusive)
		if ok || err != nil {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}
