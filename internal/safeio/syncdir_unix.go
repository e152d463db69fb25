//go:build unix

package safeio

import "os"

// SyncDir fsyncs a directory, making the creation, renaming or removal of
// names in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
