package queue

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// defaultCheckpointInterval is the default of Options.CheckpointInterval.
const defaultCheckpointInterval = time.Second

// checkpointLoop checkpoints every interval, and when the committer says
// that the current segment is full, until stop is closed.
func (s *Spool) checkpointLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(s.ckptEvery)
	defer t.Stop()
	var last error
	var cut time.Time
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			// The segment rotated now waits for the next tick: its
			// last messages were put a moment ago, and most of them
			// will be delivered (and need no files) by then.
			cut = time.Now().Add(-s.ckptEvery / 2)
		case <-s.jnl.full:
			cut = time.Time{}
		}
		err := s.checkpointBefore(cut)
		if err != nil && err != last {
			s.log.Error("queue: checkpoint failed", "err", err)
		}
		last = err
	}
}

// checkpoint makes the files in msg/ of the messages put into finished
// segments durable, then deletes those segments: it rotates the journal,
// waits until every Put committed to the old segments has written its
// files, syncs the files (syncMsgFiles) and msg/, and removes the segments.
//
// A failed sync is not retried: after a failed fsync the kernel may have
// dropped the data it could not write while the page cache still shows it,
// so a later sync that succeeds proves nothing. The journal then keeps every
// segment until the next Open, which rewrites the messages from it.
func (s *Spool) checkpoint() error { return s.checkpointBefore(time.Time{}) }

// checkpointBefore is checkpoint for the segments that stopped taking
// records before cut (all of them if cut is zero).
func (s *Spool) checkpointBefore(cut time.Time) error {
	s.ckptMu.Lock()
	defer s.ckptMu.Unlock()
	segs := s.jnl.rotate()
	if !cut.IsZero() {
		segs = s.jnl.retiredBefore(segs, cut)
	}
	if len(segs) == 0 {
		return nil
	}
	for _, seg := range segs {
		seg.pending.Wait()
	}
	ids := s.jnl.segmentIDs(segs)
	if err := s.materialize(ids); err != nil {
		// Nothing was synced: try again at the next checkpoint.
		return fmt.Errorf("queue: checkpoint: %w", err)
	}
	if s.ckptErr != nil {
		// The messages still get their files, so that memory stays
		// bounded, but the segments stay until the next Open.
		return s.ckptErr
	}
	err := s.syncMsgFiles(ids)
	if err == nil {
		err = s.syncMsgDir()
	}
	if err != nil {
		s.ckptErr = fmt.Errorf("queue: checkpoint: %w; the journal is kept until the spool is opened again", err)
		return s.ckptErr
	}
	return s.jnl.remove(segs)
}

// syncMsgFiles makes the files of messages ids in msg/ durable. Where
// there is syncfs(2) (Linux) it is one syncfs of the spool's file system,
// which on ext4 writes a second's worth of messages about ten times faster
// than fsyncing each file from 64 goroutines (BenchmarkCheckpointSync: ~25
// µs against ~210 µs a message); it also writes back other dirty data of
// that file system, so a spool on a file system of its own checkpoints
// fastest. Its descriptor is opened once, in Open, so that it reports a
// writeback error of the files even if the writeback ran before the call
// (see safeio.FSSync). Elsewhere each file is fsynced.
func (s *Spool) syncMsgFiles(ids []string) error {
	if s.fssync != nil {
		if err := s.fssync.Sync(); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
		return nil
	}
	return s.syncEach(ids)
}

// syncEach fsyncs the body and state files of messages ids, from several
// goroutines (the file system commits concurrent fsyncs together). A
// message removed meanwhile is skipped.
func (s *Spool) syncEach(ids []string) error {
	const workers = 64
	paths := make(chan string)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			for p := range paths {
				err = errors.Join(err, syncFile(p))
			}
			errs <- err
		}()
	}
	for _, id := range ids {
		paths <- s.bodyPath(id)
		paths <- s.statePath(id)
	}
	close(paths)
	wg.Wait()
	close(errs)
	var err error
	for e := range errs {
		err = errors.Join(err, e)
	}
	return err
}

// syncFile fsyncs the file path, if it exists.
func syncFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = f.Sync()
	return errors.Join(err, f.Close())
}
