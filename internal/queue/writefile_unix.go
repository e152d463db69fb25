//go:build unix

package queue

import (
	"io/fs"
	"os"
	"syscall"
)

// writeFileNoSync creates the new file path (it must not exist) and writes
// data, without fsync. On error it removes the file.
//
// It uses the system calls directly: an *os.File of a regular file costs
// Go's runtime three more per file (fcntl and an epoll registration that
// fails), a measurable share of a Put when every message makes two files.
func writeFileNoSync(path string, data []byte) error {
	fd, err := ignoringEINTR(func() (int, error) {
		return syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, 0o600)
	})
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: err}
	}
	for len(data) > 0 && err == nil {
		var n int
		n, err = ignoringEINTR(func() (int, error) { return syscall.Write(fd, data) })
		data = data[n:]
	}
	if cerr := syscall.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return &fs.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

func ignoringEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != syscall.EINTR {
			if n < 0 {
				n = 0
			}
			return n, err
		}
	}
}
