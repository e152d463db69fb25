//go:build !unix

package queue

import (
	"errors"
	"os"
)

// writeFileNoSync creates the new file path (it must not exist) and writes
// data, without fsync. On error it removes the file.
func writeFileNoSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err = errors.Join(err, f.Close()); err != nil {
		os.Remove(path)
	}
	return err
}
