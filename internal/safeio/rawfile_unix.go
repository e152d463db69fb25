//go:build unix

package safeio

import (
	"io"
	"io/fs"
	"syscall"
)

// RawFile is a file written through the system calls directly. An
// *os.File of a regular file costs the Go runtime three more system calls
// per file (fcntl, and an epoll registration that fails), a measurable
// share of the work when every message makes a file.
type RawFile struct {
	fd   int
	path string
}

// CreateNew creates the new file path (it must not exist) with mode perm,
// open for writing.
func CreateNew(path string, perm fs.FileMode) (*RawFile, error) {
	fd, err := retry(func() (int, error) {
		return syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, uint32(perm.Perm()))
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return &RawFile{fd: fd, path: path}, nil
}

// Write implements io.Writer: all of p, or an error.
func (f *RawFile) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := retry(func() (int, error) { return syscall.Write(f.fd, p[n:]) })
		n += m
		if err != nil {
			return n, &fs.PathError{Op: "write", Path: f.path, Err: err}
		}
		if m == 0 {
			return n, &fs.PathError{Op: "write", Path: f.path, Err: io.ErrShortWrite}
		}
	}
	return n, nil
}

// Sync is fsync(2).
func (f *RawFile) Sync() error {
	_, err := retry(func() (int, error) { return 0, syscall.Fsync(f.fd) })
	if err != nil {
		return &fs.PathError{Op: "sync", Path: f.path, Err: err}
	}
	return nil
}

// Close closes the file; it must not be used after. A second Close does
// nothing (the descriptor number may belong to another file by then).
func (f *RawFile) Close() error {
	if f.fd < 0 {
		return nil
	}
	fd := f.fd
	f.fd = -1
	if err := syscall.Close(fd); err != nil {
		return &fs.PathError{Op: "close", Path: f.path, Err: err}
	}
	return nil
}

// retry calls fn again while it fails with EINTR.
func retry(fn func() (int, error)) (int, error) {
	for {
		n, err := fn()
		if err != syscall.EINTR {
			if n < 0 {
				n = 0
			}
			return n, err
		}
	}
}
