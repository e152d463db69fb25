package safeio

import (
	"fmt"
	"sync"
)

// GroupSync fsyncs one directory on behalf of many goroutines: each caller
// of Sync waits for an fsync that started after it called (so that it
// covers the caller's creations, renames and links), and all callers that
// arrive while an fsync runs share the next one (group commit). A
// directory that takes a message per delivery then costs one fsync per
// batch of concurrent deliveries, not one each.
type GroupSync struct {
	dir    string
	syncFn func(dir string) error

	mu      sync.Mutex
	cond    sync.Cond
	running bool
	started uint64 // sequence number of the last fsync started
	done    uint64 // sequence number of the last fsync finished
	failErr error  // the first fsync that failed
	count   uint64 // fsyncs done
	waiters int    // callers waiting for a running fsync (for tests)
}

// NewGroupSync returns a GroupSync of dir. syncFn syncs the directory;
// nil means SyncDir (tests pass a slow or failing one).
func NewGroupSync(dir string, syncFn func(dir string) error) *GroupSync {
	if syncFn == nil {
		syncFn = SyncDir
	}
	g := &GroupSync{dir: dir, syncFn: syncFn}
	g.cond.L = &g.mu
	return g
}

// Sync returns when an fsync of the directory that started after the call
// has finished. Once an fsync has failed, Sync fails for good: after a
// failed fsync the kernel may have dropped what it could not write, and it
// reports the error once, to whichever fsync comes first (which may be one
// that started before a later caller's call), so a later fsync that
// succeeds proves nothing.
func (g *GroupSync) Sync() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failErr != nil {
		return fmt.Errorf("sync %s: an earlier sync failed: %w", g.dir, g.failErr)
	}
	want := g.started + 1
	for g.done < want {
		if g.running {
			g.waiters++
			g.cond.Wait()
			g.waiters--
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
		if err != nil && g.failErr == nil {
			g.failErr = err
		}
		g.cond.Broadcast()
	}
	if g.failErr != nil {
		return fmt.Errorf("sync %s: %w", g.dir, g.failErr)
	}
	return nil
}

// Count returns how many fsyncs were made.
func (g *GroupSync) Count() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.count
}
