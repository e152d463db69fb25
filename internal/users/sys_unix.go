//go:build unix

package users

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// lockFile takes an exclusive flock(2) on path, created if missing, and
// returns the function that releases it. The lock file is never removed:
// removing it would let two processes lock two different files.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	for {
		err = syscall.Flock(fd, syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(fd, syscall.LOCK_UN)
		f.Close()
	}, nil
}

// keepOwner gives f the owner and group of old, so that a file of the
// daemon's user edited by root stays readable by the daemon.
func keepOwner(f *os.File, old fs.FileInfo) error {
	st, ok := old.Sys().(*syscall.Stat_t)
	if !ok || (int(st.Uid) == os.Geteuid() && int(st.Gid) == os.Getegid()) {
		return nil
	}
	return f.Chown(int(st.Uid), int(st.Gid))
}
