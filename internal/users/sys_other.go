//go:build !unix

package users

import (
	"io/fs"
	"os"
)

// lockFile does not lock where flock(2) is missing: two `petrel user`
// commands at once may lose an update there.
func lockFile(path string) (unlock func(), err error) { return func() {}, nil }

func keepOwner(f *os.File, old fs.FileInfo) error { return nil }
