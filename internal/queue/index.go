package queue

import (
	"container/heap"
	"time"
)

// entry is the in-memory index record of one queued message: when it is
// next due and who leases it. The message itself is on disk, or, while it
// is resident, in res.
type entry struct {
	id    string
	res   *resident // the message while it has no files, else nil
	due   time.Time // when the message next has work
	has   bool      // whether it has work at all
	flush bool      // Flush was called: all Pending/Deferred recipients due
	lease *Lease    // the current lease, or nil
	hi    int       // index in dueHeap, -1 if not in it
}

// dueHeap orders the entries that are not leased and have work by due time
// (then ID), so that Lease costs O(log n) per message leased, not O(n).
type dueHeap []*entry

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].id < h[j].id
}
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hi = i
	h[j].hi = j
}
func (h *dueHeap) Push(x any) {
	e := x.(*entry)
	e.hi = len(*h)
	*h = append(*h, e)
}
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.hi = -1
	return e
}

// place puts e in the heap, moves it, or takes it out, as its state asks.
// s.mu must be held.
func (s *Spool) place(e *entry) {
	want := e.lease == nil && e.has
	switch {
	case want && e.hi < 0:
		heap.Push(&s.heap, e)
	case want:
		heap.Fix(&s.heap, e.hi)
	case e.hi >= 0:
		heap.Remove(&s.heap, e.hi)
	}
}

// note records in the index the state m of message id just read or written
// (act says whether it was removed). s.mu must be held.
func (s *Spool) note(id string, m *Message, act action) {
	if act == remove {
		s.drop(id)
		return
	}
	due, ok := dueAt(m)
	if !ok {
		s.drop(id)
		return
	}
	e := s.idx[id]
	if e == nil {
		e = &entry{id: id, hi: -1}
		s.idx[id] = e
	}
	e.due, e.has = due, true
	if e.flush {
		e.due = time.Time{} // flushed while leased: due when released
	}
	s.place(e)
}

// drop removes message id from the index; a lease on it is lost. s.mu must
// be held.
func (s *Spool) drop(id string) {
	e := s.idx[id]
	if e == nil {
		return
	}
	e.has = false
	e.lease = nil
	s.place(e)
	delete(s.leased, e)
	delete(s.idx, id)
}
