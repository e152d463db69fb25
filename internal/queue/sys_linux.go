//go:build linux

package queue

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// writeRecords writes recs to the end of f with as few writev(2) calls as
// the kernel allows (one, for a batch under IOV_MAX records) and returns how
// many bytes it wrote.
func writeRecords(f *os.File, recs [][]byte) (int64, error) {
	fd := int(f.Fd())
	var total int64
	for len(recs) > 0 {
		iovs := recs[:min(len(recs), maxBatchRecords)]
		n, err := unix.Writev(fd, iovs)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return total, &os.PathError{Op: "writev", Path: f.Name(), Err: err}
		}
		if n == 0 {
			return total, &os.PathError{Op: "writev", Path: f.Name(), Err: io.ErrShortWrite}
		}
		total += int64(n)
		// Drop what was written, also part of a record.
		for n > 0 {
			if n >= len(recs[0]) {
				n -= len(recs[0])
				recs = recs[1:]
				continue
			}
			recs[0] = recs[0][n:]
			n = 0
		}
		for len(recs) > 0 && len(recs[0]) == 0 {
			recs = recs[1:]
		}
	}
	return total, nil
}

// datasync is fdatasync(2): the file's data and the metadata needed to read
// it back (its size), without its timestamps.
func datasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if !errors.Is(err, unix.EINTR) {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}
