//go:build !linux

package queue

import (
	"bytes"
	"os"
)

// writeRecords writes recs to the end of f with one write(2) and returns
// how many bytes it wrote.
func writeRecords(f *os.File, recs [][]byte) (int64, error) {
	n, err := f.Write(bytes.Join(recs, nil))
	return int64(n), err
}

// datasync is fsync(2) where fdatasync is not available everywhere.
func datasync(f *os.File) error { return f.Sync() }
