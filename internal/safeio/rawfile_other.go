//go:build !unix

package safeio

import (
	"io/fs"
	"os"
)

// RawFile is a file written through the system calls directly where that
// saves system calls (unix); elsewhere an *os.File.
type RawFile struct{ *os.File }

// CreateNew creates the new file path (it must not exist) with mode perm,
// open for writing.
func CreateNew(path string, perm fs.FileMode) (*RawFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return nil, err
	}
	return &RawFile{f}, nil
}
