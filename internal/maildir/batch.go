package maildir

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/petrel-mta/petrel/internal/safeio"
)

// maxBatch bounds the deliveries made together.
const maxBatch = 256

// batchReq is one delivery waiting for the batcher.
type batchReq struct {
	dirs []string // mailbox directories, durable (ensureMailbox)
	data []byte
	done chan batchResult

	// The batcher's.
	spool, base string
	linked      []string
	err         error
}

type batchResult struct {
	id  string
	err error
}

// DeliverBytes is Deliver for a message held in memory (data, which must
// not change until it returns). The deliveries waiting at one moment are
// made together, by one goroutine: their spool files written one after
// the other, made durable by one syncfs (where there is none, an fsync
// each), linked and renamed into their mailboxes, then one fsync of each
// new/ directory. Concurrent deliveries thus neither contend for the
// directories' locks nor wake threads for each other's syncs, and a lone
// delivery waits for no timer. The durability promise is Deliver's: when it
// returns nil the message is durable in every mailbox.
//
// Once handed to the batcher a delivery is carried out even if ctx ends
// (it takes milliseconds), so that no message is half delivered because
// of it; ctx is checked before.
func (s *Store) DeliverBytes(ctx context.Context, mailboxes []string, data []byte) (id string, size int64, err error) {
	dirs, err := s.dirsOf(mailboxes)
	if err != nil {
		return "", 0, err
	}
	for _, d := range dirs {
		if _, err := s.ensureMailbox(d); err != nil {
			return "", 0, err
		}
	}
	if err := ctx.Err(); err != nil {
		return "", 0, fmt.Errorf("maildir: %w", err)
	}
	r := &batchReq{dirs: dirs, data: data, done: make(chan batchResult, 1)}
	s.startBatcher.Do(func() { go s.batcher() })
	s.batchMu.Lock()
	if s.closed {
		s.batchMu.Unlock()
		return "", 0, errors.New("maildir: store closed")
	}
	s.batchWG.Add(1)
	s.batchMu.Unlock()
	s.reqs <- r
	res := <-r.done
	s.batchWG.Done()
	if res.err != nil {
		return "", 0, res.err
	}
	return res.id, int64(len(data)), nil
}

// batcher makes the deliveries of DeliverBytes, a batch at a time, until
// the Store is closed.
func (s *Store) batcher() {
	batch := make([]*batchReq, 0, maxBatch)
	for {
		select {
		case <-s.stop:
			return
		case r := <-s.reqs:
			batch = append(batch[:0], r)
		}
	gather:
		for len(batch) < maxBatch {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			default:
				break gather
			}
		}
		s.deliverBatch(batch)
		clear(batch)
	}
}

// deliverBatch delivers a batch and answers each request.
func (s *Store) deliverBatch(batch []*batchReq) {
	// Spool files, written one after the other (no fsync yet where the
	// file system can be synced whole).
	ok := 0
	for _, r := range batch {
		r.spool, r.base, r.err = s.writeFile(r.data)
		if r.err == nil {
			ok++
		}
	}
	if ok > 0 && s.fsync != nil {
		if err := s.fsync.Sync(); err != nil {
			for _, r := range batch {
				if r.err == nil {
					os.Remove(r.spool)
					r.err = fmt.Errorf("maildir: writing spool file: %w", err)
				}
			}
		}
	}
	// Names, then one fsync of each new/ directory they went into.
	newDirs := make(map[string][]*batchReq)
	for _, r := range batch {
		if r.err != nil {
			continue
		}
		r.linked, r.err = publish(r.spool, r.dirs, r.base+",S="+strconv.Itoa(len(r.data)))
		if r.err != nil {
			os.Remove(r.spool)
			continue
		}
		for _, d := range r.dirs {
			newDirs[d] = append(newDirs[d], r)
		}
	}
	for d, rs := range newDirs {
		gs, _ := s.durable.Load(d) // ensureMailbox stored it
		if err := gs.(*safeio.GroupSync).Sync(); err != nil {
			for _, r := range rs {
				if r.err == nil {
					r.err = fmt.Errorf("maildir: %w", err)
					s.undo(r)
				}
			}
		}
	}
	for _, r := range batch {
		if r.err != nil {
			r.done <- batchResult{err: r.err}
		} else {
			r.done <- batchResult{id: r.base + ",S=" + strconv.Itoa(len(r.data))}
		}
	}
}

// undo removes what a failed delivery of a batch made.
func (s *Store) undo(r *batchReq) {
	for _, l := range r.linked {
		os.Remove(l)
	}
	os.Remove(r.spool) // gone already if it was renamed
}

// writeFile writes data to a new spool file, fsynced unless the file
// system is synced whole (s.fsync), and returns its path and base name.
func (s *Store) writeFile(data []byte) (path, base string, err error) {
	f, path, base, err := s.createSpool()
	if err != nil {
		return "", "", err
	}
	_, err = f.Write(data)
	if err == nil && s.fsync == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", "", fmt.Errorf("maildir: writing spool file: %w", err)
	}
	return path, base, nil
}

// Close stops the goroutine of DeliverBytes once the deliveries handed to
// it are done, and releases the file system descriptor. The Store must not
// be used after.
func (s *Store) Close() error {
	s.batchMu.Lock()
	already := s.closed
	s.closed = true
	s.batchMu.Unlock()
	if already {
		return nil
	}
	s.batchWG.Wait()
	close(s.stop)
	if s.fsync != nil {
		return s.fsync.Close()
	}
	return nil
}
