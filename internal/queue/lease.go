package queue

import (
	"context"
	"errors"
	"slices"
	"time"
)

// Lease implements Queue. It first reads the hints left by attached
// processes, and voids expired leases.
func (s *Spool) Lease(ctx context.Context, max int) ([]*Lease, error) {
	if err := s.check(true); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, nil
	}
	s.maybeProcessMarkers()
	now := s.now()

	type pick struct {
		e     *entry
		l     *Lease
		flush bool
	}
	var picks []pick
	s.mu.Lock()
	for e := range s.leased {
		if !now.Before(e.lease.Expires) {
			s.log.Warn("queue: lease expired", "id", e.id)
			e.lease = nil
			delete(s.leased, e)
			s.place(e)
		}
	}
	for len(picks) < max && len(s.heap) > 0 && !s.heap[0].due.After(now) {
		e := s.heap[0]
		l := &Lease{id: e.id, Expires: now.Add(s.leaseTime)}
		e.lease = l
		s.leased[e] = struct{}{}
		s.place(e)
		picks = append(picks, pick{e, l, e.flush})
		e.flush = false
	}
	s.mu.Unlock()

	out := make([]*Lease, 0, len(picks))
	for _, p := range picks {
		// The index is a hint; the state file (or the resident
		// message) decides.
		m, err := s.current(p.e.id)
		s.mu.Lock()
		if s.idx[p.e.id] != p.e || p.e.lease != p.l {
			s.mu.Unlock() // removed meanwhile
			continue
		}
		if errors.Is(err, ErrNotFound) {
			s.drop(p.e.id) // deleted by another process
			s.mu.Unlock()
			s.tombstone(p.e.id)
			continue
		}
		if err != nil {
			// Perhaps passing (out of file descriptors): try later.
			s.log.Error("queue: message unreadable", "id", p.e.id, "err", err)
			p.e.lease = nil
			delete(s.leased, p.e)
			p.e.due = now.Add(time.Minute)
			s.place(p.e)
			s.mu.Unlock()
			continue
		}
		due := dueRcpts(&m, now, p.flush)
		if len(due) == 0 && len(unreported(&m)) == 0 {
			p.e.lease = nil // not due after all (changed by another process)
			delete(s.leased, p.e)
			s.note(p.e.id, &m, keep)
			s.mu.Unlock()
			continue
		}
		p.l.Message = m
		p.l.Due = due
		s.mu.Unlock()
		out = append(out, p.l)
	}
	return out, nil
}

// hold checks that l is the current lease of its message, or takes it
// again if it expired and nobody else leased the message since.
func (s *Spool) hold(l *Lease) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.done {
		return ErrLeaseLost
	}
	e := s.idx[l.id]
	switch {
	case e == nil:
		return ErrNotFound
	case e.lease == l:
		return nil
	case e.lease == nil:
		e.lease = l
		s.leased[e] = struct{}{}
		s.place(e)
		return nil
	}
	return ErrLeaseLost
}

// Update implements Queue. It may be called several times on one lease,
// also concurrently (once per destination, say).
func (s *Spool) Update(ctx context.Context, l *Lease, results []Result) ([]Recipient, error) {
	if err := s.check(true); err != nil {
		return nil, err
	}
	if err := s.hold(l); err != nil {
		return nil, err
	}
	now := s.now()
	m, act, err := s.mutate(ctx, l.id, func(m *Message) (action, error) {
		if err := applyResults(m, results, now, s.sch); err != nil {
			return keep, err
		}
		switch {
		case finished(m):
			return remove, nil
		case len(results) == 0:
			return keep, nil
		}
		return rewrite, nil
	})
	if err != nil {
		s.resync(l.id, err)
		return nil, err
	}
	failed := unreported(&m)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.note(l.id, &m, act)
	if e := s.idx[l.id]; e != nil && e.lease == l {
		l.Expires = now.Add(s.leaseTime)
	}
	for _, r := range failed {
		if !slices.Contains(l.bounce, r.Addr) {
			l.bounce = append(l.bounce, r.Addr)
		}
	}
	return failed, nil
}

// Complete implements Queue. If marking the failures fails, the lease is
// kept and Complete may be called again.
func (s *Spool) Complete(ctx context.Context, l *Lease) error {
	if err := s.check(true); err != nil {
		return err
	}
	s.mu.Lock()
	done, bounce := l.done, slices.Clone(l.bounce)
	s.mu.Unlock()
	if done {
		return nil
	}
	if len(bounce) > 0 {
		m, act, err := s.mutate(ctx, l.id, func(m *Message) (action, error) {
			changed := false
			for i := range m.Rcpts {
				r := &m.Rcpts[i]
				if r.State == Failed && !r.Reported && slices.Contains(bounce, r.Addr) {
					r.Reported = true
					changed = true
				}
			}
			switch {
			case finished(m):
				return remove, nil
			case changed:
				return rewrite, nil
			}
			return keep, nil
		})
		switch {
		case errors.Is(err, ErrNotFound):
			act = remove
		case err != nil:
			s.resync(l.id, err)
			return err
		}
		s.mu.Lock()
		s.note(l.id, &m, act)
		s.mu.Unlock()
	}
	s.release(l)
	return nil
}

// Release implements Queue.
func (s *Spool) Release(ctx context.Context, l *Lease) error {
	s.release(l)
	return nil
}

func (s *Spool) release(l *Lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.done {
		return
	}
	l.done = true
	if e := s.idx[l.id]; e != nil && e.lease == l {
		e.lease = nil
		delete(s.leased, e)
		s.place(e)
		if e.has {
			s.signal()
		}
	}
}
