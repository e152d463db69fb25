package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Body implements Queue.
func (s *Spool) Body(ctx context.Context, id string) (io.ReadCloser, error) {
	if err := s.check(false); err != nil {
		return nil, err
	}
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	if res := s.residentOf(id); res != nil {
		// Never changed, also once materialized.
		return memBody{bytes.NewReader(res.body), res.body}, nil
	}
	// An attached process reads the journal first (see journalView): a
	// message resident in the owner's memory is there.
	var jm journalMsg
	var inJournal bool
	if !s.owner {
		jm, inJournal = s.journalMessage(id)
	}
	f, err := os.Open(s.bodyPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		if inJournal {
			return memBody{bytes.NewReader(jm.body), jm.body}, nil
		}
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	return f, nil
}

// Get implements Queue.
func (s *Spool) Get(ctx context.Context, id string) (Message, error) {
	if err := s.check(false); err != nil {
		return Message{}, err
	}
	if !ValidID(id) {
		return Message{}, ErrNotFound
	}
	if !s.owner {
		// The journal first (see journalView): a message resident in
		// the owner's memory is there, and the files decide if both
		// have it.
		jm, inJournal := s.journalMessage(id)
		m, err := s.readState(id)
		if errors.Is(err, ErrNotFound) && inJournal {
			return jm.m, nil
		}
		return m, err
	}
	return s.current(id)
}

// List implements Queue. A state file that cannot be read is logged and
// skipped (Open sets it aside). The messages resident in the owner's memory
// are listed too: an attached process reads them from the journal.
func (s *Spool) List(ctx context.Context) ([]Message, error) {
	if err := s.check(false); err != nil {
		return nil, err
	}
	// Residents first: one materialized meanwhile is then in msg/ too,
	// and its files decide.
	var res []Message
	if s.owner {
		res = s.residents()
	} else {
		v, err := s.journalView()
		if err != nil {
			return nil, err
		}
		for _, jm := range v {
			res = append(res, jm.m)
		}
	}
	var out []Message
	ents, err := os.ReadDir(s.msgDir)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	for _, ent := range ents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		id, ext, _ := strings.Cut(ent.Name(), ".")
		if ext != "json" || !ValidID(id) {
			continue
		}
		m, err := s.readState(id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			s.log.Error("queue: message unreadable", "id", id, "err", err)
			continue
		}
		out = append(out, m)
	}
	seen := make(map[string]bool, len(out))
	for _, m := range out {
		seen[m.ID] = true
	}
	for _, m := range res {
		if !seen[m.ID] {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b Message) int {
		if c := a.Received.Compare(b.Received); c != 0 {
			return c
		}
		return compareStrings(a.ID, b.ID)
	})
	return out, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Flush implements Queue. An attached process leaves a hint for the owner.
func (s *Spool) Flush(ctx context.Context, id string) error {
	if err := s.check(false); err != nil {
		return err
	}
	if id != "" && !ValidID(id) {
		return ErrNotFound
	}
	if !s.owner {
		if id == "" {
			return s.mark("flush.all")
		}
		_, inJournal := s.journalMessage(id) // first: see journalView
		if _, err := os.Stat(s.statePath(id)); errors.Is(err, fs.ErrNotExist) && !inJournal {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return s.mark("flush." + id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if id == "" {
		for _, e := range s.idx {
			s.flush(e)
		}
	} else {
		e := s.idx[id]
		if e == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		s.flush(e)
	}
	s.signal()
	return nil
}

// flush makes e due at once. s.mu must be held.
func (s *Spool) flush(e *entry) {
	if !e.has {
		return
	}
	e.flush = true
	e.due = time.Time{}
	s.place(e)
}

// bounceReply is the LastReply of a recipient bounced with Bounce.
const bounceReply = "554 5.0.0 Returned to the sender by the postmaster"

// Bounce implements Queue.
func (s *Spool) Bounce(ctx context.Context, id string) error {
	if err := s.check(false); err != nil {
		return err
	}
	m, act, err := s.mutate(ctx, id, func(m *Message) (action, error) {
		act := keep
		for i := range m.Rcpts {
			r := &m.Rcpts[i]
			if r.State == Pending || r.State == Deferred {
				r.State = Failed
				r.NextAttempt = time.Time{}
				r.LastReply = bounceReply
				r.RemoteMTA = ""
				act = rewrite
			}
		}
		return act, nil
	})
	if err != nil {
		s.resync(id, err)
		return err
	}
	return s.changed(id, &m, act)
}

// Delete implements Queue.
func (s *Spool) Delete(ctx context.Context, id string) error {
	if err := s.check(false); err != nil {
		return err
	}
	m, act, err := s.mutate(ctx, id, func(*Message) (action, error) { return remove, nil })
	if err != nil {
		s.resync(id, err)
		return err
	}
	return s.changed(id, &m, act)
}

// changed tells the index (owner) or the owner (attached) of a change made
// by Bounce or Delete.
func (s *Spool) changed(id string, m *Message, act action) error {
	if !s.owner {
		if err := s.mark("reload." + id); err != nil {
			return fmt.Errorf("queue: %s changed, but the owner was not told: %w", id, err)
		}
		return nil
	}
	s.mu.Lock()
	s.note(id, m, act)
	s.mu.Unlock()
	s.signal()
	return nil
}

// resync brings the owner's index back in line with the disk after a
// change failed with err (it may have happened on disk all the same).
func (s *Spool) resync(id string, err error) {
	if !s.owner || !ValidID(id) {
		return
	}
	if errors.Is(err, ErrNotFound) {
		s.mu.Lock()
		s.drop(id)
		s.mu.Unlock()
		s.tombstone(id)
		return
	}
	s.reload(id)
}

// mark leaves a hint for the owner in notify/. Hints need no fsync: after
// a crash the owner reloads everything anyway.
func (s *Spool) mark(name string) error {
	f, err := os.OpenFile(filepath.Join(s.notifyDir, name), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return f.Close()
}

// maybeProcessMarkers runs processMarkers when notify/ may hold hints: its
// modification time changed since the last look, or a second has passed
// (time stamps are coarse, so a hint made in the same tick as the last
// look's removals may not change it). Lease calls it: one stat instead of
// reading the directory every time.
func (s *Spool) maybeProcessMarkers() {
	fi, err := os.Stat(s.notifyDir)
	now := time.Now()
	s.hintMu.Lock()
	due := err != nil || !fi.ModTime().Equal(s.hintMtime) || now.Sub(s.hintAt) >= time.Second
	s.hintMu.Unlock()
	if due {
		s.processMarkers()
	}
}

// processMarkers acts on the hints in notify/. Each hint is removed before
// the state it points to is read, and an attached process writes the state
// before the hint, so no change is missed.
func (s *Spool) processMarkers() {
	defer func() {
		// What the directory looks like once this look's removals
		// are done: a later hint changes it (or waits a second).
		fi, err := os.Stat(s.notifyDir)
		s.hintMu.Lock()
		if err == nil {
			s.hintMtime = fi.ModTime()
		}
		s.hintAt = time.Now()
		s.hintMu.Unlock()
	}()
	ents, err := os.ReadDir(s.notifyDir)
	if err != nil {
		s.log.Error("queue: reading hints", "err", err)
		return
	}
	for _, ent := range ents {
		name := ent.Name()
		if err := os.Remove(filepath.Join(s.notifyDir, name)); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				s.log.Error("queue: removing hint", "err", err)
			}
			continue
		}
		kind, id, _ := strings.Cut(name, ".")
		switch {
		case kind == "flush" && id == "all":
			_ = s.Flush(context.Background(), "")
		case kind == "flush" && ValidID(id):
			_ = s.Flush(context.Background(), id)
		case kind == "reload" && ValidID(id):
			s.reload(id)
		default:
			s.log.Warn("queue: unknown hint removed", "name", name)
		}
	}
}

// reload re-reads the state of message id into the index. A message that
// is gone (deleted by an attached process) is tombstoned.
func (s *Spool) reload(id string) {
	if res := s.residentOf(id); res != nil {
		// An attached process changes a message only once it has its
		// files: the hint comes from a materialization in progress
		// (which holds res.mu; wait for it), or it is stale.
		res.mu.Lock()
		gone := res.gone
		res.mu.Unlock()
		if !gone {
			return
		}
	}
	m, err := s.readState(id)
	if errors.Is(err, ErrNotFound) {
		s.tombstone(id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case errors.Is(err, ErrNotFound):
		s.drop(id)
	case err != nil:
		s.log.Error("queue: message unreadable", "id", id, "err", err)
	default:
		s.note(id, &m, keep)
	}
}
