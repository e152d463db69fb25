package queue

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// action is what mutate does with the state after its function ran.
type action uint8

const (
	keep    action = iota // nothing changed
	rewrite               // write the new state
	remove                // remove the message
)

// awaitFilesMax is how long an attached process waits for the owner to
// give a resident message its files before it can change it.
const awaitFilesMax = 15 * time.Second

// mutate changes message id under its lock: it re-reads the state file,
// calls fn, and writes or removes what fn says, durably. It returns the
// state after fn.
func (s *Spool) mutate(ctx context.Context, id string, fn func(m *Message) (action, error)) (Message, action, error) {
	if !ValidID(id) {
		return Message{}, keep, ErrNotFound
	}
	if res := s.residentOf(id); res != nil {
		m, act, ok, err := s.mutateResident(res, fn)
		if ok {
			return m, act, err
		}
		// Materialized meanwhile: the files decide.
	}
	if !s.owner {
		// A message resident in the owner's memory: wait, before taking
		// any lock, for a checkpoint to give it its files.
		if _, err := os.Stat(s.bodyPath(id)); errors.Is(err, fs.ErrNotExist) {
			if err := s.awaitFiles(ctx, id, s.awaitMax); err != nil {
				return Message{}, keep, err
			}
		}
		gl, err := os.OpenFile(s.lockPath(), os.O_RDWR, 0)
		if err != nil {
			return Message{}, keep, fmt.Errorf("queue: %w", err)
		}
		defer gl.Close() // releases the lock
		if err := lock(ctx, gl, false); err != nil {
			return Message{}, keep, fmt.Errorf("queue: %w", err)
		}
	}
	bf, err := os.Open(s.bodyPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return Message{}, keep, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Message{}, keep, fmt.Errorf("queue: %w", err)
	}
	defer bf.Close() // releases the lock
	if err := lock(ctx, bf, true); err != nil {
		return Message{}, keep, fmt.Errorf("queue: %w", err)
	}
	m, err := s.readState(id)
	if err != nil {
		return Message{}, keep, err
	}
	act, err := fn(&m)
	if err != nil {
		return Message{}, keep, err
	}
	switch act {
	case rewrite:
		err = s.writeState(&m)
	case remove:
		err = s.removeFiles(id)
	}
	if err != nil {
		return Message{}, keep, err
	}
	return m, act, nil
}

// current returns the state of message id: that of the resident message,
// or else its state file.
func (s *Spool) current(id string) (Message, error) {
	if res := s.residentOf(id); res != nil {
		if m, ok := res.snapshot(); ok {
			return m, nil
		}
	}
	return s.readState(id)
}

// readState reads and decodes the state file of message id.
func (s *Spool) readState(id string) (Message, error) {
	data, err := os.ReadFile(s.statePath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return Message{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Message{}, fmt.Errorf("queue: %w", err)
	}
	m, err := decodeState(data)
	if err != nil {
		return Message{}, err
	}
	if m.ID != id {
		return Message{}, fmt.Errorf("queue: state file of %s names %s", id, m.ID)
	}
	return m, nil
}

// writeState replaces the state file of m durably.
func (s *Spool) writeState(m *Message) error {
	data, err := encodeState(m)
	if err != nil {
		return err
	}
	tmp := s.tmpPath(m.ID, "json")
	if err := writeFileSync(tmp, data); err != nil {
		return fmt.Errorf("queue: writing state file: %w", err)
	}
	if err := os.Rename(tmp, s.statePath(m.ID)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("queue: %w", err)
	}
	return s.syncMsgDir()
}

// removeFiles removes message id durably: the state file first (the
// message no longer exists), then the body. The removal is made durable by
// a tombstone in the journal if the message's Put record may still be in
// it (Open's replay then finishes the removal), else by an fsync of msg/.
func (s *Spool) removeFiles(id string) error {
	if err := os.Remove(s.statePath(id)); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	if err := os.Remove(s.bodyPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("queue: %w", err)
	}
	if s.jnl != nil {
		if journaled, err := s.jnl.tombstoneSync(id); journaled {
			return err
		}
	}
	return s.syncMsgDir()
}

// tombstone tells the owner's journal that message id was removed (see
// journal.tombstone). An attached process has no journal: the owner
// tombstones its removals when it reads its hints.
func (s *Spool) tombstone(id string) {
	if s.jnl != nil {
		s.jnl.tombstone(id)
	}
}
