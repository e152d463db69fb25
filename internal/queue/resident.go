package queue

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
)

// resident is a message that Put made durable in the journal and that has
// no files in msg/ yet: its state and body live in memory, in the index
// entry, until it is removed (delivered) or a checkpoint writes its files
// (materialize). Most messages are delivered long before the next
// checkpoint, and then never touch msg/: no file is created, renamed,
// fsynced or unlinked for them (see Spool, "Resident messages").
type resident struct {
	body []byte // never changed

	mu   sync.Mutex
	msg  Message // the current state
	gone bool    // removed, or materialized: the files decide now
}

// cloneMessage returns a copy of m that shares nothing that changes: the
// recipients are copied (Attrs are never changed after Put).
func cloneMessage(m *Message) Message {
	c := *m
	c.Rcpts = slices.Clone(m.Rcpts)
	return c
}

// residentOf returns the resident message id, or nil if it has files (or
// is not in the index).
func (s *Spool) residentOf(id string) *resident {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.idx[id]; e != nil {
		return e.res
	}
	return nil
}

// mutateResident is mutate for a resident message: fn changes its state in
// memory, made durable by a journal record first (group-committed with the
// Puts): a state record for a rewrite, a tombstone for a removal. ok is
// false if the message is no longer resident (it was materialized
// meanwhile): the files decide then.
func (s *Spool) mutateResident(res *resident, fn func(m *Message) (action, error)) (m Message, act action, ok bool, err error) {
	res.mu.Lock()
	defer res.mu.Unlock()
	if res.gone {
		return Message{}, keep, false, nil
	}
	m = cloneMessage(&res.msg)
	act, err = fn(&m)
	if err != nil {
		return Message{}, keep, true, err
	}
	switch act {
	case rewrite:
		state, err := encodeState(&m)
		if err == nil {
			err = s.jnl.stateSync(m.ID, state)
		}
		if err != nil {
			return Message{}, keep, true, fmt.Errorf("queue: writing state: %w", err)
		}
		res.msg = cloneMessage(&m)
	case remove:
		journaled, err := s.jnl.tombstoneSync(m.ID)
		if err == nil && !journaled {
			err = ErrClosed // the journal is closed: not durable
		}
		if err != nil {
			return Message{}, keep, true, fmt.Errorf("queue: removing message: %w", err)
		}
		res.gone = true
	}
	return m, act, true, nil
}

// snapshot returns a copy of the state of a resident message, or ok false
// if it is no longer resident.
func (res *resident) snapshot() (m Message, ok bool) {
	res.mu.Lock()
	defer res.mu.Unlock()
	if res.gone {
		return Message{}, false
	}
	return cloneMessage(&res.msg), true
}

// residents returns the state of every resident message (for List).
func (s *Spool) residents() []Message {
	s.mu.Lock()
	var rs []*resident
	for _, e := range s.idx {
		if e.res != nil {
			rs = append(rs, e.res)
		}
	}
	s.mu.Unlock()
	out := make([]Message, 0, len(rs))
	for _, res := range rs {
		if m, ok := res.snapshot(); ok {
			out = append(out, m)
		}
	}
	return out
}

// materialize writes the files of the resident messages among ids (those
// put into the segments a checkpoint is about to delete) without fsync:
// the body to msg/ID.body, the current state to tmp/ and renamed to
// msg/ID.json. From then on the files decide; the checkpoint's sync makes
// them durable before the segments go. A message that fails is left
// resident, its files removed, and the error returned: the checkpoint
// keeps the segments and tries again next time.
func (s *Spool) materialize(ids []string) error {
	var errs []error
	for _, id := range ids {
		res := s.residentOf(id)
		if res == nil {
			continue
		}
		if err := s.materializeOne(id, res); err != nil {
			errs = append(errs, err)
			if len(errs) >= 10 {
				break // the rest would fail the same way
			}
		}
	}
	return errors.Join(errs...)
}

func (s *Spool) materializeOne(id string, res *resident) error {
	res.mu.Lock()
	defer res.mu.Unlock()
	if res.gone {
		return nil
	}
	state, err := encodeState(&res.msg)
	if err != nil {
		return err
	}
	// Through tmp/ and a rename, as the replay writes them: a file left
	// by an attempt that failed halfway is replaced.
	if err := s.replaceFile(id, "body", res.body); err != nil {
		return err
	}
	if err := s.replaceFile(id, "json", state); err != nil {
		os.Remove(s.bodyPath(id))
		return err
	}
	res.gone = true
	s.mu.Lock()
	if e := s.idx[id]; e != nil && e.res == res {
		e.res = nil
	}
	s.mu.Unlock()
	return nil
}

// memBody is what Body returns for a resident message: a reader of the
// body in memory whose Bytes method gives the whole body without a copy
// (the caller must not change it).
type memBody struct {
	*bytes.Reader
	b []byte
}

func (m memBody) Close() error  { return nil }
func (m memBody) Bytes() []byte { return m.b }

// newResident makes the resident form of message m, just put (Put's own
// copy, which it no longer changes), whose body is body (copied: the
// caller's buffer is reused).
func newResident(m *Message, body []byte) *resident {
	return &resident{msg: *m, body: slices.Clone(body)}
}
