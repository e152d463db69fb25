package queue

import (
	"errors"
	"fmt"
	"github.com/petrel-mta/petrel/internal/safeio"
	"io/fs"
	"os"
)

// syncMsgDir fsyncs msg/, shared with concurrent callers (group commit).
func (s *Spool) syncMsgDir() error {
	if err := s.gsync.Sync(); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return nil
}

// writeFileSync creates the new file path (it must not exist), writes data
// and fsyncs it. On error it removes the file.
func writeFileSync(path string, data []byte) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// mkdirSync creates dir (mode 0700) if it is missing and reports whether it
// did.
func mkdirSync(dir string) (bool, error) {
	err := os.Mkdir(dir, 0o700)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrExist) {
		if fi, serr := os.Stat(dir); serr == nil && fi.IsDir() {
			return false, nil
		}
	}
	return false, err
}

// writeFileNoSync creates the new file path (it must not exist) and writes
// data, without fsync, through the system calls directly (safeio.RawFile).
// On error it removes the file.
func writeFileNoSync(path string, data []byte) error {
	f, err := safeio.CreateNew(path, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err = errors.Join(err, f.Close()); err != nil {
		os.Remove(path)
	}
	return err
}
