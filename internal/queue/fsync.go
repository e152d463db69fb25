package queue

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/petrel-mta/petrel/internal/safeio"
)

// groupSync fsyncs one directory on behalf of many goroutines: each caller
// of sync waits for an fsync that started after it called (so that it covers
// the caller's renames and links), and all callers that arrive while an
// fsync runs share the next one (group commit).
type groupSync struct {
	dir    string
	syncFn func(dir string) error // syncDir; replaced in tests

	mu      sync.Mutex
	cond    sync.Cond
	running bool
	started uint64 // sequence number of the last fsync started
	done    uint64 // sequence number of the last fsync finished
	failSeq uint64 // sequence number of the last fsync that failed
	failErr error
	count   uint64 // fsyncs done, for tests
}

func newGroupSync(dir string) *groupSync {
	g := &groupSync{dir: dir, syncFn: safeio.SyncDir}
	g.cond.L = &g.mu
	return g
}

// sync returns when an fsync of the directory that started after the call
// has finished. It fails if that fsync or a later one failed: after a failed
// fsync the kernel may have dropped what it could not write, so nothing
// since is trusted until a later fsync succeeds.
func (g *groupSync) sync() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	want := g.started + 1
	for g.done < want {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		seq := g.started
		g.mu.Unlock()
		err := g.syncFn(g.dir)
		g.mu.Lock()
		g.running = false
		g.done = seq
		g.count++
		if err != nil {
			g.failSeq, g.failErr = seq, err
		}
		g.cond.Broadcast()
	}
	if g.failSeq >= want {
		return fmt.Errorf("queue: %w", g.failErr)
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
