package safeio

import (
	"errors"
	"sync"
	"testing"
	"time"
)

func TestGroupSyncError(t *testing.T) {
	boom := errors.New("boom")
	fail := true
	g := NewGroupSync(t.TempDir(), func(string) error {
		if fail {
			return boom
		}
		return nil
	})
	if err := g.Sync(); !errors.Is(err, boom) {
		t.Errorf("Sync = %v, want boom", err)
	}
	// A failed fsync is for good: the error may have been reported to it
	// for data that later callers wrote.
	fail = false
	if err := g.Sync(); !errors.Is(err, boom) {
		t.Errorf("Sync after a failed fsync = %v, want boom", err)
	}
}

// TestGroupSyncShares: callers that arrive while an fsync runs share the
// next one, and each caller's fsync starts after its call.
func TestGroupSyncShares(t *testing.T) {
	gate := make(chan struct{})
	var mu sync.Mutex
	calls := 0
	g := NewGroupSync(t.TempDir(), func(dir string) error {
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if first {
			<-gate // the first fsync runs until every caller waits
		}
		return SyncDir(dir)
	})
	const n = 32
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := g.Sync(); err != nil {
			t.Error(err)
		}
	})
	for range n - 1 {
		wg.Go(func() {
			if err := g.Sync(); err != nil {
				t.Error(err)
			}
		})
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		g.mu.Lock()
		w, running := g.waiters, g.running
		g.mu.Unlock()
		if running && w == n-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d callers waiting, want %d", w, n-1)
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	// The first caller's fsync, then one for all the others: it must
	// start after they called, so the first one does not cover them.
	if c := g.Count(); c != 2 || calls != 2 {
		t.Errorf("%d callers made %d fsyncs (counted %d), want 2", n, calls, c)
	}
}

func TestFSSync(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenFSSync(dir)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip("no syncfs here")
	}
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := s.Sync(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err == nil {
		t.Error("Sync after Close succeeded")
	}
}
